"""A runner process: loads one model and serves it over the OpenAI protocol on a Unix socket.

    python -m ocrd.worker --model-id ID --engine builtin --socket PATH --options JSON
    python -m ocrd.worker --warm --engine transformers --socket-dir DIR

The second form is a warm runner (``ocrd.worker.warm``): the engine's imports done, it waits for
the model on stdin and then serves it as the first form would.

stdout is the channel to the daemon and carries only JSON lines, in this order: any number of
``{"event": "progress", "stage", "progress", "message"}``, then either
``{"event": "ready", "pid", "memory_bytes"}`` (printed once the socket accepts connections) or
``{"event": "error", "message"}``. Exit status: 0 after SIGTERM/SIGINT (in-flight requests are
finished first), 1 when loading or serving fails, 2 for usage errors (bad arguments, unknown
engine, backend or options). Logs go to stderr.

The runner dies with its parent (``PR_SET_PDEATHSIG``), so a SIGKILLed daemon leaves no orphan
runners behind. The daemon may set ``OCRD_PARENT_PID`` to its pid for an exact check that it was
not already gone before this process could ask for that.
"""

from __future__ import annotations

import os

_PARENT_AT_START = os.getppid()  # first thing: the later we look, the likelier a missed death

import argparse
import asyncio
import ctypes
import json
import logging
import signal
import socket
import stat
import sys
from typing import Any

log = logging.getLogger("ocrd.worker")

PR_SET_PDEATHSIG = 1


