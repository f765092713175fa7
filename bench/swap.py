#!/usr/bin/env python3
"""Model swaps: how long a load through ocrd takes, with and without a warm runner, against
loading the same model in a process that has torch and transformers imported already.

The tiny random-weight LLaVA and Qwen2-VL of the tests (``tests/support/tiny_models.py``) in a
temporary Hugging Face cache, on the CPU:

* first from_pretrained: a fresh process that has imported torch and transformers loads the model
  and its processor with ``from_pretrained`` (timed inside it): the figure issue 13's goal is put
  against. For reference, in this process after a first load: ``from_pretrained`` again, and the
  runner's own engine's load again (``TransformersEngine.load`` with the options the daemon
  would send: processor, weights, a two-token warm-up).
* ocrd cold: ``ocrd serve`` with ``scheduler.warm_runners = 0``: a gRPC ``LoadModel`` starts a
  runner process (Python, imports, the model).
* ocrd warm: ``ocrd serve`` with ``scheduler.warm_runners = 1``: the load is handed to a runner
  that has its engine imported.

Timed: ``LoadModel`` until its READY message (what ``ocrctl load`` waits for), and a swap:
``UnloadModel`` of LLaVA plus ``LoadModel`` of Qwen2-VL. Rounds interleave the three, each daemon's
warm runners ready before anything is timed (so that one warming does not slow the other's
turn). Medians.

    .venv/bin/python bench/swap.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LLAVA, QWEN = "ocrd-test/tiny-llava", "ocrd-test/tiny-qwen2-vl"


class Control:
    """The daemon's control plane over its Unix socket (the generated stub, as ocrctl uses it)."""

    def __init__(self, socket_path: Path):
        import grpc

        from ocrd.control.v1 import control_pb2 as pb
        from ocrd.control.v1 import control_pb2_grpc

        self.pb = pb
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._stub = control_pb2_grpc.ControlStub(self._channel)

    def load(self, model: str) -> float:
        started = time.perf_counter()
        last = None
        for step in self._stub.LoadModel(self.pb.LoadModelRequest(model=model)):
            last = step
        seconds = time.perf_counter() - started
        assert last is not None and last.state == self.pb.MODEL_STATE_READY, last
        return seconds

    def unload(self, model: str) -> float:
        started = time.perf_counter()
        self._stub.UnloadModel(self.pb.UnloadModelRequest(model=model))
        return time.perf_counter() - started

    def pid(self, model: str) -> int:
        listing = self._stub.ListModels(self.pb.ListModelsRequest(loaded_only=True))
        return next(m.pid for m in listing.models if m.id == model)

    def warm_ready(self, engines: tuple[str, ...], timeout: float = 120.0) -> list[int]:
        """Waits until each engine has a warm runner that is ready; their pids."""
        deadline = time.monotonic() + timeout
        while True:
            listing = self._stub.ListModels(self.pb.ListModelsRequest(loaded_only=True))
            ready = {w.engine: w.pid for w in listing.warm_runners if w.ready}
            if all(engine in ready for engine in engines):
                return [ready[engine] for engine in engines]
            if time.monotonic() > deadline:
                raise SystemExit(f"no warm runner ready within {timeout:g}s: {listing.warm_runners}")
            time.sleep(0.05)


