"""Mistral's OCR request (``POST /v1/ocr``), as the ``mistralai`` client sends it
(mistralai.client.models.OCRRequest, 3.7.0). Responses are built as plain dicts
(``ocrd.documents.layout``, ``ocrd.documents.service``) and parsed with the client's own models
in the tests.

Unknown fields are refused rather than ignored: a field ocrd does not know is one it cannot
honour, and the client should hear so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ImageUrlObject(_Strict):
    url: str
    detail: str | None = None


class DocumentUrl(_Strict):
    type: Literal["document_url"] = "document_url"
    document_url: str
    document_name: str | None = None


class ImageUrl(_Strict):
    type: Literal["image_url"] = "image_url"
    image_url: str | ImageUrlObject

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class FileRef(_Strict):
    type: Literal["file"] = "file"
    file_id: str


Document = Annotated[DocumentUrl | ImageUrl | FileRef, Field(discriminator="type")]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str | None = None
    json_schema: dict[str, Any] | None = None


class OcrRequest(_Strict):
    model: str | None
    document: Document
    pages: str | list[Annotated[int, Field(ge=0)]] | None = None
    include_image_base64: bool | None = None
    image_limit: Annotated[int, Field(ge=0)] | None = None
    image_min_size: Annotated[int, Field(ge=0)] | None = None
    bbox_annotation_format: JsonSchemaFormat | None = None
    document_annotation_format: JsonSchemaFormat | None = None
    document_annotation_prompt: str | None = None
    table_format: Literal["markdown", "html"] | None = None
    extract_header: bool | None = None
    extract_footer: bool | None = None
    include_blocks: bool | None = True
    confidence_scores_granularity: Literal["page", "block", "word"] | None = None
