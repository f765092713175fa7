"""A state_dir that fills up mid-batch, for real: ``ocrd serve`` keeps its state on a small tmpfs
mounted for the test, and the test fills it while a batch runs.

While full: no line's result can be kept, so no line is lost to it (none runs to be thrown
away), uploads are refused with a 507 that says where and what to do, and live requests are
served. Once there is room again the batch fails with ``storage_full`` in its errors, its output
file holds the lines done before and its error file every other line, each custom_id once, and
the store is whole (``ocrctl doctor``'s state-store check reads it with SQLite's quick_check).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.test_daemon_batches import WORDS, chat_line, finished, read_lines, upload
from tests.support.daemon import ocr_messages, running_daemon, wait_until
from tests.support.render import render_text_image

LINES = 30
STALL = 8.0  # seconds the test watches the full store: the runner retries every 5 s


@contextlib.contextmanager
def small_filesystem(megabytes: int) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = Path(tempfile.mkdtemp(prefix="ocrd-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    return filler


def test_a_full_state_dir_fails_the_batch_keeping_every_line_once(tmp_path):
    with small_filesystem(8) as mount_point, \
            running_daemon({"state_dir": mount_point / "state", "batches": {"concurrency": 1}}) as daemon, \
            daemon.openai_client(timeout=60) as client:
        lines = [chat_line(f"n{n}", WORDS[n % len(WORDS)]) for n in range(LINES)]
        created = client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/chat/completions",
                                        completion_window="24h")
        wait_until(lambda: client.batches.retrieve(created.id).request_counts.completed >= 2,
                   timeout=120, interval=0.1)
        filler = fill(mount_point)

        done_when_full = client.batches.retrieve(created.id).request_counts.completed
        deadline = time.monotonic() + STALL
        while time.monotonic() < deadline:
            stalled = client.batches.retrieve(created.id)
            assert stalled.status == "in_progress"
            assert stalled.request_counts.completed <= done_when_full + 1  # one in flight at most
            time.sleep(0.5)
        with pytest.raises(openai.InternalServerError) as refused:
            client.files.create(file=("more.jsonl", io.BytesIO(b"x" * 200_000)), purpose="batch")
        assert refused.value.status_code == 507
        assert refused.value.body["code"] == "storage_full"
        assert refused.value.body["message"].startswith(f"no space left in {mount_point / 'state'}")
        live = client.chat.completions.create(model="ppocr", messages=ocr_messages(render_text_image([WORDS[0]])))
        assert live.choices[0].message.content

        filler.unlink()
        batch = finished(client, created.id)

        assert batch.status == "failed" and batch.failed_at
        assert [error.code for error in batch.errors.data] == ["storage_full"]
        assert batch.errors.data[0].message.startswith("the batch stopped: no space left in ")
        output = read_lines(client, batch.output_file_id)
        errors = read_lines(client, batch.error_file_id)
        assert sorted(output) + sorted(errors) == sorted(output | errors) == sorted(f"n{n}" for n in range(LINES))
        assert len(output) == batch.request_counts.completed >= 2
        assert {line["error"]["code"] for line in errors.values()} == {"batch_failed"}
        assert all(line["response"]["status_code"] == 200 for line in output.values())
        assert not [name for name in os.listdir(mount_point / "state" / "jobs" / "files")
                    if name.startswith(".upload-")]

        doctor = daemon.ocrctl("doctor", "--json")
        checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
        assert checks["state-store"]["status"] == "CHECK_STATUS_OK", checks["state-store"]
