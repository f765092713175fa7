"""Prompt presets on the request path: ``"model": "dots.ocr:layout"`` or ``"ocrd": {"preset": ...}``.

A preset is the model authors' prompt for one task (layout, plain OCR, tables, ...) with its
sampling. Applying one rewrites the request before it is forwarded: the last user message keeps
its images and gets the preset's prompt as its text, the preset's sampling fills what the client
left unset, and what only the runner understands (processor arguments, special-token handling)
travels in the request's ``ocrd`` field. A request with neither a preset nor text of its own, to
a model with a default preset, gets the default: an image alone means "read this".
"""

from __future__ import annotations

import copy
from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.catalog.catalog import render_preset
from ocrd.errors import InvalidRequest

# OpenAI request fields a preset's sampling may fill in (never overriding the client's).
_SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")


def requested_preset(body: dict[str, Any], suffix_preset: str | None) -> str | None:
    """The preset a request names: the model suffix, or ``ocrd.preset``; both must agree."""
    extra = body.get("ocrd")
    if extra is not None and not isinstance(extra, dict):
        raise InvalidRequest("'ocrd' must be an object, e.g. {\"preset\": \"ocr\"}", param="ocrd")
    field_preset = (extra or {}).get("preset")
    if field_preset is not None and not isinstance(field_preset, str):
        raise InvalidRequest("'ocrd.preset' must be a string", param="ocrd.preset")
    if suffix_preset and field_preset and suffix_preset != field_preset:
        raise InvalidRequest(
            f"the model suffix names preset {suffix_preset!r} but ocrd.preset says "
            f"{field_preset!r}; name one", param="ocrd.preset")
    return suffix_preset or field_preset


def apply_preset(
    body: dict[str, Any], entry: CatalogEntry, preset: str | None, engine: str
) -> dict[str, Any]:
    """The request as forwarded to ``entry``'s runner, with ``preset`` applied (see module doc)."""
    forwarded = {**body, "model": entry.id}
    user = _last_user_message(forwarded)
    user_text = _text_of(user) if user is not None else ""
    if preset is None and (user_text or not entry.default_preset or not _has_image(user)):
        return forwarded
    if preset is not None:
        entry.preset(preset)  # unknown preset: 400 listing the model's presets
    rendered = render_preset(entry, preset, user_text or None, engine=engine)
    forwarded = copy.deepcopy(forwarded)
    user = _last_user_message(forwarded)
    if user is None:
        raise InvalidRequest("a preset applies to a user message; the request has none",
                             param="messages")
    images = [part for part in _parts(user) if part.get("type") == "image_url"]
    user["content"] = [*images, {"type": "text", "text": rendered.prompt}] if rendered.prompt else images
    if rendered.system and not any(m.get("role") == "system" for m in forwarded["messages"]):
        forwarded["messages"].insert(0, {"role": "system", "content": rendered.system})
    for key in _SAMPLING_FIELDS:
        if key in rendered.sampling and forwarded.get(key) is None:
            forwarded[key] = rendered.sampling[key]
    if rendered.stop and forwarded.get("stop") is None:
        forwarded["stop"] = list(rendered.stop)
    extra = dict(forwarded.get("ocrd") or {})
    extra.update(preset=preset or entry.default_preset, processor_kwargs=rendered.processor_kwargs)
    if rendered.skip_special_tokens is not None:
        extra["skip_special_tokens"] = rendered.skip_special_tokens
    forwarded["ocrd"] = extra
    return forwarded


def _last_user_message(body: dict[str, Any]) -> dict[str, Any] | None:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [part for part in content or [] if isinstance(part, dict)]


def _text_of(message: dict[str, Any]) -> str:
    texts = [part.get("text", "") for part in _parts(message) if part.get("type") == "text"]
    return "\n".join(text for text in texts if text.strip())


def _has_image(message: dict[str, Any] | None) -> bool:
    return message is not None and any(p.get("type") == "image_url" for p in _parts(message))
