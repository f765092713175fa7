"""``olmocr``: olmOCR-2's answer, YAML front matter (primary_language, is_rotation_valid,
rotation_correction, is_table, is_diagram) then the page's markdown (allenai/olmocr,
olmocr/prompts: build_no_anchoring_v4_yaml_prompt and its PageResponse). No boxes."""

from __future__ import annotations

import re
from typing import Any

from ocrd.documents.layout import Block, PageLayout

_FRONT = re.compile(r"\A\s*---\s*\n(?P<yaml>.*?)\n---\s*(?:\n|\Z)", re.S)


def parse(answer: str, width: int, height: int) -> PageLayout:
    match = _FRONT.match(answer)
    facts: dict[str, Any] = {}
    body = answer
    if match is not None:
        body = answer[match.end():]
        for line in match.group("yaml").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                facts[key.strip()] = _value(value.strip())
    text = body.strip()
    return PageLayout([Block("text", text)] if text else [], has_boxes=False, facts=facts)


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~", ""):
        return None
    try:
        return int(text)
    except ValueError:
        return text.strip("'\"")
