"""Figures of a page (its ``image`` blocks) as Mistral's ``images[]``: ids ``img-N.jpeg``
numbered across the document, boxes in page pixels, JPEG crops as data: URLs when asked.
``image_limit`` caps them per document, ``image_min_size`` drops figures whose sides are both
smaller."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from ocrd.documents.layout import PageLayout


class FigureCropper:
    """One per request: keeps the count for ids and ``image_limit``."""

    def __init__(self, limit: int | None, min_size: int | None, include_base64: bool, keep_crops: bool = False):
        self._limit = limit
        self._min_size = min_size or 0
        self._include = include_base64
        self._keep = keep_crops
        self.count = 0
        self.crops: dict[str, str] = {}  # id -> data: URL, with keep_crops (figure annotations)

    def figures(self, layout: PageLayout, png: bytes) -> list[dict[str, Any]]:
        """The page's figures; blocks of figures left out are dropped from ``layout``."""
        page: Image.Image | None = None
        kept, figures = [], []
        for block in layout.blocks:
            if block.type == "image":
                if block.box is None:
                    continue  # a figure with no place on the page: nothing to crop or point to
                left, top, right, bottom = block.box
                small = right - left < self._min_size and bottom - top < self._min_size
                if small or (self._limit is not None and self.count >= self._limit):
                    continue
                figure: dict[str, Any] = {"id": f"img-{self.count}.jpeg", "top_left_x": left,
                                          "top_left_y": top, "bottom_right_x": right, "bottom_right_y": bottom,
                                          "image_base64": None}
                if (self._include or self._keep) and right > left and bottom > top:
                    if page is None:  # boxes are in the page as the model turned it
                        page = Image.open(io.BytesIO(png)).convert("RGB")
                        page = page.rotate(layout.rotation, expand=True) if layout.rotation else page
                    crop = io.BytesIO()
                    page.crop(block.box).save(crop, format="JPEG", quality=90)
                    url = "data:image/jpeg;base64," + base64.b64encode(crop.getvalue()).decode()
                    figure["image_base64"] = url if self._include else None
                    if self._keep:
                        self.crops[figure["id"]] = url
                figures.append(figure)
                self.count += 1
            kept.append(block)
        layout.blocks = kept
        return figures
