"""``GET /health/ready`` (a Kubernetes readiness probe) on a real ``ocrd serve``: 503 until the
preloaded models (``[models.X] preload``) are loaded, 200 then; 503 again while one is not
loaded (an unload, a load that failed), naming it. ``/health`` (liveness) answers 200 all
along."""

from __future__ import annotations

from typing import Any

from tests.support.daemon import running_daemon, wait_until

PPOCR = "builtin/ppocr"


def probe(daemon: Any, path: str = "/health/ready") -> tuple[int, dict[str, Any]]:
    with daemon.http() as http:
        response = http.get(path)
    return response.status_code, response.json()


def test_ready_once_the_preloaded_models_are_loaded_and_not_while_one_is_missing():
    with running_daemon({"models": {"ppocr": {"preload": True}}}) as daemon:
        code, body = wait_until(lambda: (answer := probe(daemon))[0] == 200 and answer, timeout=120,
                                interval=0.05)
        assert body == {"status": "ready", "version": body["version"], "waiting_for": []}
        model = daemon.ps()[PPOCR]
        assert model["state"] == "MODEL_STATE_READY" and model["pinned"]

        assert daemon.ocrctl("unload", "ppocr").returncode == 0
        code, body = probe(daemon)
        assert code == 503
        assert body["status"] == "loading"
        assert body["waiting_for"] == [{"id": PPOCR, "state": "not_loaded", "error": ""}]
        assert probe(daemon, "/health")[0] == 200  # alive all along: only not ready

        assert daemon.ocrctl("load", "ppocr").returncode == 0
        assert probe(daemon) == (200, {"status": "ready", "version": body["version"], "waiting_for": []})


def test_a_preloaded_model_that_cannot_load_keeps_the_node_unready_and_says_why():
    # Not in this host's cache, and ocrd never downloads on a load: the load fails at start.
    with running_daemon({"models": {"rednote-hilab/dots.ocr": {"preload": True, "engine": "transformers"}}}) as daemon:
        code, body = wait_until(lambda: (answer := probe(daemon))[1]["status"] != "starting" and answer,
                                timeout=120, interval=0.05)
        assert code == 503 and body["status"] == "loading"
        [waiting] = body["waiting_for"]
        assert waiting["id"] == "rednote-hilab/dots.ocr", waiting
        assert waiting["state"] in ("failed", "unavailable") and "dots.ocr" in waiting["error"], waiting
        assert probe(daemon, "/health")[0] == 200


def test_without_preloaded_models_ready_follows_start_up():
    with running_daemon() as daemon:
        code, body = wait_until(lambda: (answer := probe(daemon))[0] == 200 and answer, timeout=60,
                                interval=0.05)
        assert body["status"] == "ready" and body["waiting_for"] == []
