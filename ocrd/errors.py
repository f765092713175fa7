"""The one exception hierarchy of ocrd.

Every error that crosses a transport boundary is an ``OcrdError``. Each class knows its HTTP
status, its gRPC status code and its OpenAI error ``type``; the FastAPI handlers
(``ocrd.http.errors``) and the gRPC interceptor (``ocrd.control.errors``) translate from here and
nowhere else. Anything that is not an ``OcrdError`` becomes 500 / INTERNAL with a generic
message, and its traceback goes to the journal.

The gRPC code is kept as the name of a ``grpc.StatusCode`` member so that this module (which
runner processes import too) does not depend on grpc.
"""

from __future__ import annotations

from typing import Any


class OcrdError(Exception):
    """Base class: an error with a message meant for the user."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"
    openai_type: str = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def http_headers(self) -> dict[str, str]:
        return {}


# --- the client's fault (4xx / INVALID_ARGUMENT and friends) ---------------------------------


class InvalidRequest(OcrdError):
    """The request is malformed or asks for something impossible."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    openai_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    """A body, an image or a count is over a configured limit."""

    http_status = 413
    default_code = "payload_too_large"


class Unauthenticated(OcrdError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    openai_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(OcrdError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    openai_type = "permission_error"


class ModelNotFound(OcrdError):
    """No model with this id or alias is known (catalog, cache or config)."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    openai_type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, message: str, *, param: str | None = "model", code: str | None = None):
        super().__init__(message, param=param, code=code)


class ObjectNotFound(OcrdError):
    """No file (or batch) with this id: OpenAI's 404 for an object of its Files and Batch APIs."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    openai_type = "invalid_request_error"


class Conflict(OcrdError):
    """The request conflicts with the model's current state (e.g. unload of a model not loaded)."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"
    openai_type = "invalid_request_error"


class QueueFull(OcrdError):
    """The model's bounded queue is full: come back later (HTTP 429 + Retry-After)."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    openai_type = "rate_limit_error"
    default_code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# --- ocrd's side (5xx / UNAVAILABLE and friends) -------------------------------------------------


class InsufficientMemory(OcrdError):
    """The model does not fit even after evicting every idle model."""

    http_status = 507
    grpc_code = "RESOURCE_EXHAUSTED"
    openai_type = "server_error"
    default_code = "insufficient_memory"


class CapacityExhausted(OcrdError):
    """No room for another model (max_loaded_models) and every loaded one is busy or pinned."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"
    openai_type = "server_error"
    default_code = "capacity_exhausted"


class EngineUnavailable(OcrdError):
    """The engine a model needs is not installed or not reachable on this host."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "engine_unavailable"


class ModelNotReady(OcrdError):
    """The model is not loaded and auto-load is off, or it is being unloaded."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "model_not_ready"


class RunnerUnreachable(ModelNotReady):
    """A connection to the model's runner could not be made: it may have just exited (a retry
    after the scheduler has noticed may reach its successor)."""


class ModelLoadFailed(OcrdError):
    """The runner could not load the model (its exit reason is in the message)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "model_load_failed"


class ShuttingDown(OcrdError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "shutting_down"


class UpstreamError(OcrdError):
    """A runner answered with garbage, closed the connection, or died mid-request."""

    http_status = 502
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "upstream_error"


class UpstreamTimeout(OcrdError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    openai_type = "server_error"
    default_code = "upstream_timeout"


class HubUnavailable(OcrdError):
    """The Hugging Face Hub (``HF_ENDPOINT``) cannot be reached, or ocrd runs offline."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "hub_unavailable"


class ImageNotFound(OcrdError):
    """The registry has no such Docker image (or will not say, without a login)."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    openai_type = "invalid_request_error"
    default_code = "image_not_found"


class RegistryUnavailable(OcrdError):
    """A Docker image registry cannot be reached from this host."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "registry_unavailable"


class RouterUnavailable(OcrdError):
    """The cluster's router (``[cluster] router_url``) cannot be reached, or refused a call to
    its worker API (``ocrd.cluster``); logged by the registration, never a client's answer."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    openai_type = "server_error"
    default_code = "router_unavailable"


class StorageFull(OcrdError):
    """No space left where the Hugging Face cache is."""

    http_status = 507
    grpc_code = "RESOURCE_EXHAUSTED"
    openai_type = "server_error"
    default_code = "storage_full"


class NotImplementedYet(OcrdError):
    """A designed RPC or feature whose implementation belongs to a later milestone."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"
    openai_type = "server_error"
    default_code = "not_implemented"


class ConfigError(OcrdError):
    """Bad configuration: the message names the key and the source."""

    http_status = 500
    grpc_code = "FAILED_PRECONDITION"


GENERIC_INTERNAL_MESSAGE = "internal error in ocrd; the details are in the daemon's log"


def as_ocrd_error(exc: BaseException) -> OcrdError:
    """The error as the user sees it: OcrdErrors as they are, anything else generic."""
    if isinstance(exc, OcrdError):
        return exc
    return OcrdError(GENERIC_INTERNAL_MESSAGE)
