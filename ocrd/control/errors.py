"""Translates ocrd's exception hierarchy into gRPC status codes, for every control-plane handler.

An ``OcrdError`` carries the status the user should see (``NOT_FOUND`` for an unknown model,
``UNAVAILABLE`` for a failed load, ...) and its message is meant for them, so it goes out as is.
Anything else is a bug: the client gets INTERNAL with a generic message and the traceback goes to
the journal. (TGI's interceptor turns everything into INTERNAL, which hides "model not found"
behind "internal error"; we do not.)

Handlers stay free of try/except: they raise, this module answers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ocrd.errors import OcrdError, as_ocrd_error

log = logging.getLogger("ocrd.control")


async def abort_with(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """Ends the RPC with the status that ``exc`` stands for (always raises AbortError)."""
    if isinstance(exc, OcrdError):
        log.debug("control request failed: %s (%s)", exc.message, exc.grpc_code)
    else:
        log.error("control request failed with an unexpected error", exc_info=exc)
    error = as_ocrd_error(exc)
    await context.abort(grpc.StatusCode[error.grpc_code], error.message)


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise  # the handler chose its status itself
        except Exception as exc:
            await abort_with(context, exc)

    return handler


def _wrap_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_with(context, exc)

        return generator
    # A streaming handler may also be a coroutine that calls ``context.write`` (health's Watch).
    return _wrap_unary(behavior)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps unary-unary, stream-unary and unary-stream handlers; stream-stream ones (none yet)
    pass through unchanged."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED itself
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:  # an upload: the same wrapping as a unary call
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