class InProcess:
    """The runner's engine in this process, torch and transformers imported before any timing."""

    def __init__(self, config_path: Path):
        import torch  # noqa: F401 - imported up front: that is the point of the comparison
        import transformers  # noqa: F401

        from ocrd.catalog import Catalog
        from ocrd.config.loading import load_settings
        from ocrd.core.directory import ModelDirectory

        self.directory = ModelDirectory(Catalog.load_default(), load_settings(str(config_path)))

    def _spec(self, model: str) -> Any:
        from ocrd.planning.planner import Host, plan

        entry = self.directory.resolve(model)
        wishes = self.directory.wishes(entry)
        decision = plan(entry, self.directory.size_facts(wishes), Host(), wishes.preference())
        spec = self.directory.runner_spec(wishes, decision)
        os.environ.update(spec.env)
        return spec

    def engine_load(self, model: str) -> float:
        from ocrd.worker.transformers_worker import create_engine

        spec = self._spec(model)
        started = time.perf_counter()
        engine = create_engine(model, spec.options)
        engine.load(lambda stage, fraction, message: None)
        seconds = time.perf_counter() - started
        del engine
        return seconds

    def snapshot(self, model: str) -> Path:
        from ocrd.worker.transformers_options import find_snapshot

        spec = self._spec(model)
        path = find_snapshot(spec.options["cache_dir"], spec.options["repo_id"], "main").path
        assert path is not None, f"{model} is not in the cache"
        return path

    def from_pretrained(self, model: str) -> float:
        """The model and its processor loaded again in this process."""
        import transformers

        path = self.snapshot(model)
        started = time.perf_counter()
        loaded = transformers.AutoModelForImageTextToText.from_pretrained(path)
        processor = transformers.AutoProcessor.from_pretrained(path)
        seconds = time.perf_counter() - started
        del loaded, processor
        return seconds

    def first_from_pretrained(self, model: str) -> float:
        """The model and its processor loaded for the first time in a fresh process that has
        imported torch, transformers and its Auto classes (timed inside it): issue 13's
        yardstick."""
        script = (
            "import sys, time, torch, transformers\n"
            "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
            "started = time.perf_counter()\n"
            "AutoModelForImageTextToText.from_pretrained(sys.argv[1])\n"
            "AutoProcessor.from_pretrained(sys.argv[1])\n"
            "print(time.perf_counter() - started)\n")
        result = subprocess.run([sys.executable, "-c", script, str(self.snapshot(model))],
                                capture_output=True, text=True, check=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return float(result.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"

    from tests.support.daemon import running_daemon
    from tests.support.tiny_models import build_tiny_model

    times: dict[str, list[float]] = {name: [] for name in (
        "first_from_pretrained", "from_pretrained_again", "engine_load_again", "cold_load",
        "warm_load", "cold_swap", "warm_swap")}
    with tempfile.TemporaryDirectory(prefix="ocrd-bench-hub-") as home:
        hub = Path(home) / "hub"
        build_tiny_model("llava", hub, repo_id=LLAVA)
        build_tiny_model("qwen2_vl", hub, repo_id=QWEN)
        base = {"cache": {"hub_dir": hub}}
        env = {"OMP_NUM_THREADS": "1"}
        with running_daemon({**base, "scheduler": {"warm_runners": 0}}, env=env) as cold_daemon, \
                running_daemon({**base, "scheduler": {"warm_runners": 1}}, env=env) as warm_daemon:
            cold, warm = Control(cold_daemon.socket_path), Control(warm_daemon.socket_path)
            here = InProcess(cold_daemon.config_path)
            here.engine_load(LLAVA)  # first-time costs (lazy modules of the model) off the clock
            here.from_pretrained(LLAVA)
            for _ in range(args.rounds):
                warm.warm_ready(("transformers",))
                times["first_from_pretrained"].append(here.first_from_pretrained(LLAVA))
                times["from_pretrained_again"].append(here.from_pretrained(LLAVA))
                times["engine_load_again"].append(here.engine_load(LLAVA))
                times["cold_load"].append(cold.load(LLAVA))
                warm_pid = warm.warm_ready(("transformers",))[0]
                times["warm_load"].append(warm.load(LLAVA))
                if warm.pid(LLAVA) != warm_pid:
                    raise SystemExit("the warm daemon did not use its warm runner")
                warm.warm_ready(("transformers",))  # the replacement, before the next timing
                times["cold_swap"].append(cold.unload(LLAVA) + cold.load(QWEN))
                warm.warm_ready(("transformers",))
                times["warm_swap"].append(warm.unload(LLAVA) + warm.load(QWEN))
                warm.warm_ready(("transformers",))
                cold.unload(QWEN)
                warm.unload(QWEN)
    result = {name: median(values) for name, values in times.items()}
    result["warm_load_minus_first_from_pretrained"] = round(
        result["warm_load"] - result["first_from_pretrained"], 3)
    result["rounds"] = args.rounds
    for name, value in result.items():
        print(f"{name:34} {value}")


if __name__ == "__main__":
    main()
