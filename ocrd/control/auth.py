"""Who is calling over TCP, and whether their role may make the call.

Only the TCP listener (``grpc.listen``) has this interceptor; the Unix socket's server has none,
because its mode and group already decide who may connect (docs/security.md).

Identity: a bearer token (``authorization: Bearer <token>`` metadata) when tokens are
configured, a verified client certificate's common name when ``grpc.tls_client_ca`` is set, and
with both, the lower of the two roles. Without either (allowed only on loopback) every caller is
admin. A missing or unknown token is UNAUTHENTICATED; a known caller whose role is too low, or a
certificate not listed in ``grpc.client_certs``, is PERMISSION_DENIED.

Every RPC of ``ocrd.v1.Control`` has a role in :data:`CONTROL_RPC_ROLES`. A method missing from
the table is refused to everyone (fail closed), and a unit test fails until it gets a role.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from ocrd.config.tokens import Role, TokenTable, lower_role
from ocrd.errors import OcrdError, PermissionDenied, Unauthenticated

log = logging.getLogger("ocrd.control.auth")

CONTROL_SERVICE = "ocrd.v1.Control"
# Anyone who can reach the port may ask whether ocrd is up (load balancers, probes).
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
# Reflection describes our API to any authenticated caller, whatever their role.
READ_ONLY_SERVICES = frozenset(
    {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
)

CONTROL_RPC_ROLES: dict[str, Role] = {
    "GetStatus": Role.READ_ONLY,
    "ListModels": Role.READ_ONLY,
    "ExplainMode": Role.READ_ONLY,
    "GetGpu": Role.READ_ONLY,
    "ListCache": Role.READ_ONLY,
    "VerifyCache": Role.READ_ONLY,  # reads and hashes files, changes nothing
    "Diagnose": Role.READ_ONLY,
    "WatchEvents": Role.READ_ONLY,
    # A batch's description (status, counts, file ids) holds no document text.
    "GetBatch": Role.READ_ONLY,
    "ListBatches": Role.READ_ONLY,
    "WatchBatch": Role.READ_ONLY,
    # Runner logs can hold document text, prompts and paths: not for a monitoring token.
    "Logs": Role.ADMIN,
    "LoadModel": Role.ADMIN,
    "UnloadModel": Role.ADMIN,
    "DeleteCache": Role.ADMIN,
    "PullModel": Role.ADMIN,
    "Cleanup": Role.ADMIN,
    "PullImage": Role.ADMIN,
    # Files hold documents and their text; batches spend the GPU.
    "UploadFile": Role.ADMIN,
    "ReadFile": Role.ADMIN,
    "CreateBatch": Role.ADMIN,
    "CancelBatch": Role.ADMIN,
}

BEARER = "bearer "
TOKEN_HINT = "send 'authorization: Bearer <token>' (ocrctl: set OCRD_TOKEN or --token-file)"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: how they are named in the log, and their role."""

    name: str
    role: Role


def required_role(full_method: str) -> Role | None:
    """The role ``/package.Service/Method`` needs; None for open services. PermissionDenied for
    a Control method without a role (a new RPC nobody classified yet)."""
    service, _, method = full_method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return None
    if service == CONTROL_SERVICE:
        try:
            return CONTROL_RPC_ROLES[method]
        except KeyError:
            raise PermissionDenied(
                f"{method} has no role in ocrd's access table; nobody may call it over TCP"
            ) from None
    return Role.READ_ONLY if service in READ_ONLY_SERVICES else Role.ADMIN


class Authenticator:
    """Turns a call's metadata and TLS peer into an Identity (or refuses it)."""

    def __init__(self, tokens: TokenTable, *, mtls: bool = False,
                 client_certs: Mapping[str, Role] | None = None):
        self.tokens = tokens
        self.mtls = mtls
        self.client_certs = dict(client_certs or {})

    def identify(self, metadata: Sequence[tuple[str, Any]] | None,
                 auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
        certificate = self._certificate_identity(auth_context) if self.mtls else None
        if self.tokens:
            token = self._token_identity(metadata)
            if certificate is None:
                return token
            role = lower_role(token.role, certificate.role)
            return Identity(f"{token.name} with {certificate.name}", role)
        if certificate is not None:
            return certificate
        return Identity("loopback caller (no authentication configured)", Role.ADMIN)

    def _token_identity(self, metadata: Sequence[tuple[str, Any]] | None) -> Identity:
        values = [value for key, value in metadata or () if key.lower() == "authorization"]
        if not values:
            raise Unauthenticated(f"this control plane needs a token and none was sent: {TOKEN_HINT}")
        value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
        if not value[: len(BEARER)].lower() == BEARER or not value[len(BEARER):].strip():
            raise Unauthenticated(f"the authorization metadata is not 'Bearer <token>': {TOKEN_HINT}")
        stored = self.tokens.find(value[len(BEARER):])
        if stored is None:
            raise Unauthenticated("the token is not one ocrd knows (revoked, mistyped, or for "
                                  "another daemon)")
        return Identity(f"token {stored.name!r}", stored.role)

    def _certificate_identity(self, auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
        # The TLS stack has already verified the chain against grpc.tls_client_ca.
        names = auth_context.get("x509_common_name") or []
        if not names:
            raise Unauthenticated("no verified client certificate: present one signed by the "
                                  "daemon's grpc.tls_client_ca (ocrctl: --cert and --key)")
        name = names[0].decode("utf-8", "replace")
        if not self.client_certs:
            return Identity(f"certificate {name!r}", Role.ADMIN)
        role = self.client_certs.get(name)
        if role is None:
            raise PermissionDenied(f"client certificate {name!r} is not listed in grpc.client_certs")
        return Identity(f"certificate {name!r}", role)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call before its handler runs; refusals end the call with their status."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED itself
        try:
            required = required_role(method)
        except PermissionDenied as exc:
            return _wrap_handler(handler, self._refuse_always(exc, method))
        if required is None:
            return handler
        return _wrap_handler(handler, self._checker(method, required))

    def _checker(self, method: str, required: Role) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
        async def check(context: grpc.aio.ServicerContext) -> None:
            try:
                identity = self.authenticator.identify(context.invocation_metadata(),
                                                       context.auth_context())
                if not identity.role.allows(required):
                    raise PermissionDenied(
                        f"{identity.name} is {identity.role} and may not call {_short(method)}: "
                        f"it needs an {required} token or certificate"
                    )
            except OcrdError as exc:
                await _refuse(context, exc, method)  # ends the call: raises AbortError
                return
            if required is Role.ADMIN:
                log.info("control: %s by %s from %s", _short(method), identity.name, context.peer())

        return check

    def _refuse_always(self, exc: OcrdError, method: str) -> Callable[[grpc.aio.ServicerContext], Awaitable[None]]:
        async def check(context: grpc.aio.ServicerContext) -> None:
            await _refuse(context, exc, method)

        return check


async def _refuse(context: grpc.aio.ServicerContext, exc: OcrdError, method: str) -> None:
    # The message never contains the token: only whether one was sent and its stored name.
    log.warning("control: refused %s from %s: %s", _short(method), context.peer(), exc.message)
    await context.abort(grpc.StatusCode[exc.grpc_code], exc.message)


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def _wrap_handler(handler: grpc.RpcMethodHandler,
                  check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]) -> grpc.RpcMethodHandler:
    """The same handler kind with ``check(context)`` run before its behaviour."""
    for kind, factory in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return factory(
                _guard(behavior, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _guard(behavior: Callable[..., Any], check: Check) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for response in behavior(request, context):
                yield response

        return generator

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call
