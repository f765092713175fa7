"""The container's HEALTHCHECK: exit 0 when ocrd's ``GET /health`` answers 200, else 1.

The address comes from ocrd's own settings (the mounted ``/etc/ocrd/ocrd.toml`` or
``$OCRD_CONFIG``, then the ``OCRD_*`` variables), read the way ``ocrd serve`` reads them, so a port
changed in the file is the port checked. A wildcard bind address is checked on loopback. /health
needs no API key, and answers 503 while ocrd stops: that counts as unhealthy. Standard library and
ocrd only (the image has no curl); about 0.3 s of CPU per check.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from ocrd.config.loading import load_settings

TIMEOUT_S = 5.0


def health_url() -> str:
    http = load_settings().http
    host = http.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:  # an IPv6 literal goes in brackets in a URL
        host = f"[{host}]"
    if http.port == 0:
        raise SystemExit("healthcheck: http.port is 0 (any free port): set a fixed port to check")
    return f"http://{host}:{http.port}/health"


def main() -> int:
    url = health_url()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
