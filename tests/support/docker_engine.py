"""A real Docker engine for tests, the fake vLLM image on it, and cleanup of what tests start.

Fixtures (import them into a test module to use them):

* ``docker_engine`` (session): a connected ``docker.DockerClient``. Without a reachable engine the
  test is skipped with the reason, unless ``OCRD_REQUIRE_DOCKER=1`` (set by ``scripts/test`` in CI),
  where it fails instead: CI must never pass by skipping every Docker test.
* ``fake_vllm_image`` (session): the tag of ``local/ocrd-fake-vllm`` (built once per machine).
* ``docker_instance``: a fresh ``ocrd.instance`` name for one test; every container carrying it is
  removed afterwards, whatever the test did. Runners started with ``instance=...`` (and the
  ``TEST_LABEL`` that ``runner_labels`` adds) are found by it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ocrd.runners.vllm import docker_host

REQUIRE_ENV = "OCRD_REQUIRE_DOCKER"
TEST_LABEL = "ocrd.test"  # every container a test starts carries it: `docker ps -f label=ocrd.test`


def connect_or_skip() -> Any:
    """A docker client, or skip (fail under OCRD_REQUIRE_DOCKER=1) saying why there is none."""
    client = docker_host.docker_client()
    if isinstance(client, str):
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {client}", pytrace=False)
        pytest.skip(f"needs a Docker engine ({client}); scripts/test starts one as root, "
                    f"{REQUIRE_ENV}=1 makes this a failure")
    return client


def runner_labels() -> dict[str, str]:
    return {TEST_LABEL: "1"}


def instance_containers(client: Any, instance: str) -> list[Any]:
    return docker_host.managed_containers(client, instance)


def remove_instance(client: Any, instance: str) -> list[str]:
    """Removes every container of ``instance``; returns their names."""
    names = []
    for container in instance_containers(client, instance):
        names.append(container.name)
        container.remove(force=True)
    return names


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    client = connect_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def fake_vllm_image(docker_engine: Any) -> str:
    from tests.support.fake_vllm.image import ensure_image

    return ensure_image(docker_engine)


@pytest.fixture
def docker_instance(docker_engine: Any) -> Iterator[str]:
    instance = f"test-{secrets.token_hex(4)}"
    yield instance
    remove_instance(docker_engine, instance)
