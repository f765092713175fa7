"""Limits on what one request may make ocrd do, and how documents are handled: the ``[limits]``
and ``[documents]`` sections of the settings (``ocrd.config.settings``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LimitsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest HTTP request body.")
    max_image_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest single image, after base64 decoding."
    )
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="Most pixels (width x height) one image may declare."
    )
    max_images_per_request: int = Field(16, gt=0, description="Most images in one request.")
    max_json_depth: int = Field(
        64, gt=0, le=500,
        description="Deepest nesting of arrays and objects in a JSON request body (a chat request "
        "needs about 6; tool schemas more).",
    )
    # Bytes do not bound work: 60 MB of '[{},{},...]' is 20 million objects. These are checked on
    # the raw bytes before anything is parsed (ocrd.http.json_body).
    max_json_items: int = Field(
        10_000, gt=0,
        description="Most items in one array or object of a JSON request body (a chat request "
        "has a few per message).",
    )
    max_json_values: int = Field(
        100_000, gt=0,
        description="Most values in a whole JSON request body: array items and object members, "
        "nested ones included.",
    )
    # Documents (PDFs) in /v1/ocr and in chat's file parts (ocrd.documents).
    max_document_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Largest document (PDF or image) in one request, after "
        "base64 decoding; also bounded by max_body_bytes when it comes in the body.")
    max_pages_per_request: int = Field(
        1000, gt=0, description="Most pages one request may OCR (after its `pages` selection).")
    max_page_pixels: int = Field(
        40_000_000, gt=0, description="Most pixels a rendered page may have; a page whose declared "
        "size at the model's resolution is larger is refused (413) before anything is rendered.")
    # The Files API (ocrd.jobs): uploads are written to the state directory, never held in memory.
    max_file_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest file `POST /v1/files` takes (OpenAI's limit "
        "is 512 MB); its request body may be this large, whatever max_body_bytes says.")



class DocumentsSettings(BaseModel):
    """PDF rendering and the page pipeline (``ocrd.documents``)."""

    model_config = ConfigDict(extra="forbid")

    default_dpi: int = Field(
        150, ge=36, le=600, description="Resolution PDF pages are rendered at for a model whose "
        "catalog entry names none (the catalog's [model.document] facts win).")
    pages_in_flight: int = Field(
        8, ge=1, le=256, description="Most pages of one request in flight at once (rendered, or at the "
        "model); the model's own concurrency bounds it too, plus one page rendered ahead.")
    page_attempts: int = Field(
        2, ge=1, le=5, description="Tries per page: a page whose runner failed (crash, timeout, 5xx) "
        "is sent again this many times in all before the request fails naming the page.")


class BatchesSettings(BaseModel):
    """The Batch API's runner (``ocrd.jobs``)."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(
        4, ge=1, le=256, description="Most lines of a batch in flight at once. They take a model's "
        "turns only when no live request waits for one, so a live request waits for at most one "
        "batch line per turn; more than the model's own concurrency only queues.")
