"""Which settings a reload (SIGHUP) applies and which wait for a restart (ocrd.daemon).

Every key of the settings is in exactly one of the two lists: ``RESTART_ONLY`` in the daemon, or
``APPLIES_ON_RELOAD`` here, which docs/systemd.md describes and tests/integration/
test_daemon_reload.py exercises section by section. A new key fails the first test until it is
put in one of them. ``keep_restart_only_values`` keeps the running value of a restart-only key
that changed, with one warning naming it, and takes every other change.
"""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

from ocrd.config.settings import Settings
from ocrd.daemon import RESTART_ONLY, keep_restart_only_values

# Read where they are used (each request, connection, load or reaper round), or handed to the
# scheduler, directory, control plane and middlewares by Daemon.reload.
APPLIES_ON_RELOAD = {
    "log_level", "default_model", "models", "upstreams",
    "http.allow_remote_image_urls", "http.request_timeout", "http.max_connections",
    "http.header_timeout", "http.body_timeout", "http.body_min_rate", "http.api_keys",
    "http.cors_origins",
    "grpc.client_certs", "grpc.tokens", "grpc.tokens_file",
    "limits.max_body_bytes", "limits.max_image_bytes", "limits.max_image_pixels",
    "limits.max_images_per_request", "limits.max_json_depth", "limits.max_json_items",
    "limits.max_json_values", "limits.max_document_bytes", "limits.max_pages_per_request",
    "limits.max_page_pixels", "limits.max_file_bytes", "documents.default_dpi", "documents.pages_in_flight",
    "documents.page_attempts", "batches.concurrency",
    "scheduler.keep_alive", "scheduler.queue_size", "scheduler.auto_load", "scheduler.max_loaded_models",
    "scheduler.load_timeout", "scheduler.drain_timeout", "scheduler.reap_interval",
    "scheduler.warm_runners",
    "builtin.ppocr_det_limit_side_len", "builtin.tesseract_languages", "builtin.tesseract_psm",
    "builtin.layout", "builtin.orientation", "builtin.preprocess",
    "transformers.python", "transformers.device", "transformers.quantization", "transformers.dtype",
    "transformers.attn_implementation", "transformers.max_new_tokens", "transformers.generation",
    "transformers.allow_remote_code",
    "cache.hub_dir",
    "planner.engine",
    "gpu.devices", "gpu.reserve_mib",
    "vllm.launcher", "vllm.image", "vllm.pull_images", "vllm.python", "vllm.device", "vllm.args",
    "vllm.env", "vllm.restart_attempts", "vllm.restart_backoff", "vllm.max_concurrent_requests",
    # Read by the registration each round (ocrd.cluster); a reload starts a round at once.
    "cluster.router_url", "cluster.advertise_url", "cluster.interval", "cluster.timeout",
}  # fmt: skip


def every_key() -> set[str]:
    """Top-level keys, and ``section.key`` for the keys of each section."""
    keys = set()
    for name, field in Settings.model_fields.items():
        if field.exclude:
            continue  # config_path: where the file came from, not a setting
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys |= {f"{name}.{key}" for key in section.model_fields}
        else:
            keys.add(name)
    return keys


def restart_only() -> set[str]:
    return {f"{section}.{key}" if section else key for section, keys in RESTART_ONLY.items() for key in keys}


def test_every_setting_either_applies_on_reload_or_waits_for_a_restart():
    assert restart_only() & APPLIES_ON_RELOAD == set()
    assert restart_only() | APPLIES_ON_RELOAD == every_key()


def test_restart_only_keys_are_those_bound_at_start():
    assert restart_only() == {
        "runtime_dir", "state_dir", "http.host", "http.port", "grpc.socket", "grpc.socket_mode", "grpc.socket_group",
        "grpc.listen", "grpc.tls_cert", "grpc.tls_key", "grpc.tls_client_ca", "builtin.tesseract_cmd",
        "vllm.instance",
    }  # fmt: skip


def test_a_reload_keeps_a_changed_restart_only_value_with_one_warning_and_takes_the_rest(
    tmp_path, caplog: pytest.LogCaptureFixture
):
    running = Settings(runtime_dir=tmp_path / "a", http={"port": 8000}, grpc={"socket_mode": 0o660})
    loaded = Settings(runtime_dir=tmp_path / "b", http={"port": 9000, "cors_origins": ["https://x.example"]},
                      grpc={"socket_mode": 0o660}, scheduler={"keep_alive": 60})

    with caplog.at_level(logging.WARNING, logger="ocrd"):
        applied = keep_restart_only_values(running, loaded)

    assert (applied.runtime_dir, applied.http.port) == (tmp_path / "a", 8000)
    assert applied.http.cors_origins == ["https://x.example"]
    assert applied.scheduler.keep_alive == 60
    assert [record.getMessage() for record in caplog.records] == [
        f"runtime_dir changed; it takes effect after a restart (until then: {tmp_path / 'a'})",
        "http.port changed; it takes effect after a restart (until then: 8000)",
    ]


def test_a_reload_without_restart_only_changes_warns_nothing(caplog: pytest.LogCaptureFixture):
    running = Settings(grpc={"socket_mode": 0o600})
    loaded = Settings(grpc={"socket_mode": 0o600}, log_level="debug")

    with caplog.at_level(logging.WARNING, logger="ocrd"):
        applied = keep_restart_only_values(running, loaded)

    assert applied == loaded
    assert caplog.records == []
