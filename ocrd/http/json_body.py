"""A JSON request body, read with work bounded by the limits rather than by what a client sends.

``limits.max_body_bytes`` bounds the bytes of a body, not the work they cause: 60 MB of
``[{},{},...]`` is 20 million objects, which ``json.loads`` builds in tens of seconds and gigabytes
while holding the GIL. So before anything is built, the values are counted on the raw bytes with
C-speed ``bytes`` methods only (``count``, ``replace``, ``split``, ``translate``): a body with more
than ``limits.max_json_items`` items in one array or object, or ``limits.max_json_values`` values
in all, is refused with 413 having cost a few passes over its bytes. What passes is parsed, its
nesting depth and strings checked (``limits.max_json_depth``, lone surrogates, NaN/Infinity),
all in time proportional to the bytes and the bounded number of values.

Big bodies are parsed in ``RequestWork``'s threads (``ocrd.http.request_work``) so the event loop
that serves ``/health``, the control plane and the watchdog is never held for long; see
``read_json_body``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ocrd.errors import InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from ocrd.config.settings import LimitsSettings


@dataclass(frozen=True)
class JsonLimits:
    """``limits.max_json_*``; the defaults are the settings' defaults."""

    max_depth: int = 64
    max_items: int = 10_000
    max_values: int = 100_000

    @classmethod
    def from_settings(cls, limits: LimitsSettings) -> JsonLimits:
        return cls(limits.max_json_depth, limits.max_json_items, limits.max_json_values)


def parse_json_body(body: bytes, limits: JsonLimits = JsonLimits()) -> dict[str, Any]:
    """A request body as a JSON object, or ``InvalidRequest`` (400) / ``PayloadTooLarge`` (413).

    Python's ``json`` accepts ``NaN`` and ``Infinity``; JSON does not, and a runner that gets one
    forwarded would fail with its own error, so they are refused here, naming where they are.
    Nesting deeper than ``limits.max_depth`` is refused too: what ocrd forwards, a runner parses
    again, and recursive code there (or in pydantic) must never meet a body nested a thousand
    levels deep. ``json`` itself stops at the interpreter's recursion limit with a RecursionError,
    which is the same refusal.
    """
    if not body.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    refuse_too_many_values(body, limits)
    value = _parsed_quickly(body, limits)
    if value is not None:
        return value
    value = _parsed_exactly(body)
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    _refuse_deep(value, limits.max_depth)
    _refuse_non_finite(value)
    return value


# Integers past these orjson turns into floats; ``json`` keeps them exact.
_EXACT_INTS = 2.0**63


