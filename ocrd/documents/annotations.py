"""Structured extraction (Mistral's ``document_annotation_format`` and ``bbox_annotation_format``):
the model is asked for one JSON object that follows the request's JSON schema, about the whole
document (its pages' markdown) or about each figure (its crop).

The request carries OpenAI's ``response_format: {"type": "json_schema", ...}``, which vLLM turns
into guided decoding: its answer follows the schema by construction. Engines without it (the
transformers runner, some upstreams) answer free text; every answer is therefore parsed and
validated against the schema here, and one that does not follow it fails the request with a
502 that says so and which engine guarantees it. The builtin engines read text but write none:
a 400 before any work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.documents.protocol import JsonSchemaFormat
from ocrd.errors import InvalidRequest, UpstreamError

# A chat request body -> the answer's text; None when the client went away.
ChatCaller = Callable[[dict[str, Any]], Awaitable[str | None]]

DOCUMENT_PROMPT = "Extract the information the JSON schema describes from this document."
FIGURE_PROMPT = "Extract the information the JSON schema describes from this image."
_FENCE = re.compile(r"\A\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*\Z", re.S)


@dataclass(frozen=True)
class Annotation:
    name: str
    schema: dict[str, Any]
    param: str

    @classmethod
    def of(cls, value: JsonSchemaFormat, param: str) -> Annotation:
        """The schema of a ``*_annotation_format``; 400 unless it is a valid ``json_schema``."""
        from jsonschema import Draft202012Validator, SchemaError

        spec = value.json_schema or {}
        schema = spec.get("schema", spec.get("schema_definition"))
        if value.type != "json_schema" or not isinstance(schema, dict):
            raise InvalidRequest(f'{param} must be {{"type": "json_schema", "json_schema": {{"name": ..., '
                                 '"schema": {...}}}}}', param=param)
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequest(f"{param}: the schema is not a valid JSON schema: {exc.message}",
                                 param=param) from None
        return cls(str(spec.get("name") or "annotation"), schema, param)

    def body(self, model: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": model, "temperature": 0, "messages": [{"role": "user", "content": content}],
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": self.name, "schema": self.schema, "strict": True}}}

    def instructions(self, prompt: str) -> str:
        return f"{prompt}\nAnswer with one JSON object that follows this JSON schema:\n{json.dumps(self.schema)}"

    def checked(self, answer: str, entry: CatalogEntry) -> str:
        """``answer`` as compact JSON if it follows the schema; UpstreamError otherwise."""
        from jsonschema import Draft202012Validator

        fenced = _FENCE.match(answer)
        text = fenced.group("body") if fenced else answer.strip()
        problem = None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"it is not JSON ({exc.msg} at character {exc.pos})"
        else:
            error = next(iter(Draft202012Validator(self.schema).iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "the top level"
                problem = f"at {where}: {error.message}"
        if problem is not None:
            raise UpstreamError(
                f"{entry.id}'s answer for {self.param} does not follow the schema: {problem}; engines "
                "that decode with the schema (vLLM) guarantee it, others do their best")
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def check_annotatable(entry: CatalogEntry, param: str) -> None:
    if entry.engines == ("builtin",):
        raise InvalidRequest(f"{param}: {entry.id} reads text but cannot extract structured data; use a "
                             "vision-language model (on vLLM, its answer follows the schema by construction)",
                             param=param)


async def annotate_document(annotation: Annotation, entry: CatalogEntry, markdown: str, prompt: str | None,
                            ask: ChatCaller) -> str | None:
    text = annotation.instructions(prompt or DOCUMENT_PROMPT) + "\n\nThe document:\n" + markdown
    answer = await ask(annotation.body(entry.id, [{"type": "text", "text": text}]))
    return None if answer is None else annotation.checked(answer, entry)


async def annotate_figure(annotation: Annotation, entry: CatalogEntry, crop_url: str, ask: ChatCaller) -> str | None:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": crop_url}},
                                     {"type": "text", "text": annotation.instructions(FIGURE_PROMPT)}]
    answer = await ask(annotation.body(entry.id, content))
    return None if answer is None else annotation.checked(answer, entry)
