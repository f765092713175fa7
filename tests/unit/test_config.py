"""ocrd.config: the layers (defaults < TOML file < $OCRD_* < flags), their deep merge, and the
one-line ConfigError that names the key and where the bad value came from. Real files in
tmp_path, real environment variables through monkeypatch."""

from __future__ import annotations

from pathlib import Path

import pytest

import ocrd.config.loading as config
from ocrd.config.loading import load_settings
from ocrd.config.settings import ModelSettings, Settings, model_overrides
from ocrd.config.units import parse_duration
from ocrd.errors import ConfigError
from tests.support.files import write

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "ocrd.toml",
        """
        log_level = "debug"
        [http]
        host = "0.0.0.0"
        port = 8100
        [scheduler]
        keep_alive = "5m"
        queue_size = 3
        """,
    )


# --- defaults ---------------------------------------------------------------------------------


def test_without_file_env_or_flags_every_setting_has_its_builtin_default() -> None:
    settings = load_settings()

    assert settings.log_level == "info"
    assert settings.default_model == "builtin/ppocr"
    assert settings.http.host == "127.0.0.1"
    assert settings.http.port == 8000
    assert settings.http.allow_remote_image_urls is False
    assert settings.http.request_timeout == 600.0
    assert settings.grpc.socket_mode == 0o660
    assert settings.grpc.socket_group is None
    assert settings.grpc.socket.name == "ocrd.sock"
    assert settings.scheduler.keep_alive == 300.0
    assert settings.scheduler.queue_size == 16
    assert settings.scheduler.auto_load is True
    assert settings.scheduler.max_loaded_models == 0
    assert settings.limits.max_body_bytes == 64 * 1024 * 1024
    assert settings.builtin.tesseract_cmd == "tesseract"
    assert settings.models == {}
    assert settings.config_path is None


def test_defaults_equal_a_plain_settings_object() -> None:
    assert load_settings().model_dump() == Settings().model_dump()


# --- the file layer ---------------------------------------------------------------------------


def test_file_overrides_defaults_and_keeps_the_keys_it_does_not_set(config_file: Path) -> None:
    settings = load_settings(config_file)

    assert settings.log_level == "debug"
    assert settings.http.host == "0.0.0.0"
    assert settings.http.port == 8100
    assert settings.scheduler.keep_alive == 300.0  # "5m"
    assert settings.scheduler.queue_size == 3
    # Keys of the same sections the file does not mention keep their defaults.
    assert settings.http.request_timeout == 600.0
    assert settings.scheduler.auto_load is True
    assert settings.default_model == "builtin/ppocr"
    assert settings.config_path == config_file


def test_ocrd_config_variable_names_the_file_when_no_path_is_given(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCRD_CONFIG", str(config_file))

    settings = load_settings()

    assert settings.http.host == "0.0.0.0"
    assert settings.config_path == config_file


def test_explicit_path_wins_over_ocrd_config_variable(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = write(tmp_path / "other.toml", '[http]\nhost = "10.0.0.1"\n')
    monkeypatch.setenv("OCRD_CONFIG", str(config_file))

    assert load_settings(other).http.host == "10.0.0.1"


def test_default_config_file_is_read_when_it_exists(tmp_path: Path) -> None:
    default = tmp_path / "etc" / "ocrd.toml"
    default.parent.mkdir()
    write(default, '[http]\nhost = "192.0.2.1"\n')

    settings = load_settings()

    assert settings.http.host == "192.0.2.1"
    assert settings.config_path == default


def test_missing_default_config_file_is_fine() -> None:
    assert not config.DEFAULT_CONFIG_PATH.exists()

    assert load_settings().http.port == 8000


def test_missing_explicitly_named_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as caught:
        load_settings(missing)

    assert str(missing) in caught.value.message
    assert "does not exist" in caught.value.message


def test_missing_file_named_by_ocrd_config_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("OCRD_CONFIG", str(missing))

    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_settings()

    assert str(missing) in caught.value.message


# --- the environment layer ---------------------------------------------------------------------


def test_nested_env_variables_override_the_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "9000")
    monkeypatch.setenv("OCRD_SCHEDULER__KEEP_ALIVE", "10m")
    monkeypatch.setenv("OCRD_LOG_LEVEL", "warning")

    settings = load_settings(config_file)

    assert settings.http.port == 9000
    assert settings.scheduler.keep_alive == 600.0
    assert settings.log_level == "warning"


def test_env_and_file_deep_merge_within_one_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "ocrd.toml", '[http]\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("OCRD_HTTP__PORT", "9000")

    settings = load_settings(path)

    assert settings.http.host == "0.0.0.0"  # from the file
    assert settings.http.port == 9000  # from the environment


def test_env_overrides_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "9001")

    settings = load_settings()

    assert settings.http.port == 9001
    assert settings.http.host == "127.0.0.1"


def test_env_can_set_per_model_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRD_MODELS__PPOCR__PINNED", "true")

    assert load_settings().models["ppocr"].pinned is True


# --- the flags layer (overrides dict) --------------------------------------------------------


