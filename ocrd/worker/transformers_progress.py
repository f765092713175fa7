"""Weight-loading progress for the transformers runner: "shards loaded n/N" while weights load.

``from_pretrained`` is one blocking call. Transformers 5 opens every shard lazily first and then
materialises the model's parameters one by one in a loop it wraps in its own tqdm
(``transformers.core_model_loading.tqdm``, desc "Loading weights"). We swap that tqdm for a
tracking iterator for the duration of the load: each item of the loop knows the checkpoint keys
it consumes (``mapping.layer_targets``), and the checkpoint's index (``weight_map``) says which
shard holds each key, so a shard counts as loaded once the last parameter reading from it is in
place. Parameter-level progress (``tensors k/M``) fills the gaps between shard completions, which
matters for single-file checkpoints of many gigabytes.

All of this reads private transformers internals, so every step degrades instead of failing: if
the hook point is missing or an item looks unfamiliar, loading goes on and the shard count is
reported once at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("ocrd.worker.transformers")

# (shards loaded, shard count, parameters loaded, parameter count)
ShardReport = Callable[[int, int, int, int], None]

_LOOP_DESC = "Loading weights"
_STEPS = 10  # parameter-level reports per load, besides one per completed shard
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


def shard_map(snapshot: Path | None) -> tuple[dict[str, str], list[str]]:
    """Checkpoint key -> shard file, and the shard files, from the snapshot's weight index.

    A single-file checkpoint has no index: it is one shard, and the key map is empty (every key
    belongs to that one file)."""
    if snapshot is None:
        return {}, []
    for name in _WEIGHT_INDEXES:
        index = snapshot / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError):
                return {}, []
            return dict(weight_map), sorted(set(weight_map.values()))
    return {}, [name for name in _SINGLE_FILES if (snapshot / name).is_file()][:1]


class ShardTracker:
    """Counts parameters and completed shards as transformers' loading loop advances."""

    def __init__(self, key_to_shard: dict[str, str], shards: list[str], report: ShardReport):
        self.key_to_shard = key_to_shard
        self.shards = shards
        self.report = report
        self.done_shards: set[str] = set()

    def track(self, items: list[Any]) -> Iterator[Any]:
        pending = self._pending_per_shard(items)
        total = len(items)
        step = max(1, total // _STEPS)
        for index, item in enumerate(items):
            yield item  # the loop body loads this item before asking for the next one
            completed = self._complete(item, pending)
            if completed or (index + 1) % step == 0:
                self.report(len(self.done_shards), len(self.shards), index + 1, total)

    def finish(self, total: int) -> None:
        """Everything is in place: whatever was not attributed to a shard is loaded too."""
        if self.done_shards != set(self.shards) or not self.shards:
            self.done_shards = set(self.shards)
            self.report(len(self.shards), len(self.shards), total, total)

    def _shards_of(self, item: Any) -> set[str]:
        if not self.key_to_shard:  # single file: every item reads from it
            return set(self.shards)
        mapping = item[1] if isinstance(item, tuple) and len(item) == 2 else None
        targets = getattr(mapping, "layer_targets", None)
        if not isinstance(targets, dict):
            return set()
        keys = set().union(*targets.values()) if targets else set()
        return {self.key_to_shard[key] for key in keys if key in self.key_to_shard}

    def _pending_per_shard(self, items: list[Any]) -> dict[str, int]:
        pending = {shard: 0 for shard in self.shards}
        for item in items:
            for shard in self._shards_of(item):
                pending[shard] = pending.get(shard, 0) + 1
        # Shards no parameter reads from (only unexpected keys) are as loaded as they will get.
        self.done_shards |= {shard for shard, count in pending.items() if count == 0}
        return pending

    def _complete(self, item: Any, pending: dict[str, int]) -> bool:
        completed = False
        for shard in self._shards_of(item):
            pending[shard] -= 1
            if pending[shard] == 0 and shard not in self.done_shards:
                self.done_shards.add(shard)
                completed = True
        return completed


@contextmanager
def track_weight_loading(tracker: ShardTracker) -> Iterator[None]:
    """Within the block, transformers' "Loading weights" loop reports through ``tracker``."""
    loading: Any
    try:
        import transformers.core_model_loading as loading
    except ImportError:
        loading = None
    original = getattr(loading, "tqdm", None)
    if original is None:
        log.info("no weight-loading hook in this transformers version; shard progress comes at the end")
        yield
        return
    seen: list[int] = []

    def tracking_tqdm(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("desc") != _LOOP_DESC or iterable is None:
            return original(iterable, *args, **kwargs)
        items = list(iterable)
        seen.append(len(items))
        return tracker.track(items)

    loading.tqdm = tracking_tqdm
    try:
        yield
    finally:
        loading.tqdm = original
    tracker.finish(sum(seen))
