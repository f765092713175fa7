"""A runner writes nothing outside ocrd's own directories: a real ``ocrd serve`` with ``HOME`` (and
every XDG directory) in an empty folder loads ppocr, does OCR and stops, and the folder is still
empty. onnxruntime would otherwise start its telemetry client as soon as it is imported and leave a
device id and an event queue with host details under ``~/.cache/Microsoft/DeveloperTools/``; the
runner turns it off (``ORT_DISABLE_TELEMETRY``, ocrd.worker.__main__.disable_telemetry).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import daemon_env, ocr_messages, running_daemon
from tests.support.render import char_accuracy, render_text_image
from tests.support.worker import temp_workdir

# onnxruntime turns its telemetry off by itself where one of these is set (a CI machine, its own
# test harness): blanked, so that the test shows what ocrd does, not what the machine does.
TELEMETRY_SWITCHES = (
    "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
    "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI", "ORT_RUNNING_UNIT_TESTS", "ORT_DISABLE_TELEMETRY",
)  # fmt: skip


@pytest.fixture
def workdir() -> Iterator[Path]:
    yield from temp_workdir("ocrdh-")


def home_env(home: Path) -> dict[str, str]:
    home.mkdir()
    return {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            **{name: "" for name in TELEMETRY_SWITCHES}}


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_onnxruntime_writes_its_telemetry_into_home_unless_told_not_to(workdir):
    # The control: in this environment, importing onnxruntime on its own does write into HOME,
    # so an empty HOME after the daemon's run means the runner kept it from doing so.
    home = workdir / "home"
    env = daemon_env(home_env(home))
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, check=True, timeout=120)
    assert any(".onnxruntime" in name for name in files_under(home)), files_under(home)


def test_a_runner_doing_ocr_leaves_home_untouched(workdir):
    home = workdir / "home"
    with running_daemon(env=home_env(home)) as daemon:
        with daemon.http() as http:
            response = http.post("/v1/chat/completions", json={
                "model": "ppocr", "messages": ocr_messages(render_text_image(["nothing at home"]))})
        assert response.status_code == 200, response.text
        assert char_accuracy("nothing at home", response.json()["choices"][0]["message"]["content"]) >= 0.9
        assert daemon.stop() == 0
    assert files_under(home) == []
