"""gRPC server reflection, version v1 (``grpc.reflection.v1.ServerReflection``) and v1alpha.

grpcio-reflection (1.85) ships only the v1alpha service, while current grpcurl, Postman and
grpc-go clients ask for v1 first. The v1 protocol is v1alpha under a new package name: the same
messages with the same field numbers, so the bytes on the wire are identical. We therefore serve
v1 with grpcio-reflection's own servicer and v1alpha's (de)serializers, and add a v1 file
descriptor (v1alpha's, renamed) to the descriptor pool so that ``describe`` on the v1 service
itself works too. Drop this module once grpcio-reflection ships ``grpc_reflection.v1``.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1_PACKAGE = "grpc.reflection.v1"
V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME


def _v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's reflection.proto with the package (and every type reference) renamed to v1."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{v1alpha.DESCRIPTOR.package}.", f".{V1_PACKAGE}."
    proto.name = V1_FILE
    proto.package = V1_PACKAGE
    proto.ClearField("options")  # java/go package options name v1alpha
    for message in proto.message_type:
        for message_field in message.field:
            if message_field.HasField("type_name"):  # assigning "" would mark scalars as typed
                message_field.type_name = message_field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


def _ensure_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(_v1_file_descriptor().SerializeToString())


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serves reflection v1 and v1alpha for ``service_names`` (and for themselves)."""
    pool = descriptor_pool.Default()
    _ensure_v1_descriptor(pool)
    names = [*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    v1_handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=v1alpha.ServerReflectionRequest.FromString,
        response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1_handler}),)
    )
    reflection.enable_server_reflection(names, server, pool=pool)
