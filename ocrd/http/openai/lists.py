"""OpenAI's list envelope (``GET /v1/files``, ``GET /v1/batches``)."""

from __future__ import annotations

from typing import Any


def openai_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """``{"object": "list", "data", "first_id", "last_id", "has_more"}``: the client pages on."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}
