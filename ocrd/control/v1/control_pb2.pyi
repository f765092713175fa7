import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_NOT_LOADED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_UNLOADING: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]

class DownloadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOWNLOAD_STATE_UNSPECIFIED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_NOT_NEEDED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_NOT_DOWNLOADED: _ClassVar[DownloadState]
    DOWNLOAD_STATE_PARTIAL: _ClassVar[DownloadState]
    DOWNLOAD_STATE_DOWNLOADED: _ClassVar[DownloadState]

class CheckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATUS_UNSPECIFIED: _ClassVar[CheckStatus]
    CHECK_STATUS_OK: _ClassVar[CheckStatus]
    CHECK_STATUS_WARN: _ClassVar[CheckStatus]
    CHECK_STATUS_FAIL: _ClassVar[CheckStatus]
    CHECK_STATUS_SKIPPED: _ClassVar[CheckStatus]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_NOT_LOADED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_UNLOADING: ModelState
MODEL_STATE_FAILED: ModelState
DOWNLOAD_STATE_UNSPECIFIED: DownloadState
DOWNLOAD_STATE_NOT_NEEDED: DownloadState
DOWNLOAD_STATE_NOT_DOWNLOADED: DownloadState
DOWNLOAD_STATE_PARTIAL: DownloadState
DOWNLOAD_STATE_DOWNLOADED: DownloadState
CHECK_STATUS_UNSPECIFIED: CheckStatus
CHECK_STATUS_OK: CheckStatus
CHECK_STATUS_WARN: CheckStatus
CHECK_STATUS_FAIL: CheckStatus
CHECK_STATUS_SKIPPED: CheckStatus

