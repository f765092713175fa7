"""FakeApiServer: a stand-in for vLLM's ``api_server`` process, for the process launcher's tests.

``install_as_vllm(folder)`` writes a package ``vllm.entrypoints.openai.api_server`` under
``folder`` that runs this file, so ``<python> -m vllm.entrypoints.openai.api_server --model M
--served-model-name N --host H --port P ...`` (what ``VllmProcessRunner`` runs, through the
parent-death bootstrap) starts it with ``folder`` on ``PYTHONPATH``. Standard library only.

Like vLLM's server it logs on stdout and stderr, binds its port, "loads", then serves ``/health``
and ``/v1/models`` (the served name), with uvicorn-style access lines. What tests make it do,
through its environment:

* ``FAKE_SERVER_EXIT_CODE=N``: log why, then exit with N before it is ready;
* ``FAKE_SERVER_HELPER=1``: start a helper in its process group (vLLM's engine core), which keeps
  the output pipe open and lives until it is signalled;
* ``FAKE_SERVER_IGNORE_SIGTERM=1``: the server and its helper ignore SIGTERM (else the server logs
  ``shutting down`` and exits 0 on it);
* ``FAKE_SERVER_LONG_LINE=N``: log one line of N characters while loading.

The helper's pid is in the log (``helper pid N``), so tests can follow it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODULE = "vllm.entrypoints.openai.api_server"
HELPER = "import signal, sys, time\n" \
         "if sys.argv[1] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
         "print('helper: engine core running', flush=True)\n" \
         "while True: time.sleep(60)\n"


def install_as_vllm(folder: Path) -> Path:
    """``folder`` with a package ``vllm`` whose ``entrypoints.openai.api_server`` runs this file."""
    package = folder / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True, exist_ok=True)
    for level in (folder / "vllm", folder / "vllm" / "entrypoints", package):
        (level / "__init__.py").write_text("")
    (package / "api_server.py").write_text(
        f"import runpy\nrunpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')\n")
    return folder


def say(message: str, *, stream: Any = None) -> None:
    print(f"INFO {time.strftime('%H:%M:%S')} [fake_api_server] {message}", file=stream or sys.stdout, flush=True)


class Handler(BaseHTTPRequestHandler):
    served_name = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        print(f'INFO:     {self.client_address[0]}:{self.client_address[1]} - "{self.requestline}" {code} OK',
              flush=True)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply(200, {})
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": self.served_name, "object": "model"}]})
        else:
            self.reply(404, {"error": {"message": "not found"}})

    def reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args(argv)
    ignore_term = os.environ.get("FAKE_SERVER_IGNORE_SIGTERM") == "1"
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: (say("shutting down"), os._exit(0)))
    say(f"non-default args: model={args.model!r}")
    say("loading the model", stream=sys.stderr)
    if os.environ.get("FAKE_SERVER_HELPER") == "1":
        helper = subprocess.Popen([sys.executable, "-c", HELPER, "1" if ignore_term else "0"])
        say(f"helper pid {helper.pid}")
    if os.environ.get("FAKE_SERVER_LONG_LINE"):
        say("x" * int(os.environ["FAKE_SERVER_LONG_LINE"]))
    if os.environ.get("FAKE_SERVER_EXIT_CODE"):
        say("error: the model does not fit", stream=sys.stderr)
        sys.exit(int(os.environ["FAKE_SERVER_EXIT_CODE"]))
    Handler.served_name = args.served_model_name or args.model
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    say("Application startup complete.")
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
