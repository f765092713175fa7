"""Engine availability asked of another interpreter (``transformers.python``, ``vllm.python``):
ocrd runs it once to see which packages it has, so these tests run real processes."""

from __future__ import annotations

import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.core.directory import ModelDirectory
from ocrd.errors import EngineUnavailable
from ocrd.planning.availability import _missing_packages, engine_availability
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.cache_layout import cache_model

MINERU = "opendatalab/MinerU2.5-2509-1.2B"
QWEN_LIKE = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
             "vision_config": {"depth": 2}}


NO_DOCKER = DockerStatus(False, reason="Docker is not reachable: no socket")


def unasked() -> DockerStatus:
    raise AssertionError("the process launcher never asks Docker")


def test_without_torch_for_the_configured_python_the_transformers_models_are_not_served(tmp_path):
    hub = tmp_path / "hub"
    hub.mkdir()
    cache_model(hub, MINERU, QWEN_LIKE)
    python = tmp_path / "python-without-torch"
    python.write_text("#!/bin/sh\necho torch transformers\n")  # what the probe prints: missing
    python.chmod(0o755)
    _missing_packages.cache_clear()
    models = ModelDirectory(Catalog.load_default(),
                            Settings(cache={"hub_dir": hub}, transformers={"python": str(python)}),
                            docker_status=lambda: NO_DOCKER)

    assert MINERU not in [entry.id for entry in models.available()]
    with pytest.raises(EngineUnavailable) as caught:
        models.resolve(MINERU)
    assert "torch, transformers not installed" in caught.value.message


def test_a_vllm_python_that_cannot_run_is_named():
    _missing_packages.cache_clear()
    availability = engine_availability("vllm", Settings(vllm={"launcher": "process",
                                                              "python": "/nonexistent/bin/python"}), unasked)
    assert availability.reason.startswith("cannot run /nonexistent/bin/python (vllm.python)")
