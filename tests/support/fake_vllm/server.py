"""FakeVllm: an OpenAI server that stands in for vLLM's engine inside the test image.

It is the only double in the Docker tests: the container, its labels, mounts, ports, logs and exit
codes are real; what answers inside is this file instead of vLLM (which needs a GPU and gigabytes).
It is installed in the image as ``/usr/local/bin/vllm`` behind the same ``ENTRYPOINT ["vllm",
"serve"]`` as ``vllm/vllm-openai``, so it receives exactly the arguments ocrd gives a real one.
Standard library only: the image holds a bare Python and nothing else.

What it does, like vLLM:

* parses ``vllm serve`` arguments (the model positionally or as ``--model``, ``--served-model-name``,
  ``--host``, ``--port``, ``--gpu-memory-utilization``, ``--max-model-len``, ...), keeping unknown
  ones;
* with ``HF_HUB_OFFLINE=1`` refuses (exit 1) a model that is not in the Hugging Face cache, as
  vLLM's loader does, and reads its ``config.json`` from there;
* binds its port first, "loads" (log lines), then serves ``/health``, ``/v1/models`` and
  ``/v1/chat/completions`` (streaming and not, OpenAI's shapes); uvicorn-style access log lines.

What tests can make it do:

* ``FAKE_VLLM_LOAD_SECONDS`` (default 0.3): time spent "loading", requests wait meanwhile;
* ``FAKE_VLLM_EXIT_CODE=N``: fail the load and exit with N after a last log line;
* ``FAKE_VLLM_NEVER_READY=1``: keep loading forever;
* a prompt containing ``FAKE_VLLM_CRASH``: die (exit 17) in the middle of the answer.

``GET /debug`` shows what it sees: argv, parsed arguments, the environment (HF_*, VLLM_*, CUDA_*,
NVIDIA_*), its uid, the Hugging Face cache it found and the model's config from it, /dev/shm's size
and its IPC namespace. Answers echo the last user text, so tests can tell a request went through.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "0.0.0+fake"
CRASH_WORD = "FAKE_VLLM_CRASH"
CRASH_EXIT_CODE = 17
_ENV_PREFIXES = ("HF_", "VLLM_", "CUDA_", "NVIDIA_", "FAKE_VLLM_", "TRANSFORMERS_")


def log(message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"INFO {stamp} [fake_vllm] {message}", flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="vllm serve")
    parser.add_argument("model_tag", nargs="?")
    parser.add_argument("--model")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--limit-mm-per-prompt")
    parser.add_argument("--chat-template")
    parser.add_argument("--revision")
    args, unknown = parser.parse_known_args(argv)
    args.model = args.model_tag or args.model
    if not args.model:
        parser.error("a model is required (positionally or with --model)")
    args.served_model_name = args.served_model_name or [args.model]
    return args, unknown


def hub_cache() -> str:
    """Where huggingface_hub would look, from the same variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def cached_config(model: str, revision: str | None) -> dict[str, Any] | None:
    """The model's config.json from the cache (by repo id), or None if it is not cached."""
    repo = os.path.join(hub_cache(), "models--" + model.replace("/", "--"))
    try:
        with open(os.path.join(repo, "refs", "main"), encoding="utf-8") as ref:
            main = ref.read().strip()
        snapshot = os.path.join(repo, "snapshots", revision or main)
        with open(os.path.join(snapshot, "config.json"), encoding="utf-8") as config:
            return json.load(config)
    except (OSError, ValueError):
        return None


