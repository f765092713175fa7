"""Reading a JSON request body with errors a client can act on."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from ocrd.errors import InvalidRequest


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything else (bad JSON, bad UTF-8, too deep)."""
    raw = await request.body()
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return value
