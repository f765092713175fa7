"""A warm runner: an engine's imports done (and on a GPU its CUDA context made) before any model.

    python -m ocrd.worker --warm --engine transformers --socket-dir DIR

Nearly all of a small model's load time through a fresh runner is starting Python and importing
torch and transformers (seconds; ``from_pretrained`` of a tiny model in a process that has them
takes a tenth of that). The daemon keeps a warm runner per engine (``scheduler.warm_runners``) and
hands it the next model of that engine, so a swap costs the model's own load.

Protocol on the runner's channels: after the imports it prints ``{"event": "warm", "pid",
"memory_bytes", "device"}`` on stdout, then reads one JSON line on stdin, ``{"argv": [...]}``: the
command-line arguments a cold runner would have been started with (``--model-id``, ``--engine``,
``--socket``, ``--options``), and from there on it is that runner (progress, ``ready`` or
``error``). End of stdin before that line (the daemon no longer needs it, or died) is a clean
exit. The socket must lie in ``--socket-dir``: the folder the daemon checked for its runners.

What an engine warms is ``WARM_IMPORTS``: modules every load of it imports. An import that fails
is logged and skipped: the load itself then fails with the engine's own clear message.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger("ocrd.worker.warm")

# Per engine: what every load imports, heaviest first. Model-specific modules (a model's
# modeling_*.py, remote code) are left to the load: they depend on the model.
WARM_IMPORTS: dict[str, tuple[str, ...]] = {
    "builtin": (
        "onnxruntime", "cv2", "rapidocr", "ocrd.worker.builtin_worker", "ocrd.worker.ocr_backends",
    ),
    "transformers": (
        "torch", "transformers", "transformers.modeling_utils", "transformers.generation",
        "transformers.models.auto.modeling_auto", "transformers.models.auto.processing_auto",
        "transformers.image_processing_utils", "accelerate", "safetensors.torch",
        # What a first from_pretrained and generate() import lazily: a third of a tiny model's
        # first load in a process that had only torch and transformers imported.
        "transformers.generation.utils", "transformers.generation.continuous_batching",
        "transformers.generation.streamers", "transformers.generation.stopping_criteria",
        "transformers.generation.logits_process", "transformers.generation.candidate_generator",
        "transformers.masking_utils", "transformers.modeling_layers", "transformers.processing_utils",
        "transformers.conversion_mapping", "psutil", "tqdm.contrib.logging",
        "ocrd.worker.transformers_worker", "ocrd.worker.transformers_load",
        "ocrd.worker.transformers_generate", "ocrd.worker.transformers_processor",
        "ocrd.worker.transformers_progress",
    ),
}
# Per engine: (module, function, arguments) of one-time work every load does first; a function
# a version of the library lacks is skipped. transformers builds its table of checkpoint
# conversions (0.4 s here) on the first from_pretrained of any model.
WARM_CALLS: dict[str, tuple[tuple[str, str, tuple[Any, ...]], ...]] = {
    "transformers": (("transformers.conversion_mapping", "get_checkpoint_conversion_mapping", ("llama",)),),
}
# The HTTP server every runner starts once loaded.
SERVER_IMPORTS = ("uvicorn", "fastapi", "ocrd.worker.server")


class WarmUsageError(Exception):
    """A warm runner was started or assigned wrongly: exit status 2."""


def warm_up(engine: str) -> str:
    """Imports what ``engine``'s loads need and, for an engine that uses a GPU it can see, makes
    the CUDA context there; returns the device ("cpu" or "cuda:0")."""
    if engine not in WARM_IMPORTS:
        known = ", ".join(sorted(WARM_IMPORTS))
        raise WarmUsageError(f"no warm runner for engine {engine!r}; these have one: {known}")
    for name in (*WARM_IMPORTS[engine], *SERVER_IMPORTS):
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional package may be missing: the load will say so
            log.warning("warm-up: cannot import %s: %s: %s", name, type(exc).__name__, exc)
    for module, function, arguments in WARM_CALLS.get(engine, ()):
        call = getattr(sys.modules.get(module), function, None)
        if call is None:
            continue
        try:
            call(*arguments)
        except Exception as exc:
            log.warning("warm-up: %s.%s failed: %s: %s", module, function, type(exc).__name__, exc)
    if engine == "transformers" and os.environ.get("CUDA_VISIBLE_DEVICES", "") != "":
        return _cuda_context()
    return "cpu"


def _cuda_context() -> str:
    """The CUDA context on the one GPU this runner sees (the daemon sets CUDA_VISIBLE_DEVICES to
    the planned GPU): created now, it is ready when the model comes."""
    try:
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        torch.zeros(1, device="cuda:0")  # the first allocation creates the context
        torch.cuda.synchronize()
        return "cuda:0"
    except Exception as exc:
        log.warning("warm-up: no CUDA context: %s: %s", type(exc).__name__, exc)
        return "cpu"


def read_assignment(stream: Any = None) -> list[str] | None:
    """The runner's arguments from the daemon's one line on stdin; None at end of input."""
    line = (stream or sys.stdin).readline()
    if not line:
        return None
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise WarmUsageError(f"the assignment is not JSON: {exc}") from None
    argv = message.get("argv") if isinstance(message, dict) else None
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        raise WarmUsageError('the assignment must be {"argv": [strings]}')
    return argv


def take_title(assigned: list[str]) -> None:
    """Shows the runner it became in ``ps`` and ``/proc/PID/cmdline``: the command line a cold
    runner of the model has (``--options``, long and of no use there, left out), where the warm
    runner's said ``--warm``. ``ocrd.runners.orphans`` reads the model from it. The title is one
    string with spaces (setproctitle's way); ``SPT_NOENV`` (set by the pool) keeps it within the
    room the command line left, so that the environment in /proc stays as it was."""
    import setproctitle

    shown, skip = [], False
    for arg in assigned:
        if skip or arg == "--options":
            skip = not skip
            continue
        shown.append(arg)
    setproctitle.setproctitle(" ".join([sys.executable, "-m", "ocrd.worker", *shown]))


def check_socket_dir(socket: str, socket_dir: str) -> None:
    """The assigned socket must be a name in the folder the runner was started for."""
    if os.path.dirname(os.path.abspath(socket)) != os.path.abspath(socket_dir):
        raise WarmUsageError(f"socket {socket} is not in {socket_dir}")
