"""The exception hierarchy (ocrd.errors): every class maps to a real gRPC status code, an HTTP
error status and OpenAI's error envelope; anything that is not an OcrdError is hidden."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest

import ocrd
import ocrd.errors as errors
from ocrd.errors import (
    GENERIC_INTERNAL_MESSAGE,
    CapacityExhausted,
    ConfigError,
    Conflict,
    EngineUnavailable,
    HubUnavailable,
    ImageNotFound,
    InsufficientMemory,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    NotImplementedYet,
    ObjectNotFound,
    OcrdError,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    RegistryUnavailable,
    RouterUnavailable,
    RunnerUnreachable,
    ShuttingDown,
    StorageFull,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
    as_ocrd_error,
)
from ocrd.http.errors import error_response
from ocrd.http.proxy import _PassThrough
from tests.support.openapi import SchemaMismatch, validate

OPENAI_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "rate_limit_error",
    "server_error",
}


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


# Only the classes ocrd.errors defines (tests elsewhere may subclass OcrdError).
ERROR_CLASSES = [OcrdError] + [
    cls for cls in all_subclasses(OcrdError) if cls.__module__ == errors.__name__
]


def instance(cls: type[OcrdError]) -> OcrdError:
    return cls(f"{cls.__name__} happened")


def test_hierarchy_is_discovered() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}

    assert {"ModelNotFound", "QueueFull", "ConfigError", "UpstreamTimeout"} <= names
    assert len(ERROR_CLASSES) >= 15


# What a client sees for each error: (HTTP status, gRPC status code). Written out here, not read
# back from the classes, so that a 409 turned into a 400 (or a 507 into a 500) fails.
STATUSES: dict[type[OcrdError], tuple[int, str]] = {
    OcrdError: (500, "INTERNAL"),
    InvalidRequest: (400, "INVALID_ARGUMENT"),
    PayloadTooLarge: (413, "INVALID_ARGUMENT"),
    Unauthenticated: (401, "UNAUTHENTICATED"),
    PermissionDenied: (403, "PERMISSION_DENIED"),
    ModelNotFound: (404, "NOT_FOUND"),
    ObjectNotFound: (404, "NOT_FOUND"),
    Conflict: (409, "FAILED_PRECONDITION"),
    QueueFull: (429, "RESOURCE_EXHAUSTED"),
    InsufficientMemory: (507, "RESOURCE_EXHAUSTED"),
    CapacityExhausted: (503, "RESOURCE_EXHAUSTED"),
    EngineUnavailable: (503, "UNAVAILABLE"),
    ModelNotReady: (503, "UNAVAILABLE"),
    RunnerUnreachable: (503, "UNAVAILABLE"),
    ModelLoadFailed: (503, "UNAVAILABLE"),
    ShuttingDown: (503, "UNAVAILABLE"),
    UpstreamError: (502, "UNAVAILABLE"),
    UpstreamTimeout: (504, "DEADLINE_EXCEEDED"),
    HubUnavailable: (503, "UNAVAILABLE"),
    ImageNotFound: (404, "NOT_FOUND"),
    RegistryUnavailable: (503, "UNAVAILABLE"),
    RouterUnavailable: (503, "UNAVAILABLE"),
    StorageFull: (507, "RESOURCE_EXHAUSTED"),
    NotImplementedYet: (501, "UNIMPLEMENTED"),
    ConfigError: (500, "FAILED_PRECONDITION"),
    # A runner's own error answer, relayed with the runner's status (a 418 here); HTTP only.
    _PassThrough: (418, "INTERNAL"),
}


def error_classes_in_source() -> set[str]:
    """``module.Class`` for every class in ocrd's source that derives from OcrdError, read from
    the files (so a module that no test imports counts too)."""
    bases: dict[str, tuple[str, set[str]]] = {}  # class name -> (module, its base names)
    root = Path(ocrd.__file__).parent
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                bases[node.name] = (module, names)
    derived = {"OcrdError"}
    while grown := {name for name, (_, names) in bases.items() if names & derived} - derived:
        derived |= grown
    return {f"{bases[name][0]}.{name}" for name in derived}


def raised(cls: type[OcrdError]) -> OcrdError:
    if cls is _PassThrough:
        return _PassThrough({"error": {"message": "I'm a teapot", "type": "BadRequestError"}}, 418)
    return cls(f"{cls.__name__} happened")


def test_every_error_class_has_its_http_status_and_grpc_code() -> None:
    # A new error class fails here until it has its row.
    assert {f"{cls.__module__}.{cls.__name__}" for cls in STATUSES} == error_classes_in_source()
    seen = {}
    for cls in STATUSES:
        error = raised(cls)
        # The translators: ocrd.http.errors for HTTP, ocrd.control.errors (StatusCode[grpc_code]).
        seen[cls] = (error_response(error).status_code, grpc.StatusCode[error.grpc_code].name)
    assert seen == STATUSES


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_error_maps_to_a_grpc_status_code(cls: type[OcrdError]) -> None:
    code = grpc.StatusCode[cls.grpc_code]

    assert code is not grpc.StatusCode.OK


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_error_maps_to_an_http_error_status(cls: type[OcrdError]) -> None:
    assert 400 <= cls.http_status <= 599
    # Client errors are the client's fault in both vocabularies, server errors ocrd's.
    if cls.http_status >= 500:
        assert cls.openai_type == "server_error"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_error_has_a_known_openai_type(cls: type[OcrdError]) -> None:
    assert cls.openai_type in OPENAI_TYPES


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_to_openai_matches_openais_error_response_schema(cls: type[OcrdError]) -> None:
    error = instance(cls)

    body = error.to_openai()

    validate("ErrorResponse", body)
    assert body["error"]["message"] == f"{cls.__name__} happened"
    assert body["error"]["type"] == cls.openai_type
    assert body["error"]["code"] == cls.default_code


def test_to_openai_with_param_and_code_matches_the_schema() -> None:
    body = errors.InvalidRequest("bad temperature", param="temperature", code="bad_value").to_openai()

    validate("ErrorResponse", body)
    assert body == {
        "error": {
            "message": "bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "bad_value",
        }
    }


def test_schema_check_is_real() -> None:
    # The validator rejects an envelope without the required message, so the checks above bite.
    with pytest.raises(SchemaMismatch):
        validate("ErrorResponse", {"error": {"type": "server_error", "param": None, "code": None}})


def test_model_not_found_points_at_the_model_parameter() -> None:
    error = ModelNotFound("model 'x' does not exist")

    assert error.http_status == 404
    assert grpc.StatusCode[error.grpc_code] is grpc.StatusCode.NOT_FOUND
    assert error.to_openai()["error"]["param"] == "model"
    assert error.to_openai()["error"]["code"] == "model_not_found"


# --- QueueFull and Retry-After ------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [(5, 5), (1, 1), (0, 1), (-3, 1), (0.4, 1)])
def test_queue_full_retry_after_is_at_least_one_second(given: float, expected: int) -> None:
    error = QueueFull("queue of org/m is full", retry_after=given)

    assert error.retry_after == expected
    assert error.http_headers() == {"Retry-After": str(expected)}


def test_queue_full_is_429_resource_exhausted_with_a_default_retry_after() -> None:
    error = QueueFull("queue of org/m is full")

    assert error.http_status == 429
    assert grpc.StatusCode[error.grpc_code] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(error.http_headers()["Retry-After"]) >= 1
    validate("ErrorResponse", error.to_openai())


def test_other_errors_have_no_extra_headers() -> None:
    assert ModelNotFound("x").http_headers() == {}


# --- as_ocrd_error -------------------------------------------------------------------------------


def test_as_ocrd_error_passes_an_ocrd_error_through_unchanged() -> None:
    error = QueueFull("full", retry_after=3)

    assert as_ocrd_error(error) is error


@pytest.mark.parametrize(
    "exc", [ValueError("secret path /root/key"), KeyError("token"), RuntimeError(), MemoryError()]
)
def test_as_ocrd_error_hides_anything_else_behind_the_generic_message(exc: BaseException) -> None:
    error = as_ocrd_error(exc)

    assert isinstance(error, OcrdError)
    assert error.message == GENERIC_INTERNAL_MESSAGE
    assert error.http_status == 500
    assert grpc.StatusCode[error.grpc_code] is grpc.StatusCode.INTERNAL
    body = error.to_openai()
    validate("ErrorResponse", body)
    assert str(exc) == "" or str(exc) not in str(body)
