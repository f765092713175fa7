"""Models pinned by a load come back after a restart (state_dir/pinned.json); one unloaded by
request does not. A real ``ocrd serve`` with the builtin engines, restarted on one state_dir."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.daemon import running_daemon, wait_until


def config(state_dir: Path) -> dict:
    return {"state_dir": state_dir}


def state(models: dict, model: str) -> str:
    """A model's state in ``ocrctl ps --json`` (which lists loaded and loading models only)."""
    return models.get(model, {}).get("state", "MODEL_STATE_NOT_LOADED")


def pinned_file(state_dir: Path) -> list[str]:
    return [entry["model"] for entry in json.loads((state_dir / "pinned.json").read_text())["models"]]


def test_a_pinned_model_is_loaded_again_after_a_restart_and_an_unloaded_one_is_not(tmp_path):
    with running_daemon(config(tmp_path)) as first:
        assert first.ocrctl("load", "ppocr", "--pin", "--keep-alive", "5m").returncode == 0
        assert first.ocrctl("load", "tesseract").returncode == 0  # loaded, not pinned
        assert pinned_file(tmp_path) == ["builtin/ppocr"]
        assert (tmp_path / "pinned.json").stat().st_mode & 0o777 == 0o600

    with running_daemon(config(tmp_path)) as second:
        models = wait_until(lambda: (ps := second.ps())["builtin/ppocr"]["state"] == "MODEL_STATE_READY" and ps,
                            timeout=120, interval=0.25)
        assert models["builtin/ppocr"]["pinned"] is True
        assert state(models, "builtin/tesseract") == "MODEL_STATE_NOT_LOADED"
        assert "pinned model builtin/ppocr loaded again" in second.stderr()
        assert second.ocrctl("unload", "ppocr").returncode == 0
        assert pinned_file(tmp_path) == []

    with running_daemon(config(tmp_path)) as third:
        assert state(third.ps(), "builtin/ppocr") == "MODEL_STATE_NOT_LOADED"


def test_a_pins_file_ocrd_cannot_read_is_one_warning_and_nothing_loaded(tmp_path):
    (tmp_path / "pinned.json").write_text("{not json")
    with running_daemon(config(tmp_path)) as daemon:
        wait_until(lambda: "is not a list of pinned models" in daemon.stderr(), timeout=60)
        assert state(daemon.ps(), "builtin/ppocr") == "MODEL_STATE_NOT_LOADED"
