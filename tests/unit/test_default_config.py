"""packaging/ocrd.toml, the documented default configuration: exactly what `ocrd default-config`
makes from the code (if this fails, run scripts/gen-default-config and commit the result), every
setting in it, and every value in it the real default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from ocrd.cli.default_config import (
    UndocumentedSetting,
    _item_class,
    duration_text,
    render_default_config,
)
from ocrd.cli.main import main
from ocrd.config.loading import load_settings
from ocrd.config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "packaging" / "ocrd.toml"
# `#key = value` (no space after '#') is a commented-out setting; prose starts with '# '.
COMMENTED_KEY = re.compile(r"^#(?=[A-Za-z_\"])(.* = .*)$", re.MULTILINE)
# What the file shows for the defaults that depend on who runs ocrd (see HOST_DEPENDENT).
SERVICE_VALUES = {"runtime_dir": "/run/ocrd", "state_dir": "/var/lib/ocrd",
                  "grpc": {"socket": "/run/ocrd/ocrd.sock"}}


@pytest.fixture(autouse=True)
def _no_ocrd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OCRD_"):
            monkeypatch.delenv(name)


def test_committed_default_config_is_what_ocrd_default_config_prints(capsys):
    assert main(["default-config"]) == 0
    printed = capsys.readouterr().out
    assert printed == render_default_config()
    assert printed == COMMITTED.read_text(encoding="utf-8"), (
        "packaging/ocrd.toml is stale: run scripts/gen-default-config and commit the result")


def test_the_file_as_shipped_changes_nothing(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_settings(COMMITTED).model_dump() == load_settings(empty).model_dump()


def test_uncommenting_every_key_gives_the_built_in_defaults(tmp_path):
    text = COMMENTED_KEY.sub(r"\1", COMMITTED.read_text(encoding="utf-8"))
    uncommented = tmp_path / "uncommented.toml"
    uncommented.write_text(text)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    defaults = load_settings(empty, SERVICE_VALUES)
    assert load_settings(uncommented).model_dump() == defaults.model_dump()

    # ... and every setting is there: as a key, or (unset by default, or a repeated table) in prose.
    data = tomllib.loads(text)
    for name, field in Settings.model_fields.items():
        if field.exclude:
            continue
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key, sub in section.model_fields.items():
                assert key in data[name] or _in_prose(f"{name}.{key}", sub), f"{name}.{key}"
        else:
            assert name in data or _in_prose(name, field), name


def _in_prose(where: str, field) -> bool:
    """A key the file can only describe: unset by default, or a table that repeats."""
    text = COMMITTED.read_text(encoding="utf-8")
    if _item_class(field.annotation) is not None:
        return f"[{where}." in text or f"[[{where}]]" in text
    key = where.rsplit(".", 1)[-1]
    return (field.get_default(call_default_factory=True) is None
            and f"\n# {key}: unset by default.\n" in text)


def test_a_setting_without_a_description_cannot_be_documented(monkeypatch):
    monkeypatch.setattr(Settings.model_fields["default_model"], "description", None)
    with pytest.raises(UndocumentedSetting, match="default_model has no description"):
        render_default_config()


@pytest.mark.parametrize("seconds, text", [
    (300, "5m"), (600, "10m"), (30, "30s"), (2, "2s"), (3600, "1h"), (5400, "90m"),
    (0.25, "250ms"), (0, "0s"), (1.5, "1500ms"),
])
def test_durations_are_written_the_way_people_write_them(seconds, text):
    assert duration_text(seconds) == text
