"""The ``ocrd`` command line: ``version``, ``check-config``, ``print-config`` and the ``serve``
flags, through ``ocrd.cli.main.main(argv)`` and once through the installed console script."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ocrd import __version__
from ocrd.cli.main import EXIT_OK, EXIT_USAGE, build_parser, flag_overrides, main
from ocrd.config.loading import load_settings
from ocrd.config.tokens import hash_token
from tests.support.files import write

VENV_BIN = Path(sys.executable).parent


pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    return write(
        tmp_path / "good.toml",
        """
        log_level = "debug"
        runtime_dir = "/tmp/ocrd-test-runtime"
        [http]
        host = "0.0.0.0"
        port = 8100
        allow_remote_image_urls = true
        [grpc]
        socket = "/tmp/ocrd-test.sock"
        socket_mode = "0o600"
        socket_group = "ocrd"
        [scheduler]
        keep_alive = "10m"
        load_timeout = "250ms"
        [models."builtin/ppocr"]
        keep_alive = "1h30m"
        pinned = true
        [models.tesseract]
        queue_size = 2
        """,
    )


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    return write(tmp_path / "bad.toml", "[http]\nprot = 8080\n")


# --- version ------------------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == EXIT_OK

    assert capsys.readouterr().out == f"ocrd {__version__}\n"


# --- check-config -------------------------------------------------------------------------------


def test_check_config_accepts_a_good_file_and_names_it(
    good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(good_config)]) == EXIT_OK

    out = capsys.readouterr()
    assert "configuration OK" in out.out
    assert str(good_config) in out.out
    assert out.err == ""


def test_check_config_without_any_file_uses_builtin_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == EXIT_OK

    assert "built-in defaults" in capsys.readouterr().out


def test_check_config_rejects_a_bad_file_with_exit_2_and_one_stderr_line(
    bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(bad_config)]) == EXIT_USAGE

    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1
    assert "http.prot" in lines[0]
    assert str(bad_config) in lines[0]


def test_check_config_reports_a_bad_env_variable_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "eighty")

    assert main(["check-config"]) == EXIT_USAGE

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "http.port" in lines[0]
    assert "$OCRD_HTTP__PORT" in lines[0]


def test_check_config_reports_a_missing_named_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"

    assert main(["check-config", "--config", str(missing)]) == EXIT_USAGE

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert str(missing) in lines[0]


def test_check_config_reads_ocrd_config_variable(
    bad_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCRD_CONFIG", str(bad_config))

    assert main(["check-config"]) == EXIT_USAGE
    assert "http.prot" in capsys.readouterr().err


# --- print-config -------------------------------------------------------------------------------


def test_print_config_is_valid_toml_with_the_effective_values(
    good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["print-config", "--config", str(good_config)]) == EXIT_OK

    data = tomllib.loads(capsys.readouterr().out)
    assert data["log_level"] == "debug"
    assert data["http"]["host"] == "0.0.0.0"
    assert data["http"]["port"] == 8100
    assert data["grpc"]["socket_mode"] == "0600"
    assert data["scheduler"]["keep_alive"] == 600.0
    assert data["models"]["builtin/ppocr"]["pinned"] is True
    assert "config_path" not in data


def test_print_config_output_is_accepted_by_check_config_and_round_trips(
    good_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["print-config", "--config", str(good_config)]) == EXIT_OK
    printed = write(tmp_path / "printed.toml", capsys.readouterr().out)

    assert main(["check-config", "--config", str(printed)]) == EXIT_OK
    capsys.readouterr()

    assert load_settings(printed).model_dump() == load_settings(good_config).model_dump()


def test_print_config_of_the_defaults_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["print-config"]) == EXIT_OK
    printed = write(tmp_path / "printed.toml", capsys.readouterr().out)

    assert load_settings(printed).model_dump() == load_settings().model_dump()


def test_print_config_includes_env_overrides(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "9123")

    assert main(["print-config"]) == EXIT_OK

    assert tomllib.loads(capsys.readouterr().out)["http"]["port"] == 9123


def test_print_config_json_matches_the_settings(
    good_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["print-config", "--json", "--config", str(good_config)]) == EXIT_OK

    data = json.loads(capsys.readouterr().out)
    assert data == load_settings(good_config).model_dump(mode="json")
    assert data["grpc"]["socket_mode"] == "0600"


@pytest.fixture
def every_table_config(good_config: Path, tmp_path: Path) -> Path:
    """good_config plus one of each table that repeats, each with keys left unset."""
    return write(
        tmp_path / "every-table.toml",
        good_config.read_text()
        + textwrap.dedent(f"""
        [[upstreams]]
        model = "remote/ocr"
        url = "http://ocr.example:8000/v1"
        [[http.api_keys]]
        name = "app"
        hash = "{hash_token("app-key")}"
        [[grpc.tokens]]
        name = "alice"
        role = "admin"
        hash = "{hash_token("alice-token")}"
        """),
    )


def assert_every_key_shown(settings: BaseModel, shown: dict[str, Any], where: str = "") -> None:
    """Every field of the settings, walked down through sections, [models."ID"] and [[upstreams]]
    tables, is a key of the same table of what print-config printed."""
    for name, field in type(settings).model_fields.items():
        if field.exclude:
            continue
        assert name in shown, f"print-config leaves out {where}{name}"
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            assert_every_key_shown(value, shown[name], f"{where}{name}.")
        elif isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
            for key, entry in value.items():
                assert_every_key_shown(entry, shown[name][key], f"{where}{name}.{key}.")
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            assert len(shown[name]) == len(value)
            for index, entry in enumerate(value):
                assert_every_key_shown(entry, shown[name][index], f"{where}{name}[{index}].")


UNSET_LINE = re.compile(r"^# (\S+) = \(unset(: .+)?\)$", re.MULTILINE)


def test_print_config_shows_every_key_an_unset_one_as_a_comment(
    every_table_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["print-config", "--config", str(every_table_config)]) == EXIT_OK
    printed = capsys.readouterr().out
    settings = load_settings(every_table_config)

    # Uncommented, the unset keys take their place in their tables.
    assert_every_key_shown(settings, tomllib.loads(UNSET_LINE.sub(r'\1 = "unset"', printed)))
    assert "# tls_cert = (unset)" in printed.splitlines()
    assert "# python = (unset: the one running ocrd)" in printed.splitlines()
    assert ("# hub_dir = (unset: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)"
            in printed.splitlines())
    assert "# timeout = (unset: http.request_timeout)" in printed.splitlines()  # [[upstreams]]
    assert "# keep_alive = (unset: scheduler.keep_alive applies)" in printed.splitlines()
    # As printed, the same configuration.
    again = write(tmp_path / "printed.toml", printed)
    assert main(["check-config", "--config", str(again)]) == EXIT_OK
    assert load_settings(again).model_dump() == settings.model_dump()


def test_print_config_of_the_defaults_shows_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["print-config"]) == EXIT_OK
    printed = capsys.readouterr().out

    assert_every_key_shown(load_settings(), tomllib.loads(UNSET_LINE.sub(r'\1 = "unset"', printed)))
    assert printed.startswith("# The configuration in effect: built-in defaults < OCRD_* variables.")


def test_print_config_with_a_bad_file_fails_like_check_config(
    bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["print-config", "--config", str(bad_config)]) == EXIT_USAGE

    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.splitlines()) == 1


# --- serve flags --------------------------------------------------------------------------------


def serve_overrides(*argv: str) -> dict:
    return flag_overrides(build_parser().parse_args(["serve", *argv]))


def test_serve_flags_land_in_the_settings(tmp_path: Path) -> None:
    overrides = serve_overrides(
        "--port", "9001",
        "--host", "::1",
        "--socket", str(tmp_path / "ctl.sock"),
        "--runtime-dir", str(tmp_path / "run"),
        "--log-level", "warning",
    )  # fmt: skip

    settings = load_settings(None, overrides)

    assert settings.http.port == 9001
    assert settings.http.host == "::1"
    assert settings.grpc.socket == tmp_path / "ctl.sock"
    assert settings.runtime_dir == tmp_path / "run"
    assert settings.log_level == "warning"


def test_serve_without_flags_overrides_nothing() -> None:
    assert serve_overrides() == {}


def test_port_zero_flag_is_kept() -> None:
    # 0 means "any free port": it must not be mistaken for "flag not given".
    assert load_settings(None, serve_overrides("--port", "0")).http.port == 0


def test_flags_win_over_env_and_file_and_keep_their_other_keys(
    good_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "9000")
    monkeypatch.setenv("OCRD_LOG_LEVEL", "error")

    settings = load_settings(good_config, serve_overrides("--port", "9002"))

    assert settings.http.port == 9002  # flag beats env (9000) and file (8100)
    assert settings.http.host == "0.0.0.0"  # file, same section
    assert settings.log_level == "error"  # env, not set by a flag
    assert settings.grpc.socket_mode == 0o600  # file, socket flag not given


def test_socket_flag_keeps_the_files_socket_mode(good_config: Path, tmp_path: Path) -> None:
    settings = load_settings(good_config, serve_overrides("--socket", str(tmp_path / "s.sock")))

    assert settings.grpc.socket == tmp_path / "s.sock"
    assert settings.grpc.socket_mode == 0o600
    assert settings.grpc.socket_group == "ocrd"


def test_invalid_log_level_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--log-level", "verbose"])

    assert caught.value.code == EXIT_USAGE
    assert "verbose" in capsys.readouterr().err
