"""How to install an extra, from real distribution metadata: dist-info directories laid out as pip
writes them (``METADATA``, PEP 610's ``direct_url.json``), read by ``importlib.metadata``."""

from __future__ import annotations

import json
import sys
from importlib.metadata import PathDistribution
from pathlib import Path

from ocrd.install_hint import TORCH_CPU_INDEX, Source, install_command, nvidia_driver, source_of, this_source

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/opt/ocrd/bin/python"


def dist_info(tmp_path: Path, direct_url: dict | None) -> PathDistribution:
    """The dist-info pip leaves for ocrd-vlm; ``direct_url``: what it recorded of the source
    (None: nothing, an install from an index)."""
    path = tmp_path / "site-packages" / "ocrd_vlm-0.1.0.dist-info"
    path.mkdir(parents=True)
    (path / "METADATA").write_text("Metadata-Version: 2.3\nName: ocrd-vlm\nVersion: 0.1.0\n")
    (path / "INSTALLER").write_text("pip\n")
    if direct_url is not None:
        (path / "direct_url.json").write_text(json.dumps(direct_url))
    return PathDistribution(path)


def command(tmp_path: Path, direct_url: dict | None, extra: str = "vllm") -> str:
    return install_command(extra, PYTHON, source=source_of(dist_info(tmp_path, direct_url)), nvidia=True)


def test_an_editable_checkout_is_installed_again_editable_with_the_extra(tmp_path):
    # pip install -e '/src/ocrd[transformers]'
    assert command(tmp_path, {"url": "file:///src/ocrd", "dir_info": {"editable": True}}) == (
        "/opt/ocrd/bin/python -m pip install -e '/src/ocrd[vllm]'")


def test_a_checkout_installed_with_pip_install_dot_is_named_by_its_path(tmp_path):
    assert command(tmp_path, {"url": "file:///home/alice/ocrd%20vlm", "dir_info": {}}) == (
        "/opt/ocrd/bin/python -m pip install '/home/alice/ocrd vlm[vllm]'")


def test_a_wheel_or_an_archive_is_named_by_its_url(tmp_path):
    wheel = {"url": "file:///tmp/dist/ocrd_vlm-0.1.0-py3-none-any.whl",
             "archive_info": {"hashes": {"sha256": "ab" * 32}}}
    assert command(tmp_path / "wheel", wheel) == (
        "/opt/ocrd/bin/python -m pip install '/tmp/dist/ocrd_vlm-0.1.0-py3-none-any.whl[vllm]'")
    remote = {"url": "https://example.org/ocrd-0.1.0.tar.gz", "archive_info": {}}
    assert command(tmp_path / "remote", remote) == (
        "/opt/ocrd/bin/python -m pip install 'ocrd-vlm[vllm] @ https://example.org/ocrd-0.1.0.tar.gz'")


def test_a_vcs_install_is_named_at_the_commit_that_runs(tmp_path):
    git = {"url": "https://git.example.org/ocrd.git", "subdirectory": "python",
           "vcs_info": {"vcs": "git", "requested_revision": "main", "commit_id": "1a2b3c" * 6 + "1a2b"}}
    assert command(tmp_path, git) == (
        "/opt/ocrd/bin/python -m pip install 'ocrd-vlm[vllm] @ "
        "git+https://git.example.org/ocrd.git@" + "1a2b3c" * 6 + "1a2b#subdirectory=python'")


def test_only_an_install_without_a_direct_url_names_the_distribution(tmp_path):
    assert command(tmp_path / "index", None) == "/opt/ocrd/bin/python -m pip install 'ocrd-vlm[vllm]'"
    assert command(tmp_path / "damaged", {"dir_info": {}}) == "/opt/ocrd/bin/python -m pip install 'ocrd-vlm[vllm]'"


def test_torch_comes_from_the_cpu_index_on_a_host_without_an_nvidia_driver(tmp_path):
    source = Source("/src/ocrd", editable=True, local=True)
    assert install_command("transformers", PYTHON, source=source, nvidia=False) == (
        f"/opt/ocrd/bin/python -m pip install -e '/src/ocrd[transformers]' --extra-index-url {TORCH_CPU_INDEX}")
    assert install_command("transformers", PYTHON, source=source, nvidia=True) == (
        "/opt/ocrd/bin/python -m pip install -e '/src/ocrd[transformers]'")
    assert install_command("vllm", PYTHON, source=source, nvidia=False).endswith("'/src/ocrd[vllm]'")
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir()
    assert not nvidia_driver(dev, proc)
    (dev / "nvidiactl").touch()
    assert nvidia_driver(dev, proc)


def test_this_ocrd_is_the_checkout_of_the_test_venv_and_its_interpreter_runs_pip():
    # scripts/test installs the test venv with pip install -e from this checkout.
    assert this_source() == Source(str(REPO), editable=True, local=True)
    assert install_command("vllm") == f"{sys.executable} -m pip install -e '{REPO}[vllm]'"
