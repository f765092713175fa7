"""The installed ``ocrd`` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def test_console_script_check_config_exits_2_on_a_bad_file(tmp_path: Path) -> None:
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[http]\nprot = 8080\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OCRD_")}

    result = subprocess.run(
        [str(VENV_BIN / "ocrd"), "check-config", "--config", str(bad_config)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "http.prot" in lines[0]
