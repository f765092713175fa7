#!/usr/bin/env python3
"""Overhead of serving a transformers model through ocrd, against calling ``model.generate``.

The same tiny random-weight VLM (``tests/support/tiny_models.py``, in a temporary Hugging Face
cache), the same prompt (one image and a line of text), greedy, exactly N new tokens:

* direct: in this process, the model and processor loaded by the runner's own engine
  (``TransformersEngine.load`` with the very options the daemon sends, built by the daemon's
  ``ModelDirectory``), the request parsed by the runner's own parser and turned into model inputs
  by ``transformers_generate.prepare_inputs``; then one plain
  ``model.generate(max_new_tokens=N, min_new_tokens=N, do_sample=False)`` (no streamer, no
  thread, no stopping criteria). Timed: image decoding, processor and generate.
* through ocrd: ``ocrd serve`` with that cache, the OpenAI endpoint with ``max_tokens=N``
  (``transformers.generation.min_new_tokens`` keeps random weights from stopping early): HTTP,
  base64 upload, validation, proxy, runner process, streamer, JSON back.

The two are measured alternately request by request after one warm-up each (each round starting
with the next of them), so that whatever else the machine does weighs on both alike. Both run
with ``--threads`` torch threads (default 1). Reported: tokens/s of each from the summed times and
their ratio; the median over rounds of each round's direct/ocrd time ratio (steadier on a shared
machine, where a few slowed rounds move the sums); and the CPU time per request of each (this
process for direct, the daemon and its runners through ocrd), which other load on the machine
moves less.

``--baseline REV`` adds ocrd as committed at REV (``git archive``, same venv; its daemon and
runners import that tree) to the same rounds: a change measured side by side with what it
replaced, not against a figure from another day.

    .venv/bin/python bench/transformers_overhead.py [--kind qwen2_vl] [--tokens 16,128] [--repeats 8] [--baseline REV]

Numbers depend on the machine; only the ratios are meant to travel. Record results in
docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baseline import checkout, load_module

TEXT = "Read the text in this image."
WARM_RUNNER_SETTLE_S = 5.0


def request_body(model: str, tokens: int) -> dict:
    from PIL import Image

    from tests.support.render import data_url

    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), "white").save(buffer, format="PNG")
    content = [{"type": "text", "text": TEXT},
               {"type": "image_url", "image_url": {"url": data_url(buffer.getvalue())}}]
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "temperature": 0, "max_tokens": tokens}


class Direct:
    """The runner's engine, loaded in this process; ``run`` is one plain generate() call."""

    def __init__(self, config_path: Path, model: str):
        from ocrd.catalog import Catalog
        from ocrd.config.loading import load_settings
        from ocrd.core.directory import ModelDirectory
        from ocrd.planning.planner import Host, plan
        from ocrd.worker.transformers_worker import create_engine

        directory = ModelDirectory(Catalog.load_default(), load_settings(str(config_path)))
        entry = directory.resolve(model)
        wishes = directory.wishes(entry)
        # The planner's decision for a host without a GPU: this process runs the model on the CPU.
        decision = plan(entry, directory.size_facts(wishes), Host(), wishes.preference())
        spec = directory.runner_spec(wishes, decision)
        os.environ.update(spec.env)  # HF_HUB_CACHE, HF_HUB_OFFLINE, as the runner gets them
        self.engine = create_engine(entry.id, spec.options)
        self.engine.load(lambda stage, fraction, message: None)

    def run(self, body: dict) -> tuple[int, float]:
        """(new tokens, seconds) for one request body."""
        import torch

        from ocrd.worker.chat_input import chat_input, parse_request
        from ocrd.worker.transformers_generate import prepare_inputs

        tokens = body["max_tokens"]
        started = time.perf_counter()
        chat = chat_input(parse_request(json.dumps(body).encode()))
        inputs = prepare_inputs(self.engine.runtime, chat)
        with torch.inference_mode():
            output = self.engine.runtime.model.generate(
                **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        seconds = time.perf_counter() - started
        return int(output.shape[-1] - inputs["input_ids"].shape[-1]), seconds


def through_ocrd(http, body: dict) -> tuple[int, float]:
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"], seconds


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes ``pids`` have used so far (/proc, clock ticks)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """A running ``ocrd serve`` to measure: its HTTP client, the processes whose CPU it costs, and
    its config file."""

    http: Any
    pids: list[int]
    config_path: Path


def measure(direct: Direct, targets: dict[str, Target], model: str, tokens: int, repeats: int) -> dict:
    body = request_body(model, tokens)
    direct.run(body)  # warm-up
    for target in targets.values():
        through_ocrd(target.http, body)  # warm-up (and the runner's first request of this length)
    calls: dict[str, Callable[[dict], tuple[int, float]]] = {"direct": direct.run}
    # CPU time, besides wall time: what the work costs, whoever else wants the cores meanwhile.
    # Direct: this process; through ocrd: the daemon and its runners (not the HTTP client here).
    clocks: dict[str, Callable[[], float]] = {"direct": time.process_time}
    for name, target in targets.items():
        calls[name] = functools.partial(lambda t, b: through_ocrd(t.http, b), target)
        clocks[name] = functools.partial(cpu_seconds, target.pids)
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu = dict.fromkeys(calls, 0.0)
    names = list(calls)
    for round_number in range(repeats):
        # Each round starts with the next one: no target always follows the same other.
        turn = round_number % len(names)
        for name in names[turn:] + names[:turn]:
            call = calls[name]
            cpu_before = clocks[name]()
            count, seconds = call(body)
            cpu[name] += clocks[name]() - cpu_before
            if count != tokens:
                raise SystemExit(f"{name}: {count} tokens generated, expected {tokens}")
            times[name].append(seconds)
    direct_rate = tokens * repeats / sum(times["direct"])
    result: dict[str, Any] = {"tokens": tokens, "direct_tokens_per_s": round(direct_rate, 1)}
    for name in targets:
        rate = tokens * repeats / sum(times[name])
        # Each round's requests ran back to back: the median of their ratios shrugs off the
        # rounds that something else on the machine slowed down, which the sums do not.
        paired = statistics.median(d / o for d, o in zip(times["direct"], times[name], strict=True))
        result[name] = {
            "tokens_per_s": round(rate, 1),
            "ratio_over_direct": round(rate / direct_rate, 3),
            "ratio_median_of_pairs": round(paired, 3),
            "ratio_cpu_direct_over_this": round(cpu["direct"] / cpu[name], 3) if cpu[name] else None,
        }
    result["cpu_ms_per_request"] = {name: round(1000 * value / repeats, 2) for name, value in cpu.items()}
    result["median_request_s"] = {name: round(statistics.median(values), 4) for name, values in times.items()}
    return result


def start_target(stack: contextlib.ExitStack, config: dict, env: dict[str, str], model: str,
                 tree: Path = REPO, helper_name: str = "bench_daemon") -> Target:
    """``ocrd serve`` of the repository at ``tree`` with the model loaded. The tree's own test
    helper starts it: the daemon runs in that tree, and so do its runners (``python -m
    ocrd.worker`` imports from its working directory first, before any PYTHONPATH)."""
    helper = load_module(tree / "tests" / "support" / "daemon.py", helper_name)
    daemon = stack.enter_context(helper.running_daemon(config, env=env))
    http = stack.enter_context(daemon.http())
    through_ocrd(http, request_body(model, 1))  # loads the model: its runner exists from here on
    return Target(http, [daemon.pid, *daemon.runner_pids()], daemon.config_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="qwen2_vl", help="tiny model kind (tests/support/tiny_models.py)")
    parser.add_argument("--tokens", default="16,128", help="new tokens per request, comma-separated")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the runner")
    parser.add_argument("--baseline", metavar="REV", help="also measure ocrd as committed at REV")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported, here and in ocrd

    from tests.support.tiny_models import build_tiny_model

    env = {"OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory(prefix="ocrd-bench-hub-") as hub, contextlib.ExitStack() as stack:
        model = build_tiny_model(args.kind, Path(hub) / "hub")
        config = {"cache": {"hub_dir": Path(hub) / "hub"},
                  "transformers": {"generation": {"min_new_tokens": 1_000_000}}}
        targets = {"ocrd": start_target(stack, config, env, model.repo_id)}
        if args.baseline:
            # The daemon, and the runners it starts, import ocrd from that tree.
            tree = checkout(args.baseline, Path(hub) / "baseline")
            targets[f"ocrd {args.baseline}"] = start_target(stack, config, {**env, "PYTHONPATH": str(tree)},
                                                           model.repo_id, tree, "bench_baseline_daemon")
        direct = Direct(targets["ocrd"].config_path, model.repo_id)
        # After a load the daemon starts its next warm runner (torch imported): let that finish
        # before the rounds, or it weighs on the first of them.
        time.sleep(WARM_RUNNER_SETTLE_S)
        results = [measure(direct, targets, model.repo_id, int(n), args.repeats) for n in args.tokens.split(",")]
    import torch

    print(json.dumps({"model": f"tiny {args.kind} ({model.repo_id})", "results": results,
                      "repeats": args.repeats, "threads": args.threads, "baseline": args.baseline,
                      "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
