"""The daemon process never imports torch or transformers (DESIGN: "Process model").

Checked twice: in a real daemon that has served a request (nothing under a torch or transformers
path is mapped into its memory), and in a fresh interpreter that builds the daemon's whole object
graph (settings, Daemon with its scheduler and catalog, the FastAPI app).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.daemon import REPO, daemon_env, mapped_files, ocr_messages, running_daemon
from tests.support.render import render_text_image

HEAVY = ("torch", "transformers")


def test_a_serving_daemon_maps_no_torch_or_transformers_file():
    with running_daemon() as daemon, daemon.http() as http:
        response = http.post("/v1/chat/completions", json={
            "model": "ppocr", "messages": ocr_messages(render_text_image(["no torch here"]))})
        assert response.status_code == 200, response.text
        mapped = mapped_files(daemon.pid)
        # The check can see what it looks for: the daemon's own Python libraries are mapped.
        assert any("grpc" in path for path in mapped), sorted(mapped)[:20]
        assert [p for p in mapped if any(word in p.lower() for word in HEAVY)] == []


BUILD_THE_DAEMON = """
import json, shutil, sys, tempfile
from pathlib import Path
from ocrd.config.loading import load_settings
import ocrd.daemon
from ocrd.http.app import build_app

directory = Path(tempfile.mkdtemp(prefix="ocrd-i-", dir="/tmp"))
config = directory / "ocrd.toml"
config.write_text(f'runtime_dir = "{directory}"\\nstate_dir = "{directory}/state"\\n'
                  f'[grpc]\\nsocket = "{directory}/ocrd.sock"\\n')
daemon = ocrd.daemon.Daemon(load_settings(str(config)))
app = build_app(daemon.app_state)
assert [m.id for m in daemon.scheduler.models()][0] == "builtin/ppocr"
shutil.rmtree(directory)
tops = ("torch", "transformers", "ocrd", "grpc", "fastapi")
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in tops)))
"""


def test_building_the_daemon_imports_neither_torch_nor_transformers():
    result = subprocess.run([sys.executable, "-c", BUILD_THE_DAEMON], capture_output=True,
                            text=True, timeout=120, env=daemon_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert "ocrd.daemon" in modules and "fastapi" in modules and "grpc" in modules
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []


# Imported on first use, not on the way to READY (docs/benchmarks.md, start-up): cryptography
# (ocrd gen-certs, a TLS control plane), huggingface_hub's HTTP client and error module, and its
# file_download module with yaml (a pull, a cache lookup). What the daemon does up to READY=1:
# parse the command line, build the daemon and its app, write its status line.
FIRST_USE = ("cryptography", "httpx2", "yaml", "huggingface_hub.errors", "huggingface_hub.file_download")
UP_TO_READY = """
import json, shutil, sys, tempfile
from pathlib import Path
import ocrd.cli.main
import ocrd.daemon
from ocrd.config.loading import load_settings
from ocrd.http.app import build_app

directory = Path(tempfile.mkdtemp(prefix="ocrd-i-", dir="/tmp"))
config = directory / "ocrd.toml"
config.write_text(f'runtime_dir = "{directory}"\\nstate_dir = "{directory}/state"\\n'
                  f'[grpc]\\nsocket = "{directory}/ocrd.sock"\\n')
ocrd.cli.main.build_parser().parse_args(["serve", "--config", str(config)])
daemon = ocrd.daemon.Daemon(load_settings(str(config)))
app = build_app(daemon.app_state)
assert daemon.status_line().endswith("no model loaded")
shutil.rmtree(directory)
print(json.dumps(sorted(sys.modules)))
"""


def test_the_way_to_ready_leaves_first_use_imports_for_later():
    result = subprocess.run([sys.executable, "-c", UP_TO_READY], capture_output=True,
                            text=True, timeout=120, env=daemon_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "ocrd.cli.main" in modules and "ocrd.daemon" in modules and "fastapi" in modules
    assert sorted(m for m in modules if m.startswith(FIRST_USE)) == []
