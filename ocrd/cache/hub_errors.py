"""What a failed download from the Hugging Face Hub means to the person who asked for it.

huggingface_hub raises a dozen exception types (and wraps connection errors in others); each
becomes one ``OcrdError`` with one line that says what to do: offline or unreachable Hub ->
UNAVAILABLE, unknown repo or revision -> NOT_FOUND, a gated repo or a refused token ->
PERMISSION_DENIED, a full disk -> RESOURCE_EXHAUSTED, a cache ocrd may not write ->
FAILED_PRECONDITION. Anything else is returned unchanged (INTERNAL, traceback in the journal).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from ocrd.errors import (
    ConfigError,
    Conflict,
    HubUnavailable,
    ModelNotFound,
    OcrdError,
    PermissionDenied,
    StorageFull,
)

TOKEN_HINT = "set HF_TOKEN for the ocrd service (systemctl edit ocrd: Environment=HF_TOKEN=...)"


class DownloadStopped(Exception):
    """Raised inside huggingface_hub's download threads to end a download nobody waits for."""


@dataclass(frozen=True)
class Download:
    """What was being downloaded, for the messages."""

    repo_id: str
    revision: str
    endpoint: str
    hub_dir: Path


def offline_error(download: Download) -> HubUnavailable:
    return HubUnavailable(
        f"ocrd runs with HF_HUB_OFFLINE=1, so it cannot download {download.repo_id}; unset "
        "HF_HUB_OFFLINE in its environment, or copy the model's folder into the cache from a "
        f"host that has it ({download.hub_dir})"
    )


def hub_error(exc: BaseException, download: Download) -> BaseException:
    """The OcrdError for ``exc``; ``exc`` itself when it is none of the known failures."""
    # Imported when a download failed: huggingface_hub.errors brings its HTTP client (~30 ms),
    # and the daemon imports this module on its way to READY.
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision, endpoint = download.repo_id, download.revision, download.endpoint
    if isinstance(exc, OcrdError):
        return exc
    if isinstance(exc, DownloadStopped):
        return Conflict(f"the download of {repo} was stopped before it finished (no client was "
                        "waiting for it any more, or ocrd is stopping); pull it again")
    if _find(exc, OfflineModeIsEnabled) is not None:
        return offline_error(download)
    if isinstance(exc, GatedRepoError):  # before RepositoryNotFoundError: it is one
        return PermissionDenied(
            f"{repo} is a gated model: accept its licence on {endpoint}/{repo} with your Hugging "
            f"Face account, then {TOKEN_HINT} with a token of that account"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(
            f"{repo} does not exist on the Hub at {endpoint} (if it is private, {TOKEN_HINT})",
            code="repo_not_found",
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(f"{repo} has no revision {revision!r} on the Hub at {endpoint}",
                             code="revision_not_found")
    if isinstance(exc, RemoteEntryNotFoundError):
        return ModelNotFound(f"a file of {repo}@{revision} went missing on the Hub while it was "
                             "being downloaded; pull it again", code="file_not_found")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return _http_status_error(exc.response.status_code, download)
    if isinstance(exc, OSError) and exc.errno is not None:
        translated = _disk_error(exc, download)
        if translated is not None:
            return translated
    cause = _network_cause(exc)
    if cause is not None:
        return HubUnavailable(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {repo} ({cause}); check "
            "the host's network, proxy (HTTPS_PROXY) and HF_ENDPOINT, or copy the model into the "
            f"cache from another host ({download.hub_dir})"
        )
    if isinstance(exc, FileMetadataError):
        return HubUnavailable(f"{endpoint} does not answer like a Hugging Face Hub (HF_ENDPOINT, or "
                              f"a proxy in the way?): {exc}".splitlines()[0])
    return exc


def _http_status_error(status: int, download: Download) -> OcrdError:
    repo, endpoint = download.repo_id, download.endpoint
    if status in (401, 403):
        return PermissionDenied(f"the Hub at {endpoint} refused access to {repo} (HTTP {status}): "
                                f"if the model is gated or private, {TOKEN_HINT}")
    if status == 429:
        return HubUnavailable(f"the Hub at {endpoint} is rate-limiting downloads of {repo} "
                              f"(HTTP 429); try again later, or {TOKEN_HINT}")
    return HubUnavailable(f"the Hub at {endpoint} answered HTTP {status} while downloading {repo}; "
                          "try again later")


def _disk_error(exc: OSError, download: Download) -> OcrdError | None:
    where = download.hub_dir
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            f"no space left in {where} while downloading {download.repo_id}; free some "
            "(`ocrctl cache ls`, `ocrctl cache rm MODEL`) or move the cache (HF_HUB_CACHE) to a "
            "bigger disk"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(
            f"ocrd may not write to the Hugging Face cache at {where} ({exc.strerror}); give the "
            "ocrd user write access to it, or point cache.hub_dir / HF_HUB_CACHE elsewhere"
        )
    return None


def _network_cause(exc: BaseException) -> str | None:
    """A connection failure in ``exc`` or what it wraps, in a few words; None if there is none."""
    import httpx2  # huggingface_hub's HTTP client (see hub_error)
    from huggingface_hub.errors import LocalEntryNotFoundError

    if _find(exc, httpx2.TimeoutException) is not None:
        return "timed out"
    failure = _find(exc, httpx2.TransportError, ConnectionError)
    if failure is not None:
        return (str(failure).splitlines() or [""])[0] or type(failure).__name__
    if isinstance(exc, LocalEntryNotFoundError):
        return "connection failed"  # huggingface_hub's fallback error, its cause dropped
    return None


def _find(exc: BaseException, *types: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception it wraps (cause or context) of one of ``types``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