class FakeEngine:
    def __init__(self, args: argparse.Namespace, unknown: list[str], argv: list[str]):
        self.args = args
        self.unknown = unknown
        self.argv = argv
        self.names = list(args.served_model_name)
        self.model_config = cached_config(args.model, args.revision)
        self.created = int(time.time())
        # vLLM decodes with a request's response_format json_schema (guided decoding); tests turn
        # it off to stand for a server that ignores the field.
        self.guided = True

    def debug(self) -> dict[str, Any]:
        hub = hub_cache()
        try:
            shm = os.statvfs("/dev/shm")
            shm_bytes = shm.f_blocks * shm.f_frsize
        except OSError:
            shm_bytes = 0
        try:
            ipc_namespace = os.readlink("/proc/self/ns/ipc")
        except OSError:
            ipc_namespace = ""
        return {
            "argv": self.argv,
            "args": {k: v for k, v in vars(self.args).items() if k != "model_tag"},
            "unknown_args": self.unknown,
            "env": {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)},
            "uid": os.getuid(),
            "home": os.path.expanduser("~"),
            "hub_cache": hub,
            "hub_cache_entries": sorted(os.listdir(hub)) if os.path.isdir(hub) else None,
            "model_config": self.model_config,
            "shm_bytes": shm_bytes,
            "ipc_namespace": ipc_namespace,
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": self.created, "owned_by": "vllm",
             "root": self.args.model, "parent": None, "max_model_len": self.args.max_model_len}
            for name in self.names
        ]}

    def answer(self, body: dict[str, Any]) -> tuple[list[str], str, int]:
        """The words of the answer, the finish reason and the prompt's "token" count."""
        text, images, prompt_words = "", 0, 0
        for message in body.get("messages") or []:
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
            for part in parts:
                if part.get("type") == "text":
                    prompt_words += len(str(part.get("text", "")).split())
                    if message.get("role") == "user":
                        text = str(part.get("text", ""))
                elif part.get("type") == "image_url":
                    images += 1
        schema = _json_schema(body) if self.guided else None
        if schema is not None:  # what guided decoding guarantees: an answer that follows the schema
            return [json.dumps(_instance(schema, text.split()), separators=(",", ":"))], "stop", prompt_words
        words = f"fake-vllm {body.get('model')} read: {text}".split()
        if images:
            words.append(f"[{images} image(s)]")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and 0 < limit < len(words):
            return words[:limit], "length", prompt_words
        return words, "stop", prompt_words


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _instance(schema: dict[str, Any], words: list[str]) -> Any:
    """A value that follows ``schema`` (the common keywords), made of the prompt's words."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _instance(sub, words) for name, sub in properties.items()}
    if kind == "array":
        return [_instance(schema.get("items", {"type": "string"}), words)] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return max(schema.get("minimum", 0), len(words))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return words[0] if words else "fake"


def crash(reason: str) -> None:
    print(f"ERROR {time.strftime('%m-%d %H:%M:%S')} [fake_vllm] EngineCore died: {reason}",
          file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT_CODE)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-vllm"
    engine: FakeEngine  # set on the subclass made in serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access lines are written by log_request, like uvicorn's

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        host, port = self.client_address[:2]
        print(f'INFO:     {host}:{port} - "{self.requestline}" {code}', flush=True)

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_error_json(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        self.send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": status}})

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/v1/models":
            self.send_json(200, self.engine.models())
        elif self.path == "/debug":
            self.send_json(200, self.engine.debug())
        else:
            self.send_error_json(404, f"no route {self.path}", "NotFoundError")

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self.send_error_json(404, f"no route {self.path}", "NotFoundError")
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except ValueError as exc:
            self.send_error_json(400, f"invalid JSON: {exc}", "BadRequestError")
            return
        if body.get("model") not in self.engine.names:
            self.send_error_json(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
            return
        words, finish, prompt_tokens = self.engine.answer(body)
        if body.get("stream"):
            self.stream(body, words, finish, prompt_tokens)
            return
        if CRASH_WORD in " ".join(words):
            crash(f"{CRASH_WORD} in the prompt")
        self.send_json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                      "total_tokens": prompt_tokens + len(words)},
        })

    def stream(self, body: dict[str, Any], words: list[str], finish: str, prompt_tokens: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
            event = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": body["model"], "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish_reason}], **extra}
            self.write_chunk(f"data: {json.dumps(event)}\n\n")

        chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(words):
            chunk({"content": word if i == 0 else " " + word})
            if CRASH_WORD in word:
                crash(f"{CRASH_WORD} in the prompt, mid-stream")
        chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                     "total_tokens": prompt_tokens + len(words)}
            event = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": body["model"], "choices": [], "usage": usage}
            self.write_chunk(f"data: {json.dumps(event)}\n\n")
        self.write_chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def write_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def load(engine: FakeEngine) -> None:
    """The "model load": the checks vLLM would fail on, log lines, the configured delays."""
    args = engine.args
    log(f"vLLM API server version {VERSION}")
    log(f"args: model={args.model!r} served_model_name={engine.names} "
        f"gpu_memory_utilization={args.gpu_memory_utilization} max_model_len={args.max_model_len}")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and engine.model_config is None:
        print(f"ERROR [fake_vllm] OSError: {args.model} is not in the cache at {hub_cache()} and "
              f"HF_HUB_OFFLINE=1 forbids downloading it", file=sys.stderr, flush=True)
        sys.exit(1)
    delay = float(os.environ.get("FAKE_VLLM_LOAD_SECONDS", "0.3"))
    log(f"Loading weights of {args.model} (fake, {delay}s)")
    time.sleep(delay)
    if os.environ.get("FAKE_VLLM_EXIT_CODE"):
        code = int(os.environ["FAKE_VLLM_EXIT_CODE"])
        print(f"ERROR [fake_vllm] RuntimeError: fake engine failed to load {args.model} "
              f"(FAKE_VLLM_EXIT_CODE={code})", file=sys.stderr, flush=True)
        sys.exit(code)
    while os.environ.get("FAKE_VLLM_NEVER_READY") == "1":
        log("still loading (FAKE_VLLM_NEVER_READY=1)")
        time.sleep(1.0)


def serve(argv: list[str]) -> None:
    if not argv or argv[0] != "serve":
        sys.exit("usage: vllm serve MODEL [options]  (this is ocrd's FakeVllm; only `serve` exists)")
    args, unknown = parse_args(argv[1:])
    engine = FakeEngine(args, unknown, argv)
    handler = type("BoundHandler", (Handler,), {"engine": engine})
    # Bind before loading, as vLLM does: clients that connect early wait instead of being refused.
    server = ThreadingHTTPServer((args.host, args.port), handler, bind_and_activate=False)
    server.daemon_threads = True
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.server_bind()
    server.server_activate()
    load(engine)
    log(f"Starting vLLM API server 0 on http://{args.host}:{args.port}")
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()


def self_check() -> None:
    """Serves on a free loopback port and calls every endpoint once (stream included), so the
    image builder can list every module a request imports, lazy ones too. Raw sockets: an HTTP
    client library would pull modules (ssl, email) into the image that the server never needs."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    os.environ["FAKE_VLLM_LOAD_SECONDS"] = "0"
    argv = ["serve", "org/check", "--port", str(port), "--host", "127.0.0.1", "--unknown-flag", "x"]
    threading.Thread(target=serve, args=(argv,), daemon=True).start()

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else b""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: check\r\nConnection: close\r\n"
                         f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            return b"".join(iter(lambda: conn.recv(65536), b""))

    for _ in range(100):
        try:
            call("GET", "/health")
            break
        except OSError:
            time.sleep(0.05)
    for path in ("/v1/models", "/debug", "/nowhere"):
        call("GET", path)
    for stream in (False, True):
        call("POST", "/v1/chat/completions", {
            "model": "org/check", "stream": stream, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        self_check()
        sys.exit(0)
    serve(sys.argv[1:])
