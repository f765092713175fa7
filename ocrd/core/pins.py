"""Models pinned by a load (``ocrctl load --pin``, ``POST /models/load {"pin": true}``), kept in
``state_dir/pinned.json`` so that a restart loads them again with the same wishes.

The file is replaced whole (written to a temporary name, flushed, renamed), so a crash leaves the
old list or the new one, never half of either. Models pinned in the configuration
(``[models.X] pinned``) are not in it: the configuration says so at every start itself.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ocrd.core.wishes import LoadWish

log = logging.getLogger("ocrd.pins")
FILE = "pinned.json"
VERSION = 1


def save_pins(state_dir: Path, pins: dict[str, LoadWish]) -> None:
    models = [{"model": model, "engine": wish.engine, "quantization": wish.quantization,
               "keep_alive": wish.keep_alive} for model, wish in sorted(pins.items())]
    path = Path(state_dir) / FILE
    partial = path.with_name(f".{FILE}.{os.getpid()}")
    try:
        with open(partial, "w", encoding="utf-8") as stream:
            json.dump({"version": VERSION, "models": models}, stream, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        log.error("pinned models not saved in %s (%s): after a restart they will not be loaded "
                  "again by themselves", path, exc.strerror or exc)


def read_pins(state_dir: Path) -> list[tuple[str, LoadWish]]:
    """The saved pins; none when there is no file, and none (with one warning) when it is not
    one ocrd wrote."""
    path = Path(state_dir) / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["models"] if data.get("version") == VERSION else None
        if not isinstance(entries, list):
            raise ValueError("not a list of models")
        return [(str(entry["model"]), LoadWish(engine=entry.get("engine"), quantization=entry.get("quantization"),
                                               keep_alive=entry.get("keep_alive"), pin=True))
                for entry in entries]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s is not a list of pinned models ocrd can read (%s): no model is loaded from it",
                    path, exc)
        return []
