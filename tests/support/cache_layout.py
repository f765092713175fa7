"""Model snapshots laid out as huggingface_hub lays them out, without building real weights."""

from __future__ import annotations

import json
from pathlib import Path

REV = "0123456789abcdef0123456789abcdef01234567"


def cache_model(hub: Path, repo_id: str, config: dict, *, shards: list[str] | None = None,
                present: list[str] | None = None) -> Path:
    """A snapshot as huggingface_hub lays it out (refs/main -> snapshots/<rev>/...)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    (snapshot / "config.json").write_text(json.dumps(config))
    if shards is None:
        (snapshot / "model.safetensors").write_bytes(b"weights")
    else:
        index = {"weight_map": {f"layer{i}": shard for i, shard in enumerate(shards)}}
        (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
        for shard in present or []:
            (snapshot / shard).write_bytes(b"weights")
    return snapshot