class ModelInfo(_message.Message):
    __slots__ = ("id", "aliases", "engine", "state", "device", "pid", "memory_bytes", "pinned", "keep_alive_seconds", "in_flight", "queued", "queue_capacity", "last_used", "loaded_at", "error", "description", "replica_pids", "license", "license_note", "size_bytes", "engines", "download", "unavailable_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_PIDS_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    LICENSE_NOTE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    engine: str
    state: ModelState
    device: str
    pid: int
    memory_bytes: int
    pinned: bool
    keep_alive_seconds: float
    in_flight: int
    queued: int
    queue_capacity: int
    last_used: _timestamp_pb2.Timestamp
    loaded_at: _timestamp_pb2.Timestamp
    error: str
    description: str
    replica_pids: _containers.RepeatedScalarFieldContainer[int]
    license: str
    license_note: str
    size_bytes: int
    engines: _containers.RepeatedCompositeFieldContainer[ModelEngine]
    download: DownloadState
    unavailable_reason: str
    def __init__(self, id: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., engine: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., device: _Optional[str] = ..., pid: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., pinned: _Optional[bool] = ..., keep_alive_seconds: _Optional[float] = ..., in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., queue_capacity: _Optional[int] = ..., last_used: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., description: _Optional[str] = ..., replica_pids: _Optional[_Iterable[int]] = ..., license: _Optional[str] = ..., license_note: _Optional[str] = ..., size_bytes: _Optional[int] = ..., engines: _Optional[_Iterable[_Union[ModelEngine, _Mapping]]] = ..., download: _Optional[_Union[DownloadState, str]] = ..., unavailable_reason: _Optional[str] = ...) -> None: ...

class ModelEngine(_message.Message):
    __slots__ = ("name", "available", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    reason: str
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class WarmRunner(_message.Message):
    __slots__ = ("engine", "device", "pid", "memory_bytes", "ready")
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    engine: str
    device: str
    pid: int
    memory_bytes: int
    ready: bool
    def __init__(self, engine: _Optional[str] = ..., device: _Optional[str] = ..., pid: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., ready: _Optional[bool] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("version", "pid", "uptime_seconds", "http_url", "grpc_addresses", "models", "config_path", "default_model", "warm_runners")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HTTP_URL_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    WARM_RUNNERS_FIELD_NUMBER: _ClassVar[int]
    version: str
    pid: int
    uptime_seconds: float
    http_url: str
    grpc_addresses: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    config_path: str
    default_model: str
    warm_runners: _containers.RepeatedCompositeFieldContainer[WarmRunner]
    def __init__(self, version: _Optional[str] = ..., pid: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., http_url: _Optional[str] = ..., grpc_addresses: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., config_path: _Optional[str] = ..., default_model: _Optional[str] = ..., warm_runners: _Optional[_Iterable[_Union[WarmRunner, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("loaded_only", "all")
    LOADED_ONLY_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    loaded_only: bool
    all: bool
    def __init__(self, loaded_only: _Optional[bool] = ..., all: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "warm_runners", "cache_dir")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    WARM_RUNNERS_FIELD_NUMBER: _ClassVar[int]
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    warm_runners: _containers.RepeatedCompositeFieldContainer[WarmRunner]
    cache_dir: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., warm_runners: _Optional[_Iterable[_Union[WarmRunner, _Mapping]]] = ..., cache_dir: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model", "keep_alive_seconds", "pin", "engine", "quantization")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    keep_alive_seconds: float
    pin: bool
    engine: str
    quantization: str
    def __init__(self, model: _Optional[str] = ..., keep_alive_seconds: _Optional[float] = ..., pin: _Optional[bool] = ..., engine: _Optional[str] = ..., quantization: _Optional[str] = ...) -> None: ...

class LoadModelProgress(_message.Message):
    __slots__ = ("model", "state", "stage", "progress", "message")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    state: ModelState
    stage: str
    progress: float
    message: str
    def __init__(self, model: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("model", "was_loaded", "freed_bytes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WAS_LOADED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    model: str
    was_loaded: bool
    freed_bytes: int
    def __init__(self, model: _Optional[str] = ..., was_loaded: _Optional[bool] = ..., freed_bytes: _Optional[int] = ...) -> None: ...

class ExplainModeRequest(_message.Message):
    __slots__ = ("model", "engine", "quantization")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    engine: str
    quantization: str
    def __init__(self, model: _Optional[str] = ..., engine: _Optional[str] = ..., quantization: _Optional[str] = ...) -> None: ...

class ExplainModeResponse(_message.Message):
    __slots__ = ("model", "engine", "device", "quantization", "gpu_memory_utilization", "estimated_bytes", "reasons", "fits", "shortfall_bytes", "evictable_models")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVICTABLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    model: str
    engine: str
    device: str
    quantization: str
    gpu_memory_utilization: float
    estimated_bytes: int
    reasons: _containers.RepeatedScalarFieldContainer[str]
    fits: bool
    shortfall_bytes: int
    evictable_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., engine: _Optional[str] = ..., device: _Optional[str] = ..., quantization: _Optional[str] = ..., gpu_memory_utilization: _Optional[float] = ..., estimated_bytes: _Optional[int] = ..., reasons: _Optional[_Iterable[str]] = ..., fits: _Optional[bool] = ..., shortfall_bytes: _Optional[int] = ..., evictable_models: _Optional[_Iterable[str]] = ...) -> None: ...

class GetGpuRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GpuProcess(_message.Message):
    __slots__ = ("pid", "used_bytes", "model", "name")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_bytes: int
    model: str
    name: str
    def __init__(self, pid: _Optional[int] = ..., used_bytes: _Optional[int] = ..., model: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GpuDevice(_message.Message):
    __slots__ = ("index", "name", "uuid", "total_bytes", "used_bytes", "free_bytes", "utilization_percent", "processes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    uuid: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    utilization_percent: int
    processes: _containers.RepeatedCompositeFieldContainer[GpuProcess]
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ..., total_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., utilization_percent: _Optional[int] = ..., processes: _Optional[_Iterable[_Union[GpuProcess, _Mapping]]] = ...) -> None: ...

class GetGpuResponse(_message.Message):
    __slots__ = ("available", "reason", "driver_version", "cuda_version", "devices")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    available: bool
    reason: str
    driver_version: str
    cuda_version: str
    devices: _containers.RepeatedCompositeFieldContainer[GpuDevice]
    def __init__(self, available: _Optional[bool] = ..., reason: _Optional[str] = ..., driver_version: _Optional[str] = ..., cuda_version: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[GpuDevice, _Mapping]]] = ...) -> None: ...

class ListCacheRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CachedRevision(_message.Message):
    __slots__ = ("commit", "refs", "size_bytes", "last_modified")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    commit: str
    refs: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    last_modified: _timestamp_pb2.Timestamp
    def __init__(self, commit: _Optional[str] = ..., refs: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., last_modified: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CachedRepo(_message.Message):
    __slots__ = ("repo_id", "repo_type", "size_bytes", "revisions", "last_accessed", "last_modified", "loaded_by_engine", "in_catalog")
    REPO_ID_FIELD_NUMBER: _ClassVar[int]
    REPO_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESSED_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    LOADED_BY_ENGINE_FIELD_NUMBER: _ClassVar[int]
    IN_CATALOG_FIELD_NUMBER: _ClassVar[int]
    repo_id: str
    repo_type: str
    size_bytes: int
    revisions: _containers.RepeatedCompositeFieldContainer[CachedRevision]
    last_accessed: _timestamp_pb2.Timestamp
    last_modified: _timestamp_pb2.Timestamp
    loaded_by_engine: str
    in_catalog: bool
    def __init__(self, repo_id: _Optional[str] = ..., repo_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., revisions: _Optional[_Iterable[_Union[CachedRevision, _Mapping]]] = ..., last_accessed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_modified: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loaded_by_engine: _Optional[str] = ..., in_catalog: _Optional[bool] = ...) -> None: ...

class ListCacheResponse(_message.Message):
    __slots__ = ("cache_dir", "repos", "total_bytes")
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    REPOS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    cache_dir: str
    repos: _containers.RepeatedCompositeFieldContainer[CachedRepo]
    total_bytes: int
    def __init__(self, cache_dir: _Optional[str] = ..., repos: _Optional[_Iterable[_Union[CachedRepo, _Mapping]]] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class DeleteCacheRequest(_message.Message):
    __slots__ = ("model", "revision", "dry_run", "force")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    revision: str
    dry_run: bool
    force: bool
    def __init__(self, model: _Optional[str] = ..., revision: _Optional[str] = ..., dry_run: _Optional[bool] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteCacheResponse(_message.Message):
    __slots__ = ("freed_bytes", "deleted_paths")
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELETED_PATHS_FIELD_NUMBER: _ClassVar[int]
    freed_bytes: int
    deleted_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, freed_bytes: _Optional[int] = ..., deleted_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class PullModelRequest(_message.Message):
    __slots__ = ("model", "revision")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    model: str
    revision: str
    def __init__(self, model: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class PullModelProgress(_message.Message):
    __slots__ = ("model", "file", "downloaded_bytes", "total_bytes", "done", "message", "commit", "files_total", "files_done")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    model: str
    file: str
    downloaded_bytes: int
    total_bytes: int
    done: bool
    message: str
    commit: str
    files_total: int
    files_done: int
    def __init__(self, model: _Optional[str] = ..., file: _Optional[str] = ..., downloaded_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., done: _Optional[bool] = ..., message: _Optional[str] = ..., commit: _Optional[str] = ..., files_total: _Optional[int] = ..., files_done: _Optional[int] = ...) -> None: ...

class VerifyCacheRequest(_message.Message):
    __slots__ = ("model", "revision")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    model: str
    revision: str
    def __init__(self, model: _Optional[str] = ..., revision: _Optional[str] = ...) -> None: ...

class FileProblem(_message.Message):
    __slots__ = ("file", "problem")
    FILE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    file: str
    problem: str
    def __init__(self, file: _Optional[str] = ..., problem: _Optional[str] = ...) -> None: ...

class VerifiedRevision(_message.Message):
    __slots__ = ("commit", "refs", "files_checked", "problems")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    FILES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    commit: str
    refs: _containers.RepeatedScalarFieldContainer[str]
    files_checked: int
    problems: _containers.RepeatedCompositeFieldContainer[FileProblem]
    def __init__(self, commit: _Optional[str] = ..., refs: _Optional[_Iterable[str]] = ..., files_checked: _Optional[int] = ..., problems: _Optional[_Iterable[_Union[FileProblem, _Mapping]]] = ...) -> None: ...

class VerifyCacheResponse(_message.Message):
    __slots__ = ("repo_id", "revisions", "ok")
    REPO_ID_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    repo_id: str
    revisions: _containers.RepeatedCompositeFieldContainer[VerifiedRevision]
    ok: bool
    def __init__(self, repo_id: _Optional[str] = ..., revisions: _Optional[_Iterable[_Union[VerifiedRevision, _Mapping]]] = ..., ok: _Optional[bool] = ...) -> None: ...

class CleanupRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class CleanupResponse(_message.Message):
    __slots__ = ("unloaded_models", "ended_pids", "removed_containers", "freed_bytes", "actions", "removed_sockets")
    UNLOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ENDED_PIDS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SOCKETS_FIELD_NUMBER: _ClassVar[int]
    unloaded_models: _containers.RepeatedScalarFieldContainer[str]
    ended_pids: _containers.RepeatedScalarFieldContainer[int]
    removed_containers: _containers.RepeatedScalarFieldContainer[str]
    freed_bytes: int
    actions: _containers.RepeatedScalarFieldContainer[str]
    removed_sockets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, unloaded_models: _Optional[_Iterable[str]] = ..., ended_pids: _Optional[_Iterable[int]] = ..., removed_containers: _Optional[_Iterable[str]] = ..., freed_bytes: _Optional[int] = ..., actions: _Optional[_Iterable[str]] = ..., removed_sockets: _Optional[_Iterable[str]] = ...) -> None: ...

class DiagnoseRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class Check(_message.Message):
    __slots__ = ("name", "status", "message", "fix")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: CheckStatus
    message: str
    fix: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[CheckStatus, str]] = ..., message: _Optional[str] = ..., fix: _Optional[str] = ...) -> None: ...

class DiagnoseResponse(_message.Message):
    __slots__ = ("checks",)
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[Check]
    def __init__(self, checks: _Optional[_Iterable[_Union[Check, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "time", "kind", "model", "state", "message", "progress")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    kind: str
    model: str
    state: ModelState
    message: str
    progress: float
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., message: _Optional[str] = ..., progress: _Optional[float] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("model", "tail", "follow")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    tail: int
    follow: bool
    def __init__(self, model: _Optional[str] = ..., tail: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("model", "line")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    model: str
    line: str
    def __init__(self, model: _Optional[str] = ..., line: _Optional[str] = ...) -> None: ...

class PullImageRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: str
    def __init__(self, image: _Optional[str] = ...) -> None: ...

class PullImageProgress(_message.Message):
    __slots__ = ("image", "layer", "status", "current_bytes", "total_bytes", "done", "image_id", "message")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    image: str
    layer: str
    status: str
    current_bytes: int
    total_bytes: int
    done: bool
    image_id: str
    message: str
    def __init__(self, image: _Optional[str] = ..., layer: _Optional[str] = ..., status: _Optional[str] = ..., current_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., done: _Optional[bool] = ..., image_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StoredFile(_message.Message):
    __slots__ = ("id", "filename", "purpose", "bytes", "created_at", "expires_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., filename: _Optional[str] = ..., purpose: _Optional[str] = ..., bytes: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UploadFileHeader(_message.Message):
    __slots__ = ("filename", "purpose", "expires_after_seconds")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    filename: str
    purpose: str
    expires_after_seconds: int
    def __init__(self, filename: _Optional[str] = ..., purpose: _Optional[str] = ..., expires_after_seconds: _Optional[int] = ...) -> None: ...

class UploadFileRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadFileHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadFileHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: StoredFile
    data: bytes
    def __init__(self, file: _Optional[_Union[StoredFile, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CreateBatchRequest(_message.Message):
    __slots__ = ("input_file_id", "endpoint", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INPUT_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    input_file_id: str
    endpoint: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, input_file_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetBatchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelBatchRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListBatchesRequest(_message.Message):
    __slots__ = ("after", "limit")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after: str
    limit: int
    def __init__(self, after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListBatchesResponse(_message.Message):
    __slots__ = ("batches", "has_more")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[Batch]
    has_more: bool
    def __init__(self, batches: _Optional[_Iterable[_Union[Batch, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class BatchError(_message.Message):
    __slots__ = ("code", "message", "param", "line")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    param: str
    line: int
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., param: _Optional[str] = ..., line: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("id", "status", "endpoint", "input_file_id", "output_file_id", "error_file_id", "total", "completed", "failed", "errors", "metadata", "created_at", "expires_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "ended")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_AT_FIELD_NUMBER: _ClassVar[int]
    FINALIZING_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLING_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    endpoint: str
    input_file_id: str
    output_file_id: str
    error_file_id: str
    total: int
    completed: int
    failed: int
    errors: _containers.RepeatedCompositeFieldContainer[BatchError]
    metadata: _containers.ScalarMap[str, str]
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    in_progress_at: _timestamp_pb2.Timestamp
    finalizing_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    failed_at: _timestamp_pb2.Timestamp
    expired_at: _timestamp_pb2.Timestamp
    cancelling_at: _timestamp_pb2.Timestamp
    cancelled_at: _timestamp_pb2.Timestamp
    ended: bool
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., endpoint: _Optional[str] = ..., input_file_id: _Optional[str] = ..., output_file_id: _Optional[str] = ..., error_file_id: _Optional[str] = ..., total: _Optional[int] = ..., completed: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[BatchError, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_progress_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finalizing_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelling_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended: _Optional[bool] = ...) -> None: ...
