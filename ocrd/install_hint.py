"""The command that installs one of ocrd's extras, for the way this ocrd was installed.

ocrd-vlm is on no package index, so ``pip install 'ocrd-vlm[transformers]'`` fails as written
for almost everybody. How this ocrd was installed is in its distribution's metadata,
``direct_url.json`` (PEP 610): from a checkout (``pip install -e .`` or ``pip install .``), from a
wheel or archive, from a VCS URL, or, without that file, from an index. The command installs the
extra from that same place, run by an interpreter named by its path (``<python> -m pip``): the
``pip`` first on PATH is seldom the venv that runs the daemon (systemd, sudo).

torch from PyPI is its CUDA build on Linux (gigabytes); on a host without an NVIDIA driver the
command for the ``transformers`` extra adds PyTorch's CPU index, whose ``+cpu`` builds pip then
prefers.

Standard library only and nothing else of ocrd: a runner process (``ocrd.worker``) words its
hints with it too.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "ocrd-vlm"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_EXTRAS = frozenset({"transformers"})  # extras that pull torch (pyproject.toml)


@dataclass(frozen=True)
class Source:
    """Where pip takes this ocrd from again: a local directory or file, a URL (a VCS one
    spelled as pip spells it, ``git+https://...@commit``), or the distribution's name (an index)."""

    location: str = DISTRIBUTION
    editable: bool = False
    local: bool = False  # ``location`` is a path on this host

    def requirement(self, extra: str) -> str:
        """pip's arguments for ocrd with ``extra``, quoted for a shell: ``-e '/src/ocrd[vllm]'``."""
        if self.local:
            text = f"{self.location}[{extra}]"
        elif self.location == DISTRIBUTION:
            text = f"{DISTRIBUTION}[{extra}]"
        else:  # a URL: PEP 508's direct reference
            text = f"{DISTRIBUTION}[{extra}] @ {self.location}"
        return ("-e " if self.editable else "") + _quoted(text)


def source_of(dist: metadata.Distribution | None) -> Source:
    """How ``dist`` (this ocrd's distribution; None: not installed, run from a source tree) was
    installed, from its ``direct_url.json``."""
    if dist is None:
        return _source_tree()
    text = dist.read_text("direct_url.json")
    if not text:
        return Source()  # installed from an index (what pip records without a direct URL)
    try:
        direct = json.loads(text)
        url = str(direct["url"])
    except (ValueError, KeyError, TypeError):
        return Source()
    subdirectory = str(direct.get("subdirectory") or "")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        path = path / subdirectory if subdirectory else path
        editable = bool((direct.get("dir_info") or {}).get("editable"))
        return Source(str(path), editable=editable, local=True)
    vcs = direct.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        # The commit that is installed: the extra comes with the same ocrd, not a newer one.
        revision = vcs.get("commit_id") or vcs.get("requested_revision")
        url = f"{vcs['vcs']}+{url}" + (f"@{revision}" if revision else "")
    return Source(url + (f"#subdirectory={subdirectory}" if subdirectory else ""))


@functools.cache
def this_source() -> Source:
    """Where the ocrd running here was installed from (read once: it does not change under a
    running process in any way that matters for a hint)."""
    try:
        dist: metadata.Distribution | None = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        dist = None
    return source_of(dist)


def install_command(extra: str, python: str = "", *, source: Source | None = None,
                    nvidia: bool | None = None) -> str:
    """One line that installs ocrd's ``extra`` into ``python`` (empty: this interpreter), e.g.
    ``/opt/ocrd/bin/python -m pip install -e '/src/ocrd[transformers]'``; for an extra with
    torch on a host without an NVIDIA driver (``nvidia``; None: look at this host), from the
    CPU index."""
    source = source or this_source()
    command = f"{shlex.quote(python or sys.executable)} -m pip install {source.requirement(extra)}"
    if extra in TORCH_EXTRAS and not (nvidia_driver() if nvidia is None else nvidia):
        command += f" --extra-index-url {TORCH_CPU_INDEX}"
    return command


def nvidia_driver(dev: Path = Path("/dev"), proc: Path = Path("/proc")) -> bool:
    """An NVIDIA driver is loaded on this host (its control device or its /proc entry)."""
    return (dev / "nvidiactl").exists() or (proc / "driver" / "nvidia" / "version").exists()


def _source_tree() -> Source:
    # Not installed (PYTHONPATH at a checkout): the checkout, if this is one.
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return Source(str(root), local=True)
    return Source()


def _quoted(text: str) -> str:
    # Always quoted: brackets are globs to zsh, and a path may hold spaces.
    return shlex.quote(text) if "'" in text else f"'{text}'"
