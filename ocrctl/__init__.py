"""``ocrctl``, the command-line client of ocrd's control plane."""

import os

# gRPC's C core writes handshake failures to stderr by itself ("I1127 ... Handshake failed ...");
# ocrctl explains every failure in one line of its own, so the core stays quiet unless the user
# sets GRPC_VERBOSITY to debug a connection. Set here, before any module imports grpc.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
