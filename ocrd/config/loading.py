"""Building the settings from their layers, and saying in one line what is wrong with them.

Precedence, lowest first: built-in defaults < TOML file (``/etc/ocrd/ocrd.toml`` when it exists,
or ``--config`` / ``$OCRD_CONFIG``) < ``OCRD_*`` environment variables < command-line flags. An
invalid value is one ``ConfigError`` line naming the key and where it came from (the file, the
variable or the command line); values of secrets are never echoed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from ocrd.config.settings import Settings
from ocrd.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/ocrd/ocrd.toml")
ENV_CONFIG = "OCRD_CONFIG"


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> tuple[Path | None, bool]:
    """The file to read and whether it must exist (named by flag or env) or may be absent."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env), True
    return DEFAULT_CONFIG_PATH, False


def read_config_file(path: Path | None, required: bool) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable by this user") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_settings(
    config: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Builds the settings from every layer; raises ConfigError with one line naming the key."""
    path, required = resolve_config_path(config)
    data = read_config_file(path, required)
    layered = type("Settings", (Settings,), {
        "file_layer": data, "__annotations__": {"file_layer": ClassVar[dict[str, Any]]}})
    try:
        settings = layered(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(
            _describe_validation_error(exc, path if data else None, overrides or {})
        ) from None
    settings.config_path = path if data or required else None
    return settings


# Keys whose bad values are never echoed in an error message.
_SECRET_KEYS = {"tokens", "hash", "api_keys"}


def _describe_validation_error(
    exc: ValidationError, path: Path | None, overrides: dict[str, Any]
) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        what = "unknown key"
    else:
        got = error.get("input")
        # A whole list (e.g. [[upstreams]]) would bury the message; its items name themselves.
        # A value under a secret's key may be the secret itself (a token pasted as its hash).
        quiet = isinstance(got, list) or any(str(part) in _SECRET_KEYS for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")  # pydantic's words, not the user's
        what = message if quiet else f"{message} (got {got!r})"
    env_name = _env_variable(error["loc"])
    if _lookup(overrides, error["loc"]):
        where = " (from the command line)"
    elif env_name:
        where = f" (from ${env_name})"
    else:
        where = f" in {path}" if path else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {what}{where}{more}"


def _env_variable(loc: tuple[Any, ...]) -> str:
    """The OCRD_* variable set for the key at ``loc``, or for a table or list holding it (a bad
    item of ``OCRD_HTTP__API_KEYS='[...]'`` is at ``http.api_keys.0.hash``): the longest set; ""."""
    for end in range(len(loc), 0, -1):
        name = "OCRD_" + "__".join(str(part) for part in loc[:end]).upper()
        if name in os.environ:
            return name
    return ""


def _lookup(tree: dict[str, Any], path: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# OCRD_* variables that are not settings: read by ocrctl, runners or the test tooling.
_NON_SETTING_VARIABLES = {"OCRD_CONFIG", "OCRD_ADDRESS", "OCRD_PARENT_PID", "OCRD_TOKEN",
                          "OCRD_API_KEY"}


def unknown_env_variables(environ: dict[str, str] | None = None) -> list[str]:
    """``OCRD_*`` variables that name no setting (``OCRD_HTTP_PORT`` for ``OCRD_HTTP__PORT``):
    pydantic-settings ignores them silently, so the CLI warns about them."""
    environ = dict(os.environ if environ is None else environ)
    known: set[str] = set()
    for name, field in Settings.model_fields.items():
        if field.exclude:
            continue
        known.add(f"OCRD_{name.upper()}")
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            known.update(f"OCRD_{name.upper()}__{sub.upper()}" for sub in annotation.model_fields)
    return sorted(
        key for key in environ
        if key.startswith("OCRD_") and key not in known and key not in _NON_SETTING_VARIABLES
        and not key.startswith("OCRD_MODELS__") and not key.startswith("OCRD_TEST")
        and not key.startswith("OCRD_REQUIRE_")
    )