class UsageError(Exception):
    """Bad command line: the runner exits with status 2."""


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived while loading: give up the load and exit 0."""


class EventOut:
    """The JSON-lines channel on the real stdout; fd 1 itself is pointed at stderr.

    Libraries that print (or native code that writes to fd 1) would otherwise corrupt the
    protocol, so the protocol gets a private duplicate of stdout and everything else goes to stderr.
    """

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        sys.stdout.flush()
        os.dup2(2, 1)

    def emit(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
        self._out.flush()

    def progress(self, stage: str, progress: float, message: str) -> None:
        log.info("%s (%s)", stage, message)
        self.emit("progress", stage=stage, progress=float(progress), message=message)

    def error(self, message: str) -> None:
        log.error("%s", message)
        self.emit("error", message=" ".join(message.split()))  # one line, always


class Signals:
    """SIGTERM/SIGINT: abort a load, or ask the HTTP server for its graceful shutdown."""

    def __init__(self) -> None:
        self.requested = False
        self.loading = True
        self.server: Any = None  # uvicorn.Server once serving

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True
        elif self.loading:
            raise StopRequested(signal.Signals(signum).name)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we report an event
        raise UsageError(message)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = _ArgumentParser(prog="python -m ocrd.worker", description="ocrd runner process")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--socket", required=True, help="Unix socket path to serve on")
    parser.add_argument("--options", default="{}", help="engine options as a JSON object")
    args = parser.parse_args(argv)
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--options is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise UsageError("--options must be a JSON object")
    return args, options


def disable_telemetry() -> None:
    """Keeps libraries from phoning home or leaving files outside ocrd's directories.

    onnxruntime's Linux wheel (1.32 here) starts a telemetry client as soon as it is imported: a
    device id and an event queue (OS, CPU, memory, container, process name) in
    ``Microsoft/DeveloperTools/.onnxruntime/`` under ``$XDG_CACHE_HOME`` (``~/.cache``), uploaded
    later. ``onnxruntime.disable_telemetry_events()`` comes too late (the client exists by the
    time Python can call it, and its process-info event is still sent); only
    ``ORT_DISABLE_TELEMETRY`` in the environment when the library loads keeps it from starting.
    Set here, in the runner itself, so every engine and every way of starting a runner gets it.
    ``DO_NOT_TRACK`` is the common switch others honour (huggingface_hub's telemetry among them),
    as the vLLM runners already set it.
    """
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"


def die_with_parent() -> None:
    """Asks Linux to SIGTERM this process when its parent dies; exits if it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:  # not Linux
        log.warning("cannot tie this runner's life to its parent: %s", exc)
    expected = int(os.environ.get("OCRD_PARENT_PID") or _PARENT_AT_START)
    if os.getppid() != expected:
        log.error("parent process %d is gone before start-up finished; exiting", expected)
        raise SystemExit(1)


def bind_socket(path: str) -> socket.socket:
    """A Unix socket bound at ``path``, mode 0600 (not listening yet)."""
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no window in which the socket is open to others
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:  # nobody listens: a leftover of a runner that died
            os.unlink(path)
            return
    raise OSError(f"another process is already serving on {path}")


def memory_bytes() -> int:
    """Resident set size of this process now."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def serve(engine: Any, sock: socket.socket, out: EventOut, signals: Signals) -> int:
    import uvicorn

    from ocrd.worker.server import create_app, quiet_http_protocol

    # log_config=None: uvicorn logs through our root handler (stderr) instead of its own set-up.
    # No graceful-shutdown timeout: on SIGTERM the request in flight is always finished. The app
    # writes the access lines itself, once each response is sent.
    app = create_app(engine)
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=None,
                            http=quiet_http_protocol())
    server = uvicorn.Server(config)
    signals.server = server
    if signals.requested:
        return 0
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            if signals.requested:
                return 0
            exc = task.exception()
            out.error(f"the HTTP server did not start: {exc or 'unknown reason (see the log)'}")
            return 1
        await asyncio.sleep(0.01)
    # GPU memory is invisible in the RSS: an engine that holds some reports it itself.
    out.emit("ready", pid=os.getpid(), memory_bytes=engine.memory_bytes() or memory_bytes())
    await task
    return 0


def run(argv: list[str] | None, out: EventOut) -> int:
    from ocrd.worker.engines import EngineOptionsError, create_engine

    try:
        args, options = parse_args(argv)
        engine = create_engine(args.engine, args.model_id, options)
    except (UsageError, EngineOptionsError) as exc:
        out.error(str(exc))
        return 2
    signals = Signals()
    signals.install()
    try:
        sock = bind_socket(args.socket)
    except OSError as exc:
        out.error(f"cannot serve on socket {args.socket}: {exc.strerror or exc}")
        return 1
    try:
        try:
            engine.load(out.progress)
        except Exception as exc:
            return _load_failed(exc, args.model_id, out)
        signals.loading = False
        return asyncio.run(serve(engine, sock, out, signals))
    finally:  # whatever happened, leave no socket behind that nobody serves
        sock.close()
        _unlink(args.socket)


def run_warm(argv: list[str], out: EventOut) -> int:
    """A warm runner: imports, ``warm``, then the assigned runner's life (``ocrd.worker.warm``)."""
    from ocrd.worker.warm import (
        WarmUsageError,
        check_socket_dir,
        read_assignment,
        take_title,
        warm_up,
    )

    parser = _ArgumentParser(prog="python -m ocrd.worker --warm", description="warm ocrd runner")
    parser.add_argument("--warm", action="store_true", required=True)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--socket-dir", required=True, help="the folder its socket will be in")
    parser.add_argument("--title-room", default="", help="blanks: room for the title it takes on")
    signals = Signals()
    signals.install()  # SIGTERM while warming or waiting: exit 0
    try:
        args = parser.parse_args(argv)
        device = warm_up(args.engine)
        out.emit("warm", pid=os.getpid(), memory_bytes=memory_bytes(), device=device)
        assigned = read_assignment()
        if assigned is None:  # the daemon closed our stdin: not needed
            return 0
        runner_args, _ = parse_args(assigned)
        if runner_args.engine != args.engine:
            raise WarmUsageError(f"this runner is warm for {args.engine}, not {runner_args.engine}")
        check_socket_dir(runner_args.socket, args.socket_dir)
        take_title(assigned)
    except (UsageError, WarmUsageError) as exc:
        out.error(str(exc))
        return 2
    return run(assigned, out)


def _load_failed(exc: Exception, model_id: str, out: EventOut) -> int:
    from ocrd.errors import OcrdError

    if isinstance(exc, StopRequested):
        log.info("%s while loading: exiting", exc)
        return 0
    if isinstance(exc, OcrdError):
        out.error(exc.message)
    else:
        log.error("loading %s failed", model_id, exc_info=exc)
        out.error(f"loading {model_id} failed: {type(exc).__name__}: {exc}")
    return 1


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> int:
    disable_telemetry()
    out = EventOut()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    try:
        return run_warm(args, out) if "--warm" in args else run(args, out)
    except StopRequested:  # SIGTERM before the load even began
        return 0
    except Exception as exc:  # a bug: the daemon still gets one clear line, the traceback goes to the log
        log.exception("runner failed")
        out.error(f"runner failed: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    code = main()
    # Tearing down an interpreter that holds torch and transformers takes a second or more (module
    # clean-up, collecting the model's objects), and an unload or a model swap would wait for it.
    # Nothing of the runner's is left by now: its socket is removed, its answers are sent, its
    # events and log lines were flushed as they were written. Flush once more and leave.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