def _parsed_quickly(body: bytes, limits: JsonLimits) -> dict[str, Any] | None:
    """The body parsed by orjson (in C, in a third of ``json``'s time and with no UTF-8 decode
    first) when it is a JSON object ocrd takes; None for everything else, which ``json`` then
    parses again so that every refusal is worded as ocrd always worded it. orjson refuses what
    is not strict JSON (NaN, Infinity, numbers too large for a double, lone surrogates, a BOM,
    invalid UTF-8, nesting past 1,024), so none of that reaches here; it reads integers past 64
    bits as floats, so a body with a float that large is left to ``json`` too, which keeps them
    exact."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or _has_float_beyond(value, _EXACT_INTS):
        return None
    try:
        _refuse_deep(value, limits.max_depth)
    except InvalidRequest:
        return None
    return value


def _parsed_exactly(body: bytes) -> Any:
    try:
        # Strictly UTF-8 (RFC 8259): json.loads(bytes) would also take UTF-16/32 and let
        # surrogates through ("surrogatepass"), which a runner then fails to encode.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: not valid UTF-8 at byte {exc.start}; send JSON "
            "encoded as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and ints past sys.get_int_max_str_digits()
        raise InvalidRequest(f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest("request body is not valid JSON (nested too deeply)") from None


def _has_float_beyond(root: Any, limit: float) -> bool:
    """Whether a float of magnitude ``limit`` or more is anywhere in ``root`` (iteratively: the
    depth is only checked after this)."""
    pending = [root]
    while pending:
        value = pending.pop()
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, float):
                if not -limit < item < limit:
                    return True
            elif isinstance(item, (dict, list)):
                pending.append(item)
    return False


# --- counting values on the bytes ---------------------------------------------------------------

_WHITESPACE = b" \t\r\n"
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b"[]{},")))
_NOT_COUNTED = bytes(sorted(set(range(256)) - set(b",[{")))
_OPENING = frozenset(b"[{")
_CLOSING = frozenset(b"]}")
_COMMA = ord(",")


def refuse_too_many_values(body: bytes, limits: JsonLimits) -> None:
    """``PayloadTooLarge`` when an array or object holds more than ``limits.max_items`` items or
    the body more than ``limits.max_values`` values (array items and object members, nested ones
    included); ``InvalidRequest`` when it nests deeper than ``limits.max_depth``. Costs a few
    C-speed passes over the bytes and a walk bounded by the limits; malformed JSON is left to the
    parser."""
    # Every item but the first of a container follows a comma and every container opens with a
    # bracket, so these bound the number of values from above: most bodies (an image is one long
    # string without commas) are done here.
    # (One pass that keeps only those three bytes costs a third of counting each.)
    bound = len(body.translate(None, _NOT_COUNTED))
    if bound <= min(limits.max_items, limits.max_values):
        return
    outside, too_many_strings = _outside_strings(body, limits)
    structure = outside.translate(None, _NOT_STRUCTURE)
    # Commas plus two brackets per container: at most 3 per value (plus the outermost pair). The
    # walk stops there, so it stays bounded; what lies beyond is too many values, unless the
    # part walked already broke another limit (depth first: that is the clearer answer).
    longest = 3 * limits.max_values + 2
    values = _walk(structure[:longest], limits)
    if len(structure) > longest or too_many_strings:
        raise _too_many_values(limits)
    if values > limits.max_values:
        # The walk counted each empty array or object as one item; exact only now, as it costs.
        outside = outside.translate(None, _WHITESPACE)
        if values - outside.count(b"[]") - outside.count(b"{}") > limits.max_values:
            raise _too_many_values(limits)


def _walk(structure: bytes, limits: JsonLimits) -> int:
    """The values in ``structure`` (empty containers counted as one); raises at the first
    container with too many items or nested too deep."""
    items_left = [limits.max_items]  # per open container: how many more items it may have
    values = 0
    for char in structure:
        if char == _COMMA:
            items_left[-1] -= 1
            if items_left[-1] <= 0:  # n commas: n + 1 items
                raise _too_many_items(limits)
        elif char in _OPENING:
            items_left.append(limits.max_items)
            if len(items_left) - 1 > limits.max_depth:
                raise _too_deep(limits.max_depth)
        elif char in _CLOSING and len(items_left) > 1:
            values += 1 + limits.max_items - items_left.pop()  # commas + 1
    # Containers never closed (a truncated body) count too: json.loads builds them all before it
    # finds the end missing.
    return values + sum(1 + limits.max_items - left for left in items_left[1:])


def _outside_strings(body: bytes, limits: JsonLimits) -> tuple[bytes, bool]:
    """The body with each string replaced by one quote (so '["a"]' does not look like the empty
    '[]'), and whether it had more strings than ``limits.max_values`` allows (the rest is cut)."""
    # Escapes first, so that every quote left delimits a string. Left to right, like a JSON
    # parser: pairs of backslashes are escaped backslashes, then a backslash-quote is a quote.
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Every string is a key or a value, so more than two per value (four quotes) is too many;
    # splitting no further keeps the pieces bounded.
    most_quotes = 4 * limits.max_values + 2
    pieces = body.split(b'"', most_quotes)
    too_many_strings = len(pieces) > most_quotes and b'"' in pieces[-1]
    if too_many_strings:
        pieces.pop()
    return b'"'.join(pieces[::2]), too_many_strings  # the even pieces lie outside strings


def _too_many_items(limits: JsonLimits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body has an array or object with more than {limits.max_items} items "
        "(limits.max_json_items)"
    )


def _too_many_values(limits: JsonLimits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body has more than {limits.max_values} values in all (limits.max_json_values)"
    )


# --- checks on the parsed value -----------------------------------------------------------------


def _too_deep(max_depth: int) -> InvalidRequest:
    return InvalidRequest(
        f"request body nests arrays and objects more than {max_depth} levels deep "
        "(limits.max_json_depth)"
    )


def _refuse_deep(root: dict[str, Any], max_depth: int) -> None:
    """Refuses nesting deeper than ``max_depth`` and strings with lone surrogates (JSON's
    ``"\\ud800"`` escapes parse, but no UTF-8 encoder, a runner's included, takes them)."""
    # Iterative, level by level: the check itself must not recurse as deep as the body does.
    level: list[Any] = [root]
    depth = 1
    while level:
        if depth > max_depth:
            raise _too_deep(max_depth)
        children = []
        for node in level:
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            for item in items:
                if isinstance(item, (dict, list)):
                    children.append(item)
                # isascii() first: a megabytes-long base64 image is ASCII, and skipped at C speed.
                elif isinstance(item, str) and not item.isascii() and _SURROGATE.search(item):
                    raise InvalidRequest(
                        "request body has a string with an unpaired UTF-16 surrogate escape "
                        "(\\ud800-\\udfff); send valid Unicode text"
                    )
        level, depth = children, depth + 1


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_non_finite(raw: dict[str, Any]) -> None:
    bad = _non_finite_path(raw)
    if bad is not None:
        param = ".".join(str(key) for key in bad)
        raise InvalidRequest(f"{param}: NaN and infinite numbers are not allowed", param=param)


def _non_finite_path(root: dict[str, Any]) -> list[Any] | None:
    """Where a NaN/inf is. Unknown fields are forwarded unvalidated, so the whole body is searched:
    iteratively, since a deeply nested body must not overflow the stack, and with each path kept
    as a (parent, key) link, since a long array must not cost a path copy per element."""
    pending: list[tuple[Any, Any]] = [(None, root)]
    while pending:
        link, value = pending.pop()
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(item, float) and not math.isfinite(item):
                path, node = [key], link
                while node is not None:
                    node, parent_key = node
                    path.append(parent_key)
                return path[::-1]
            if isinstance(item, (dict, list)):
                pending.append(((link, key), item))
    return None