def test_overrides_win_over_env_and_file_and_keep_the_rest(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "9000")
    monkeypatch.setenv("OCRD_SCHEDULER__QUEUE_SIZE", "5")

    settings = load_settings(config_file, {"http": {"port": 9500}, "log_level": "error"})

    assert settings.http.port == 9500  # flag beats env
    assert settings.log_level == "error"  # flag beats file
    assert settings.http.host == "0.0.0.0"  # file key in the same section survives
    assert settings.scheduler.queue_size == 5  # env key the flags do not set survives
    assert settings.scheduler.keep_alive == 300.0  # file key the flags do not set survives


def test_overrides_and_env_deep_merge_within_one_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRD_HTTP__HOST", "0.0.0.0")

    settings = load_settings(None, {"http": {"port": 1234}})

    assert settings.http.host == "0.0.0.0"
    assert settings.http.port == 1234


# --- errors: one line, naming the key and the source ------------------------------------------


def assert_one_line(error: ConfigError) -> str:
    assert "\n" not in error.message
    return error.message


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", "[http\nport = 1\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = assert_one_line(caught.value)
    assert str(path) in message
    assert "not valid TOML" in message


def test_unknown_key_in_file_names_dotted_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", "[http]\nprot = 8080\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = assert_one_line(caught.value)
    assert message.startswith("http.prot:")
    assert "unknown key" in message
    assert str(path) in message


def test_unknown_top_level_section_in_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", "[htp]\nport = 8080\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert assert_one_line(caught.value).startswith("htp:")


def test_wrong_type_in_file_names_dotted_key_value_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[http]\nport = "eighty"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = assert_one_line(caught.value)
    assert message.startswith("http.port:")
    assert "'eighty'" in message
    assert str(path) in message


def test_out_of_range_value_in_file_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", "[http]\nport = 70000\n")

    with pytest.raises(ConfigError, match=r"^http\.port:"):
        load_settings(path)


def test_wrong_type_in_env_names_the_variable_not_the_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCRD_HTTP__PORT", "eighty")

    with pytest.raises(ConfigError) as caught:
        load_settings(config_file)

    message = assert_one_line(caught.value)
    assert message.startswith("http.port:")
    assert "$OCRD_HTTP__PORT" in message
    assert str(config_file) not in message


def test_unknown_nested_key_in_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRD_HTTP__PROT", "8080")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = assert_one_line(caught.value)
    assert message.startswith("http.prot:")
    assert "unknown key" in message
    assert "$OCRD_HTTP__PROT" in message


def test_bad_duration_in_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRD_SCHEDULER__KEEP_ALIVE", "5 parsecs")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = assert_one_line(caught.value)
    assert message.startswith("scheduler.keep_alive:")
    assert "$OCRD_SCHEDULER__KEEP_ALIVE" in message


def test_a_bad_item_of_a_list_in_env_names_the_variable_not_the_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCRD_HTTP__API_KEYS", '[{"name": "app", "hash": "the-key-itself"}]')

    with pytest.raises(ConfigError) as caught:
        load_settings(config_file)

    message = assert_one_line(caught.value)
    assert message.startswith("http.api_keys.0.hash:")
    assert "$OCRD_HTTP__API_KEYS)" in message
    assert str(config_file) not in message and "the-key-itself" not in message


def test_bad_per_model_value_names_the_model_key(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[models."builtin/ppocr"]\npinned = "sometimes"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = assert_one_line(caught.value)
    assert message.startswith("models.builtin/ppocr.pinned:")
    assert str(path) in message


def test_invalid_log_level_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^log_level:"):
        load_settings(None, {"log_level": "verbose"})


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("42", 42.0),
        (42, 42.0),
        (0.5, 0.5),
        ("0", 0.0),
    ],
)
def test_duration_parses_seconds_and_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1", -1, "5 parsecs", "", "m", "5x", "30s5", "nan", True])
def test_duration_rejects_negative_and_malformed_values(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_in_file_is_converted_to_seconds(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[scheduler]\nkeep_alive = "1h30m"\ndrain_timeout = 42\n')

    settings = load_settings(path)

    assert settings.scheduler.keep_alive == 5400.0
    assert settings.scheduler.drain_timeout == 42.0


def test_negative_duration_in_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[scheduler]\nkeep_alive = "-1"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert caught.value.message.startswith("scheduler.keep_alive:")
    assert str(path) in caught.value.message


# --- socket_mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0660", "0o660", "660"])
def test_socket_mode_reads_octal_strings(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "ocrd.toml", f'[grpc]\nsocket_mode = "{text}"\n')

    assert load_settings(path).grpc.socket_mode == 0o660


def test_socket_mode_from_env_is_octal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCRD_GRPC__SOCKET_MODE", "0600")

    assert load_settings().grpc.socket_mode == 0o600


def test_socket_mode_serialises_back_to_octal_text(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[grpc]\nsocket_mode = "0o660"\n')

    settings = load_settings(path)

    assert settings.model_dump()["grpc"]["socket_mode"] == "0660"
    assert settings.model_dump(mode="json")["grpc"]["socket_mode"] == "0660"


@pytest.mark.parametrize("text", ["rw-rw----", "0999"])
def test_socket_mode_rejects_non_octal_text(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "ocrd.toml", f'[grpc]\nsocket_mode = "{text}"\n')

    with pytest.raises(ConfigError, match=r"^grpc\.socket_mode:"):
        load_settings(path)


def test_socket_mode_rejects_modes_beyond_0777(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[grpc]\nsocket_mode = "01777"\n')

    with pytest.raises(ConfigError, match=r"^grpc\.socket_mode:"):
        load_settings(path)


# --- per-model overrides -----------------------------------------------------------------------


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "ocrd.toml",
        """
        [models."builtin/ppocr"]
        keep_alive = "1h"
        pinned = true

        [models.tesseract]
        queue_size = 2
        """,
    )


def test_model_overrides_are_found_by_canonical_id(models_file: Path) -> None:
    settings = load_settings(models_file)

    found = model_overrides(settings, "builtin/ppocr", ["ppocr"])

    assert found.keep_alive == 3600.0
    assert found.pinned is True
    assert found.queue_size is None


def test_model_overrides_are_found_by_alias(models_file: Path) -> None:
    settings = load_settings(models_file)

    found = model_overrides(settings, "builtin/tesseract", ["tesseract"])

    assert found.queue_size == 2
    assert found.pinned is False


def test_model_overrides_prefer_the_id_over_an_alias(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ocrd.toml",
        '[models."builtin/ppocr"]\nqueue_size = 1\n[models.ppocr]\nqueue_size = 9\n',
    )

    found = model_overrides(load_settings(path), "builtin/ppocr", ["ppocr"])

    assert found.queue_size == 1


def test_model_without_overrides_gets_empty_model_settings(models_file: Path) -> None:
    found = model_overrides(load_settings(models_file), "org/other", ["other"])

    assert found == ModelSettings()



# --- review fixes: where a bad value came from, unknown variables, non-finite durations -------


def test_bad_flag_value_is_blamed_on_the_command_line_not_the_file(config_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file, {"http": {"port": 70000}})

    assert caught.value.message.startswith("http.port: ")
    assert "(from the command line)" in caught.value.message
    assert str(config_file) not in caught.value.message


def test_misspelled_ocrd_variable_is_reported_and_real_settings_are_not() -> None:
    environ = {
        "OCRD_HTTP_PORT": "9000",  # single underscore: not a setting
        "OCRD_HTTP__PORT": "9000",
        "OCRD_LOG_LEVEL": "debug",
        "OCRD_MODELS__PPOCR__PINNED": "true",
        "OCRD_ADDRESS": "/run/ocrd/ocrd.sock",  # ocrctl's, not a daemon setting
        "PATH": "/usr/bin",
    }

    assert config.unknown_env_variables(environ) == ["OCRD_HTTP_PORT"]


@pytest.mark.parametrize("value", ["inf", "nan", float("inf")])
def test_non_finite_durations_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)


@pytest.mark.parametrize("section, arguments, flag", [
    ("[vllm]\nargs", '["--port", "9000"]', "--port"),
    ('[models."dots.ocr"]\nvllm_args', '["--gpu_memory_utilization=0.5"]', "--gpu-memory-utilization"),
    ('[models."dots.ocr"]\nvllm_args', '["--served-model-name", "x"]', "--served-model-name"),
])
def test_vllm_arguments_may_not_set_the_flags_ocrd_sets_itself(tmp_path: Path, section: str,
                                                                arguments: str, flag: str) -> None:
    path = write(tmp_path / "ocrd.toml", f"{section} = {arguments}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = assert_one_line(caught.value)
    assert f"{flag} is set by ocrd itself" in message and "Value error" not in message
    assert message.startswith("vllm.args:" if section == "[vllm]\nargs" else "models.dots.ocr.vllm_args:")


def test_any_other_vllm_flag_is_accepted_in_either_form(tmp_path: Path) -> None:
    path = write(tmp_path / "ocrd.toml", '[vllm]\nargs = ["--disable-custom-all-reduce", "--max-model-len=8192"]\n'
                                         '[models."dots.ocr"]\nvllm_args = ["--max-num-seqs", "4"]\n'
                                         'gpu_memory_utilization = 0.3\n')
    settings = load_settings(path)
    assert settings.vllm.args == ["--disable-custom-all-reduce", "--max-model-len=8192"]
    assert settings.models["dots.ocr"].vllm_args == ["--max-num-seqs", "4"]
    assert settings.models["dots.ocr"].gpu_memory_utilization == 0.3


@pytest.mark.parametrize("share", ["0", "1.5", "-0.2"])
def test_a_gpu_share_outside_0_to_1_is_refused(tmp_path: Path, share: str) -> None:
    path = write(tmp_path / "ocrd.toml", f'[models."dots.ocr"]\ngpu_memory_utilization = {share}\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert assert_one_line(caught.value).startswith("models.dots.ocr.gpu_memory_utilization:")
