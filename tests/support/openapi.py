"""Validate JSON against a schema of OpenAI's published OpenAPI document.

The document is vendored in the repository (``tests/data/openai-openapi/``: a pinned commit of
openai/openai-openapi, gzipped, with its MIT licence and how to refresh it); ``$OCRD_OPENAPI_SPEC``
may point at another copy, plain or ``.gz``. When it is missing, ``validate`` raises: a test that
checks schemas must fail, not pass unchecked.

The document says OpenAPI 3.1 but still uses 3.0 keywords that JSON Schema 2020-12 reads
differently: ``nullable: true`` (ignored by 2020-12, so ``null`` would be rejected) and boolean
``exclusiveMinimum``/``exclusiveMaximum`` (compared as numbers by 2020-12). ``to_json_schema``
rewrites them once; the prepared validators are cached (the document is 3.4 MB).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ENV = "OCRD_OPENAPI_SPEC"
_REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = _REPO / "tests" / "data" / "openai-openapi" / "openapi.json.gz"
SPEC_COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"  # of openai/openai-openapi
SPEC_SHA256 = "bbfd19abcde0e7412da99378deb2a959ccdd3a812f97c9e35901921e8e973f9a"  # uncompressed
_URI = "urn:ocrd-test:openai-openapi"
# Keywords that only describe or identify; they stay beside an ``anyOf`` instead of moving into it.
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "example", "examples", "deprecated"}
    | {"$id", "$schema", "$anchor", "$defs", "definitions"}
)


class SchemaMismatch(AssertionError):
    """The instance does not match the schema; the message says where and why."""


def spec_path() -> Path:
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC)


def spec_bytes(path: Path) -> bytes:
    """The document's JSON as bytes (``.gz`` decompressed)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"OpenAI's OpenAPI document is missing: {path} does not exist. It ships in the "
            f"repository (tests/data/openai-openapi/); or point ${SPEC_ENV} at a copy."
        )
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def load_spec(path: Path) -> dict[str, Any]:
    return json.loads(spec_bytes(path))


def to_json_schema(node: Any) -> Any:
    """A copy of ``node`` with OpenAPI 3.0's ``nullable`` and boolean exclusive bounds rewritten.

    ``{..., nullable: true}`` becomes ``{anyOf: [{...}, {type: null}]}``, the constraints (``type``,
    ``enum``, ``$ref``, ``allOf``...) moving into the first branch so that ``null`` is not checked
    against them. ``allOf: [{$ref: X}, {nullable: true}]`` means "X or null": the bare member is
    dropped and the whole ``allOf`` made nullable.
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = dict(node)
    # Only a boolean is the keyword: in a ``properties`` map "nullable" may name a property.
    nullable = isinstance(schema.get("nullable"), bool) and schema.pop("nullable")
    if isinstance(schema.get("allOf"), list):
        kept = [m for m in schema["allOf"] if not _bare_nullable(m)]
        if len(kept) != len(schema["allOf"]):
            nullable = True
            schema["allOf"] = kept
    schema = {key: to_json_schema(value) for key, value in schema.items()}
    _fix_exclusive_bounds(schema)
    if not nullable:
        return schema
    outer = {k: v for k, v in schema.items() if k in _ANNOTATIONS or k.startswith("x-")}
    inner = {k: v for k, v in schema.items() if k not in outer}
    if not inner:  # {nullable: true} alone allows anything, null included
        return outer
    return {**outer, "anyOf": [inner, {"type": "null"}]}


def _bare_nullable(member: Any) -> bool:
    """``{nullable: true}`` with nothing but annotations beside it."""
    if not isinstance(member, dict) or member.get("nullable") is not True:
        return False
    return all(k == "nullable" or k in _ANNOTATIONS or k.startswith("x-") for k in member)


def _fix_exclusive_bounds(schema: dict[str, Any]) -> None:
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = schema.get(exclusive)
        if isinstance(flag, bool):
            del schema[exclusive]
            if flag and bound in schema:
                schema[exclusive] = schema.pop(bound)


@functools.cache
def _registry() -> Registry:
    document = to_json_schema(load_spec(spec_path()))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(_URI, resource)


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    registry = _registry()
    if schema_name not in registry.contents(_URI)["components"]["schemas"]:
        raise KeyError(f"OpenAI's document has no schema named {schema_name!r}")
    return Draft202012Validator(
        {"$ref": f"{_URI}#/components/schemas/{schema_name}"}, registry=registry
    )


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``SchemaMismatch`` unless ``instance`` matches ``components.schemas[schema_name]``."""
    errors = list(validator(schema_name).iter_errors(instance))
    if not errors:
        return
    error = best_match(errors)
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    raise SchemaMismatch(
        f"{schema_name} mismatch at {where}: {error.message} "
        f"({len(errors)} error{'s' if len(errors) > 1 else ''} in all)"
    )
