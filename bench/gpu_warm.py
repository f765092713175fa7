#!/usr/bin/env python3
"""Warm runners on a GPU (issue 13, item 7; run where an NVIDIA GPU is, never in CI).

``ocrd serve`` with ``scheduler.warm_runners = 1`` on the tiny LLaVA of the tests:

1. the warm transformers runner: on ``cuda:0``, its CUDA context made (NVML's figure for it,
   from ``ocrctl ps``);
2. a load through it (the runner's pid must be the warm one's), timed, against the first
   ``from_pretrained`` of the model and its processor onto the GPU in a fresh process that has
   imported torch and transformers (the yardstick of bench/swap.py, on the GPU);
3. an 8-bit load (bitsandbytes) through the next warm runner, and one chat completion on it.

    python bench/gpu_warm.py [--rounds 3] [--json OUT.json]

Exit status 0 when every load went through a warm runner on the GPU and answered.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from swap import Control  # bench/swap.py, beside this file

LLAVA = "ocrd-test/tiny-llava"


def first_from_pretrained_on_gpu(path: Path) -> float:
    script = (
        "import sys, time, torch, transformers\n"
        "torch.zeros(1, device='cuda:0')\n"  # the context first: the warm runner has made its own
        "started = time.perf_counter()\n"
        "transformers.AutoModelForImageTextToText.from_pretrained(\n"
        "    sys.argv[1], device_map='cuda:0', dtype=torch.bfloat16)\n"
        "transformers.AutoProcessor.from_pretrained(sys.argv[1])\n"
        "torch.cuda.synchronize()\n"
        "print(time.perf_counter() - started)\n")
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: this check is for a machine with one", file=sys.stderr)
        return 1
    from ocrd.worker.transformers_options import find_snapshot
    from tests.support.daemon import ocr_messages, running_daemon
    from tests.support.render import render_text_image
    from tests.support.tiny_models import build_tiny_model

    report: dict = {"gpu": torch.cuda.get_device_name(0), "warm_loads": [], "first_from_pretrained": []}
    ok = True
    with tempfile.TemporaryDirectory(prefix="ocrd-gpu-warm-") as home:
        hub = Path(home) / "hub"
        build_tiny_model("llava", hub, repo_id=LLAVA)
        snapshot = find_snapshot(str(hub), LLAVA, "main").path
        assert snapshot is not None
        config = {"cache": {"hub_dir": hub}, "scheduler": {"warm_runners": 1},
                  "transformers": {"max_new_tokens": 4, "generation": {"min_new_tokens": 100_000}}}
        with running_daemon(config) as daemon:
            control = Control(daemon.socket_path)
            control.warm_ready(("transformers",))
            listing = control._stub.ListModels(control.pb.ListModelsRequest(loaded_only=True))
            warm = next(w for w in listing.warm_runners if w.engine == "transformers")
            report["warm_runner"] = {"device": warm.device, "memory_mib": warm.memory_bytes / 2**20}
            ok &= warm.device.startswith("cuda")
            for _ in range(args.rounds):
                report["first_from_pretrained"].append(first_from_pretrained_on_gpu(snapshot))
                pid = control.warm_ready(("transformers",))[0]
                seconds = control.load(LLAVA)
                used = control.pid(LLAVA) == pid
                report["warm_loads"].append({"seconds": seconds, "through_warm_runner": used})
                ok &= used
                control.unload(LLAVA)
            pid = control.warm_ready(("transformers",))[0]
            started = time.perf_counter()
            steps = list(control._stub.LoadModel(control.pb.LoadModelRequest(model=LLAVA, quantization="8bit")))
            eight_bit = {"seconds": time.perf_counter() - started, "state": int(steps[-1].state),
                         "through_warm_runner": control.pid(LLAVA) == pid}
            with daemon.openai_client() as client:
                answer = client.chat.completions.create(
                    model=LLAVA, messages=ocr_messages(render_text_image(["GPU"]), text="Read."), max_tokens=4)
            eight_bit["completion_tokens"] = answer.usage.completion_tokens
            models = daemon.ps()
            eight_bit["device"] = models[LLAVA]["device"]
            eight_bit["memory_mib"] = int(models[LLAVA]["memory_bytes"]) / 2**20
            report["8bit"] = eight_bit
            ok &= eight_bit["through_warm_runner"] and eight_bit["completion_tokens"] == 4
    warm_load = statistics.median(load["seconds"] for load in report["warm_loads"])
    first = statistics.median(report["first_from_pretrained"])
    report["median_warm_load_s"], report["median_first_from_pretrained_s"] = warm_load, first
    report["warm_load_minus_first_from_pretrained_s"] = warm_load - first
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
