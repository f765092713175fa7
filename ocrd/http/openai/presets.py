"""Prompt presets on the request path: ``"model": "dots.ocr:layout"`` or ``"ocrd": {"preset": ...}``.

A preset is the model authors' prompt for one task (layout, plain OCR, tables, ...) with its
sampling. Applying one rewrites the request before it is forwarded: the last user message keeps
its images and gets the preset's prompt as its text, the preset's sampling fills what the client
left unset, and what only the runner understands (processor arguments, special-token handling)
travels in the request's ``ocrd`` field. A request with neither a preset nor text of its own, to
a model with a default preset, gets the default: an image alone means "read this".

A preset is checked before the model is leased (``preset_plan``: its 400s cost no load) and
rendered inside the lease (``PresetPlan.apply``), for the engine the runner really has.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ocrd.catalog import CatalogEntry
from ocrd.catalog.catalog import render_preset
from ocrd.errors import InvalidRequest
from ocrd.openai_types import token_limit

# OpenAI request fields a preset's sampling may fill in (never overriding the client's). Its
# max_tokens fills in the token limit, which a client sets with either field (``token_limit``).
_SAMPLING_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


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


@dataclass(frozen=True)
class PresetPlan:
    """A preset that applies to one request, checked before the model is leased and rendered
    after (``apply``), for the engine its runner really has: only the planner knows which engine
    a load picks, and the prompt may need that engine's wrapping (dots.ocr's image tokens on
    vLLM, none on transformers)."""

    entry: CatalogEntry
    name: str | None  # None: the model's default preset
    user_text: str

    def apply(self, body: dict[str, Any], engine: str) -> dict[str, Any]:
        """``body`` (already for ``entry``) with the preset rendered for ``engine`` applied."""
        rendered = render_preset(self.entry, self.name, self.user_text or None, engine=engine)
        forwarded = copy.deepcopy(body)
        user = _last_user_message(forwarded)
        assert user is not None  # preset_plan checked it
        images = [part for part in _parts(user) if part.get("type") == "image_url"]
        user["content"] = [*images, {"type": "text", "text": rendered.prompt}] if rendered.prompt else images
        if rendered.system and not any(m.get("role") == "system" for m in forwarded["messages"]):
            forwarded["messages"].insert(0, {"role": "system", "content": rendered.system})
        for key in _SAMPLING_FIELDS:
            if key in rendered.sampling and forwarded.get(key) is None:
                forwarded[key] = rendered.sampling[key]
        if "max_tokens" in rendered.sampling and not _has_token_limit(body):
            forwarded["max_tokens"] = rendered.sampling["max_tokens"]
        if rendered.stop and forwarded.get("stop") is None:
            forwarded["stop"] = list(rendered.stop)
        extra = dict(forwarded.get("ocrd") or {})
        extra.update(preset=self.name or self.entry.default_preset,
                     processor_kwargs=rendered.processor_kwargs)
        if rendered.skip_special_tokens is not None:
            extra["skip_special_tokens"] = rendered.skip_special_tokens
        forwarded["ocrd"] = extra
        return forwarded


def preset_plan(body: dict[str, Any], entry: CatalogEntry, preset: str | None) -> PresetPlan | None:
    """The preset ``body`` gets (see the module doc), or None; its 400s (unknown preset, no user
    message, a preset that needs text) are raised here, before any model is loaded for it."""
    user = _last_user_message(body)
    user_text = _text_of(user) if user is not None else ""
    if preset is None and (user_text or not entry.default_preset or not _has_image(user)):
        return None
    if preset is not None:
        entry.preset(preset)  # unknown preset: 400 listing the model's presets
    if user is None:
        raise InvalidRequest("a preset applies to a user message; the request has none",
                             param="messages")
    render_preset(entry, preset, user_text or None)  # raises what rendering for any engine would
    return PresetPlan(entry, preset, user_text)


def apply_preset(
    body: dict[str, Any], entry: CatalogEntry, preset: str | None, engine: str
) -> dict[str, Any]:
    """The request as forwarded to ``entry``'s runner on ``engine``, with ``preset`` applied."""
    forwarded = {**body, "model": entry.id}
    plan = preset_plan(forwarded, entry, preset)
    return plan.apply(forwarded, engine) if plan is not None else forwarded


def _has_token_limit(body: dict[str, Any]) -> bool:
    return token_limit(body.get("max_completion_tokens"), body.get("max_tokens")) is not None


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
