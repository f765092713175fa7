"""How ocrctl shows things to people: tables, sizes, durations, times, a progress bar, JSON."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ocrd.control.v1 import control_pb2 as pb

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def size(num_bytes: int) -> str:
    """``150 MiB``; ``-`` for 0 (which the proto uses for "unknown")."""
    if num_bytes <= 0:
        return "-"
    value = float(num_bytes)
    for unit in _SIZE_UNITS:
        if value < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """``45s``, ``5m``, ``1h30m``, ``2d3h``: the two largest units, for humans."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def parse_duration(text: str) -> float:
    """Seconds from ``300``, ``10m``, ``1h30m`` or ``250ms`` (what --keep-alive takes)."""
    compact = text.strip().lower().replace(" ", "")
    try:
        seconds = float(compact)
    except ValueError:
        parts = _DURATION_PART.findall(compact)
        if not compact or "".join(n + u for n, u in parts) != compact:
            raise ValueError(f"{text!r} is not a duration; use seconds or e.g. 30s, 10m, 1h") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"{text!r}: a duration cannot be negative")
    return seconds


def ago(epoch_seconds: float | None, now: float | None = None) -> str:
    if epoch_seconds is None:
        return "never"
    now = time.time() if now is None else now
    return f"{duration(now - epoch_seconds)} ago"


def timestamp_or_none(message: Message, field: str) -> float | None:
    """Epoch seconds of an optional Timestamp field; None when unset."""
    if not message.HasField(field):
        return None
    stamp = getattr(message, field)
    return stamp.seconds + stamp.nanos / 1e9


def clock_time(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_seconds))


def state(value: int) -> str:
    """``ready``, ``not loaded``: a ModelState as a word."""
    name = pb.ModelState.Name(value) if value in pb.ModelState.values() else "MODEL_STATE_UNSPECIFIED"
    return name.removeprefix("MODEL_STATE_").lower().replace("_", " ")


def percent(fraction: float) -> str:
    return "" if fraction < 0 else f"{min(fraction, 1.0) * 100:3.0f}%"


def progress_bar(fraction: float, width: int = 24) -> str:
    """``[#########---------------]  37%``; an unknown fraction (negative) shows dots."""
    if fraction < 0:
        return "[" + "." * width + "]     "
    filled = round(min(fraction, 1.0) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "] " + percent(fraction)


def to_dict(message: Message) -> dict:
    # Proto field names (snake_case, as in control.proto) and zero values included, so that
    # scripts see every field whatever its value.
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def json_text(message: Message, *, compact: bool = False) -> str:
    """A message as JSON: indented for one answer, one compact line per item of a stream."""
    if compact:
        return json.dumps(to_dict(message), separators=(",", ":"))
    return json.dumps(to_dict(message), indent=2)
