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
  base64 upload, validation, proxy, runner process, streamer thread, JSON back.

The two are measured alternately request by request after one warm-up each, so that whatever else
the machine does weighs on both alike. Both run with ``--threads`` torch threads (default 1).

    .venv/bin/python bench/transformers_overhead.py [--kind qwen2_vl] [--tokens 16,128] [--repeats 8]

Numbers depend on the machine; only the ratios are meant to travel. Record results in
docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEXT = "Read the text in this image."


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


def measure(direct: Direct, http, model: str, tokens: int, repeats: int) -> dict:
    body = request_body(model, tokens)
    direct.run(body), through_ocrd(http, body)  # warm-up (and the runner's first request)
    times: dict[str, list[float]] = {"direct": [], "ocrd": []}
    for _ in range(repeats):
        for name, call in (("direct", direct.run), ("ocrd", lambda b: through_ocrd(http, b))):
            count, seconds = call(body)
            if count != tokens:
                raise SystemExit(f"{name}: {count} tokens generated, expected {tokens}")
            times[name].append(seconds)
    direct_rate = tokens * repeats / sum(times["direct"])
    ocrd_rate = tokens * repeats / sum(times["ocrd"])
    return {
        "tokens": tokens,
        "direct_tokens_per_s": round(direct_rate, 1),
        "ocrd_tokens_per_s": round(ocrd_rate, 1),
        "ratio_ocrd_over_direct": round(ocrd_rate / direct_rate, 3),
        "median_request_s": {name: round(statistics.median(values), 4) for name, values in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="qwen2_vl", help="tiny model kind (tests/support/tiny_models.py)")
    parser.add_argument("--tokens", default="16,128", help="new tokens per request, comma-separated")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the runner")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported, here and in ocrd

    from tests.support.daemon import running_daemon
    from tests.support.tiny_models import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="ocrd-bench-hub-") as hub:
        model = build_tiny_model(args.kind, Path(hub) / "hub")
        config = {"cache": {"hub_dir": Path(hub) / "hub"},
                  "transformers": {"generation": {"min_new_tokens": 1_000_000}}}
        with running_daemon(config, env={"OMP_NUM_THREADS": str(args.threads)}) as daemon:
            direct = Direct(daemon.config_path, model.repo_id)
            with daemon.http() as http:
                results = [measure(direct, http, model.repo_id, int(n), args.repeats)
                           for n in args.tokens.split(",")]
    import torch

    print(json.dumps({"model": f"tiny {args.kind} ({model.repo_id})", "results": results,
                      "repeats": args.repeats, "threads": args.threads,
                      "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
