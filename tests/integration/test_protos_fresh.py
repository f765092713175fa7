"""The committed gRPC stubs are exactly what scripts/gen-protos makes from control.proto.

If this fails, control.proto changed without regenerating: run scripts/gen-protos and commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUBS = Path("ocrd/control/v1")
GENERATED = ("control_pb2.py", "control_pb2_grpc.py", "control_pb2.pyi")


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    subprocess.run(
        [REPO / "scripts" / "gen-protos", tmp_path],
        env={**os.environ, "PYTHON": sys.executable},
        check=True, capture_output=True, text=True,
    )
    fresh_dir = tmp_path / STUBS
    assert sorted(p.name for p in fresh_dir.iterdir()) == sorted(GENERATED)
    stale = [
        name for name in GENERATED
        if (fresh_dir / name).read_bytes() != (REPO / STUBS / name).read_bytes()
    ]
    assert not stale, f"stale stubs {stale}: run scripts/gen-protos and commit the result"
