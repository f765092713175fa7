"""ocrd.planning.availability: vLLM's availability from the settings, and the cached Docker status the planner
reads on the event loop (probes of another interpreter: tests/integration/test_engine_probes.py)."""

from __future__ import annotations

import sys
import threading

import pytest

from ocrd.config.settings import Settings
from ocrd.planning import availability as engines
from ocrd.planning.availability import DockerStatusCache, engine_availability
from ocrd.runners.vllm.docker_host import DockerStatus

UP = DockerStatus(True, version="20.10.24", runtimes=("runc",))
DOWN = DockerStatus(False, reason="Docker is not reachable: no socket")


def unasked() -> DockerStatus:
    raise AssertionError("the process launcher never asks Docker")


class Answers:
    """Docker's successive answers, one per question; ``asked`` is set once each is given."""

    def __init__(self, *statuses: DockerStatus):
        self.statuses = list(statuses)
        self.asked = threading.Event()

    def __call__(self) -> DockerStatus:
        status = self.statuses.pop(0)
        self.asked.set()
        return status


def test_the_docker_status_is_reused_until_it_is_stale_then_refreshed_behind_the_callers_back():
    now = [0.0]
    answers = Answers(UP, DOWN)
    cache = DockerStatusCache(answers, ttl=5.0, clock=lambda: now[0])
    assert cache.get() is UP  # the first question waits for the answer
    now[0] = 4.9
    assert cache.get() is UP and answers.statuses == [DOWN]  # fresh: Docker is not asked
    now[0] = 5.0
    answers.asked.clear()
    assert cache.get() is UP  # stale: the last answer at once, a fresh one fetched meanwhile
    assert answers.asked.wait(10)
    for _ in range(1000):  # the thread stores the answer right after giving it
        if cache.get() is DOWN:
            break
        threading.Event().wait(0.01)
    assert cache.get() is DOWN


def test_vllm_with_the_docker_launcher_follows_dockers_status_and_the_device():
    up = DockerStatusCache(lambda: UP).get
    on_gpu = engine_availability("vllm", Settings(), up)
    assert not on_gpu.available and on_gpu.reason.startswith("Docker has no NVIDIA runtime")
    assert engine_availability("vllm", Settings(vllm={"device": "cpu"}), up).available
    down = engine_availability("vllm", Settings(vllm={"device": "cpu"}), DockerStatusCache(lambda: DOWN).get)
    assert down.reason == ("Docker is not reachable: no socket; vLLM runs in Docker "
                           "(vllm.launcher = 'docker')")


@pytest.mark.parametrize("python", ["", sys.executable])
def test_vllm_with_the_process_launcher_needs_the_package_for_its_interpreter(python):
    engines._missing_packages.cache_clear()
    availability = engine_availability("vllm", Settings(vllm={"launcher": "process", "python": python}), unasked)
    # The test venv never has vLLM (it lives in a venv of its own).
    assert not availability.available
    assert availability.reason.startswith(f"the vllm package is not installed for {sys.executable}: "
                                          "install it in a venv and set vllm.python")
    assert "vllm.command" not in availability.reason
