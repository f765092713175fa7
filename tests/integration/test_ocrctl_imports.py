"""ocrctl is a thin client: it imports the generated stubs and ocrd.addresses, never the
daemon's internals (which would slow it down and tie it to one daemon version)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Every ocrd module ocrctl may have loaded (the package __init__s come with any submodule).
ALLOWED_OCRD = {
    "ocrd", "ocrd.control", "ocrd.addresses",
    "ocrd.control.v1", "ocrd.control.v1.control_pb2", "ocrd.control.v1.control_pb2_grpc",
}
FORBIDDEN = {
    # (grpc_health and grpc_reflection are not listed: `import grpc` itself loads them when
    # installed, to alias them as grpc.health and grpc.reflection.)
    "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_settings", "prometheus_client",
    "rapidocr", "onnxruntime", "cv2", "torch", "transformers",
    "sdnotify", "PIL",
}
PROBE = """
import json, sys
import ocrctl.__main__ as entry
entry.build_parser()  # imports every command module
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


def test_ocrctl_imports_only_the_stubs_and_the_address_module_of_ocrd():
    modules = loaded_modules()
    assert "ocrctl.commands.ocr" in modules and "ocrd.control.v1.control_pb2_grpc" in modules
    ocrd_modules = {m for m in modules if m == "ocrd" or m.startswith("ocrd.")}
    assert ocrd_modules <= ALLOWED_OCRD, ocrd_modules - ALLOWED_OCRD
    tops = {m.split(".")[0] for m in modules}
    assert not tops & FORBIDDEN, tops & FORBIDDEN


def test_httpx_is_imported_only_by_the_command_that_needs_it():
    # Every other command starts faster without it.
    assert "httpx" not in loaded_modules()
