"""What ``ocrd gen-certs`` makes by default, apart from ``ocrd.cli.certs``: the argument parser
of every ``ocrd`` command (``ocrd serve`` among them) needs these, and not cryptography, whose
import was ~40 ms of the daemon's start-up."""

ALWAYS_NAMED = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 825  # the longest validity common TLS clients accept for a leaf certificate
CA_DAYS = 3650
DEFAULT_CLIENT_NAME = "ocrctl"
