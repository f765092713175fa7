"""Model ids and revisions as clients send them, checked before they reach a lookup, a path or the Hub.

Every name a client gives for a model (HTTP ``model`` fields and ``/v1/models/{id}``, every gRPC
request's ``model``) must have the shape of a Hugging Face repo id: ``NAME`` or ``ORG/NAME``, ASCII
letters, digits, ``-``, ``_`` and ``.``, no ``..`` or ``--``, at most 96 characters a part
(``huggingface_hub.utils.validate_repo_id`` is the rule, plus ASCII only). Catalog ids and aliases
(``builtin/ppocr``, ``dots.ocr``) and upstream names have that shape too. So ``../``, absolute
paths, backslashes, NUL and other control characters never get past the transport: they are an
``InvalidRequest`` (HTTP 400, gRPC INVALID_ARGUMENT) naming the field, not a 404 after a lookup
that may already have touched the file system, nor a 500 from a library that refuses them later.

Requests may add a preset after the last ``:`` (``dots.ocr:layout``); a preset name is a plain word.
Revisions (a branch, tag or commit) become file names under ``refs/`` in the cache, so they get
the same treatment: git-ref characters only, no ``..``, no leading or doubled ``/``.
"""

from __future__ import annotations

import re

from ocrd.catalog.catalog import PRESET_SEPARATOR
from ocrd.errors import InvalidRequest

# validate_repo_id's own pattern uses \w, which admits any Unicode letter; the Hub does not.
_ASCII_ID = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?")
_PRESET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REVISION = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
MAX_REVISION_LENGTH = 255
# For ocrd's OpenAPI document: the shape, not every rule (no "..", "--", length), which
# check_model_name adds.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$"
REQUEST_MODEL_PATTERN = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?(:[A-Za-z0-9._-]+)?$"
_SHOWN = 100  # characters of a refused value repeated in the message


def is_model_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hugging Face repo id (``NAME`` or ``ORG/NAME``)."""
    if not isinstance(name, str) or not _ASCII_ID.fullmatch(name):
        return False
    from huggingface_hub.errors import HFValidationError  # ~20 ms (httpx2): at first use, not at start
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_model_name(name: str, *, param: str = "model", allow_preset: bool = False) -> str:
    """``name`` itself if it may name a model (``MODEL:PRESET`` too with ``allow_preset``), else
    ``InvalidRequest`` saying what a model name looks like."""
    if not name:
        raise InvalidRequest("a model name is required: the id or alias of a model", param=param)
    model, preset = name, None
    if allow_preset and isinstance(name, str) and PRESET_SEPARATOR in name:
        model, _, preset = name.rpartition(PRESET_SEPARATOR)
    if not is_model_id(model):
        raise InvalidRequest(
            f"{_shown(name)} is not a valid model name: use a model ocrd lists (GET /v1/models, "
            "`ocrctl models`) or a Hugging Face repo id ORG/NAME (ASCII letters, digits, '-', '_', "
            "'.'; no '..', '--', spaces or path characters)",
            param=param,
        )
    # An empty preset ("dots.ocr:") is left to the preset lookup, which says so in its own words.
    if preset and not _PRESET.fullmatch(preset):
        raise InvalidRequest(
            f"{_shown(name)}: {_shown(preset)} is not a valid preset name (letters, digits, '-', "
            "'_', '.')",
            param=param,
        )
    return name


def check_optional_model_name(name: str, *, param: str = "model") -> str:
    """As ``check_model_name``, for fields where empty means "none" or "the default"."""
    return check_model_name(name, param=param) if name else name


def check_revision(revision: str, *, param: str = "revision") -> str:
    """``revision`` itself (empty: the default) if it may be a branch, tag or commit, else
    ``InvalidRequest``."""
    if not revision:
        return revision
    if (
        len(revision) > MAX_REVISION_LENGTH
        or not _REVISION.fullmatch(revision)
        or ".." in revision
        or revision.endswith(".lock")
    ):
        raise InvalidRequest(
            f"{_shown(revision)} is not a valid revision: use a branch, a tag or a commit hash "
            "(ASCII letters, digits, '-', '_', '.', '/'; no '..')",
            param=param,
        )
    return revision


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    return repr(text[:_SHOWN] + ("..." if len(text) > _SHOWN else ""))
