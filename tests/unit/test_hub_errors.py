"""``ocrd.cache.hub_errors.hub_error``: the failures a download meets that tests cannot cause for real
(a full disk, a read-only cache, a timeout), as the exceptions the OS and httpx raise for them.
The Hub's own answers (404, gated, 500, connection refused) are covered end to end in
tests/integration/test_pull.py against FakeHub."""

from __future__ import annotations

import errno
from pathlib import Path

import grpc
import httpx2
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from ocrd.cache.hub_errors import Download, hub_error
from ocrd.errors import ConfigError, HubUnavailable, StorageFull

DOWNLOAD = Download("org/model", "main", "https://hub.example", Path("/srv/hf/hub"))


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    """``outer`` raised ``from cause``, as huggingface_hub chains its fallback errors."""
    try:
        raise outer from cause
    except BaseException as exc:
        return exc


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_resource_exhausted_and_says_how_to_free_space(code):
    error = hub_error(OSError(code, "No space left on device"), DOWNLOAD)
    assert isinstance(error, StorageFull)
    assert grpc.StatusCode[error.grpc_code] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "/srv/hf/hub" in error.message and "ocrctl cache rm" in error.message


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_cache_ocrd_may_not_write_is_a_failed_precondition(code):
    error = hub_error(OSError(code, "Permission denied"), DOWNLOAD)
    assert isinstance(error, ConfigError)
    assert grpc.StatusCode[error.grpc_code] is grpc.StatusCode.FAILED_PRECONDITION
    assert "write access" in error.message


def test_a_timeout_wrapped_by_huggingface_hub_is_unavailable():
    cause = httpx2.ReadTimeout("The read operation timed out")
    error = hub_error(wrapped(LocalEntryNotFoundError("cannot find the requested files"), cause), DOWNLOAD)
    assert isinstance(error, HubUnavailable)
    assert error.message.startswith("cannot reach the Hugging Face Hub at https://hub.example")
    assert "(timed out)" in error.message


def test_offline_mode_met_inside_a_download_is_the_offline_message():
    cause = OfflineModeIsEnabled("offline mode is enabled")
    error = hub_error(wrapped(LocalEntryNotFoundError("cannot find"), cause), DOWNLOAD)
    assert isinstance(error, HubUnavailable) and "HF_HUB_OFFLINE=1" in error.message


def test_messages_are_one_line():
    for exc in (OSError(errno.ENOSPC, "full"), httpx2.ConnectError("refused\nsecond line")):
        assert "\n" not in hub_error(exc, DOWNLOAD).message


def test_anything_else_is_passed_through_unchanged():
    bug = KeyError("siblings")
    assert hub_error(bug, DOWNLOAD) is bug
    other_os_error = OSError(errno.EIO, "I/O error")
    assert hub_error(other_os_error, DOWNLOAD) is other_os_error
