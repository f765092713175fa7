"""The test image ``local/ocrd-fake-vllm:<hash>``: FakeVllm behind vLLM's entrypoint, built here.

No registry is reachable from a test machine, so the image is made from this host's own Python:
``docker import`` of a tarball holding the interpreter, the shared libraries ``ldd`` lists for
it, and only the standard-library modules FakeVllm imports. That list is not guessed: the builder
runs ``server.py --self-check``-style code in the same interpreter (every endpoint called once,
streaming included) and takes every module file then loaded. The result is a few megabytes and
imports in about a second.

Like ``vllm/vllm-openai``, the image has ``ENTRYPOINT ["vllm", "serve"]``, a root user whose cache
is ``/root/.cache/huggingface``, and a ``vllm`` user (uid 1000) with its home, for tests of
``user=``. The tag is a hash of this file, ``server.py`` and the interpreter, so the image is built
once per machine and rebuilt only when one of them changes. Nothing is ever pulled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPOSITORY = "local/ocrd-fake-vllm"
SERVER = Path(__file__).with_name("server.py")
PYTHON = os.path.realpath(sys.executable)
VLLM_UID = 1000

# Modules the standard library imports only if they exist (http.client: ssl; shutil: bz2, lzma).
# Blocked while listing, so the image goes without them and their libraries (libcrypto, ...).
_LEFT_OUT = ("ssl", "_ssl", "_hashlib", "bz2", "_bz2", "lzma", "_lzma")
_LOADED_MODULES = """
import json, runpy, sys
sys.modules.update(dict.fromkeys(sys.argv[2].split(",")))
runpy.run_path(sys.argv[1])["self_check"]()
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
print("MODULE-FILES " + json.dumps(files))
"""
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def image_tag() -> str:
    """``local/ocrd-fake-vllm:<12 hex>``, a hash of what goes into the image."""
    digest = hashlib.sha256()
    for part in (Path(__file__).read_bytes(), SERVER.read_bytes(), PYTHON.encode(), sys.version.encode(),
                 str(os.stat(PYTHON).st_size).encode()):
        digest.update(part)
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


def ensure_image(client: Any) -> str:
    """The tag of the fake image, imported into the engine first if it is not there yet."""
    from docker.errors import ImageNotFound

    tag = image_tag()
    try:
        client.images.get(tag)
    except ImageNotFound:
        repository, version = tag.split(":")
        client.api.import_image_from_data(
            build_tarball(), repository=repository, tag=version,
            changes=['ENTRYPOINT ["vllm", "serve"]', "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                     "ENV PYTHONDONTWRITEBYTECODE=1", "EXPOSE 8000", "WORKDIR /"],
        )
        client.images.get(tag)  # ImageNotFound here means the import did not take
    return tag


def build_tarball() -> bytes:
    """The image's root file system as an uncompressed tar."""
    files = sorted(set(_module_files()) | {PYTHON})
    libraries = _shared_libraries(path for path in files if path == PYTHON or path.endswith(".so"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        added: set[str] = set()
        for name in ("lib", "lib64", "bin", "sbin"):  # merged-/usr hosts: keep the links
            if os.path.islink(f"/{name}"):
                _add_link(tar, name, os.readlink(f"/{name}"), added)
        for path in [*files, *libraries]:
            _add_file(tar, _image_path(path), _stripped(path), 0o755, added)
        _add_dir(tar, _image_path(_dynload_dir()), added)  # Python's exec_prefix landmark
        script = f"#!{PYTHON} -u\n".encode() + SERVER.read_bytes()
        _add_file(tar, "usr/local/bin/vllm", script, 0o755, added)
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                  b"vllm:x:1000:1000:vllm:/home/vllm:/bin/sh\n", 0o644, added)
        _add_file(tar, "etc/group", b"root:x:0:\nvllm:x:1000:\n", 0o644, added)
        _add_dir(tar, "home/vllm", added, uid=VLLM_UID)
        _add_dir(tar, "tmp", added, mode=0o1777)
    return buffer.getvalue()


def _module_files() -> list[str]:
    result = subprocess.run(
        [PYTHON, "-I", "-c", _LOADED_MODULES, str(SERVER), ",".join(_LEFT_OUT)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULE-FILES "))
    return [path for path in json.loads(line.split(" ", 1)[1]) if os.path.isfile(path)]


def _shared_libraries(binaries: Iterable[str]) -> set[str]:
    libraries: set[str] = set()
    for binary in binaries:
        output = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
        libraries.update(match.group(1) for match in _LDD_LINE.finditer(output))
    return libraries


def _stripped(path: str) -> bytes:
    """The file's bytes, without debug symbols where binutils' strip can remove them (pyenv's
    libpython carries 20 MB of them)."""
    data = Path(os.path.realpath(path)).read_bytes()
    if not data.startswith(b"\x7fELF") or not shutil.which("strip"):
        return data
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, "stripped")
        done = subprocess.run(["strip", "--strip-debug", "-o", target, os.path.realpath(path)],
                              capture_output=True, check=False)
        return Path(target).read_bytes() if done.returncode == 0 else data


def _dynload_dir() -> str:
    import sysconfig

    return sysconfig.get_path("platstdlib", vars={"platbase": sys.base_exec_prefix}) + "/lib-dynload"


def _image_path(path: str) -> str:
    """Where ``path`` goes in the image: its directory resolved (so /lib/x.so lands under the
    usr/lib that the image's /lib link points to), its own name kept (the name the loader asks
    for, not the versioned file a symlink points to)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path)).lstrip("/")


def _add_parents(tar: tarfile.TarFile, name: str, added: set[str]) -> None:
    parent = os.path.dirname(name)
    if parent and parent not in added:
        _add_dir(tar, parent, added)


def _add_dir(tar: tarfile.TarFile, name: str, added: set[str], *, mode: int = 0o755, uid: int = 0) -> None:
    if name in added:
        return
    _add_parents(tar, name, added)
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, uid
    tar.addfile(info)
    added.add(name)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int, added: set[str]) -> None:
    if name in added:
        return
    _add_parents(tar, name, added)
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))
    added.add(name)


def _add_link(tar: tarfile.TarFile, name: str, target: str, added: set[str]) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)
    added.add(name)
