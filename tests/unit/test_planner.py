"""ocrd.planning.planner: the engine, device and quantization ocrd chooses, and the reasons it gives.

The planner is pure, so these tests state the host outright: GPUs with their free memory, whether
Docker has an NVIDIA runtime (``vllm_availability`` from a ``DockerStatus``), what ocrd's models
hold. Sizes come from the real catalog (models that are not downloaded) or from real safetensors
headers written here (an uncatalogued cached model). The seed-table tests compare ocrd's figures
with the user's original document and spell out where and why they differ (docs/planner.md).
"""

from __future__ import annotations

import json

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.planning.availability import Availability, vllm_availability
from ocrd.planning.gpu import GpuDevice, GpuSnapshot
from ocrd.planning.model_size import SizeFacts, catalog_size_facts, size_facts
from ocrd.planning.planner import (
    ACTIVATION_BYTES,
    CUDA_CONTEXT_BYTES,
    GIB,
    KV_UNKNOWN_BYTES,
    MIB,
    Gpu,
    Host,
    LoadedModel,
    Preference,
    WarmRunner,
    allowed_gpus,
    plan,
    summary,
    transformers_estimate,
    utilization,
    vllm_estimate,
    vllm_max_model_len,
)
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.sized_models import QWEN_LIKE_CONFIG, cache_model, vlm_tensors

CATALOG = Catalog.load_default()
DOCKER = vllm_availability("docker", DockerStatus(True, version="20.10.24", runtimes=("nvidia", "runc")), None)
NO_DOCKER = vllm_availability("docker", DockerStatus(False, reason="Docker is not reachable: no socket"), None)
UNKNOWN = "someone/unlisted-vlm"  # a cached model the catalog does not know
GB = 10**9


def gpu(free_gib: float, *, index: int = 0, total_gib: float | None = None, name: str = "Test GPU") -> Gpu:
    total = total_gib if total_gib is not None else free_gib
    return Gpu(index, f"GPU-{index}{index}{index}-test", name, int(total * GIB), int(free_gib * GIB))


def host(free_gib: float | None, docker: bool = False, **more) -> Host:
    gpus = (gpu(free_gib),) if free_gib is not None else ()
    more.setdefault("vllm", DOCKER if docker else NO_DOCKER)
    return Host(gpus=gpus, no_gpu_reason="no NVIDIA driver: NVML could not start", **more)


@pytest.fixture(scope="module")
def unknown(tmp_path_factory) -> tuple[CatalogEntry, SizeFacts]:
    """A ~4B VLM in the cache, uncatalogued: 0.4B vision, 0.6B embeddings, 3.0B linear weights."""
    hub = tmp_path_factory.mktemp("hub")
    tensors = vlm_tensors(vision=384 * MIB, embeddings=576 * MIB, linear=2880 * MIB)
    snapshot = cache_model(hub, UNKNOWN, tensors)
    entry = CATALOG.inferred_entry(UNKNOWN, QWEN_LIKE_CONFIG)
    return entry, size_facts(snapshot, json.loads((snapshot / "config.json").read_text()), entry)


def sized(model: str, unknown) -> tuple[CatalogEntry, SizeFacts]:
    if model == UNKNOWN:
        return unknown
    entry = CATALOG.resolve(model)
    return entry, catalog_size_facts(entry)


# --- the scenario table ---------------------------------------------------------------------------

CPU = "transformers on the CPU, unquantized: no GPU to use"
# Said only where vLLM comes first in the catalog (dots.ocr): later engines are not looked at
# once one fits.
NEEDS_GPU = "vLLM not used: it needs an NVIDIA GPU"
VLLM_FITS = "vLLM, the first engine in the catalog's order, fits"
NO_DOCKER_WHY = "vllm not used: Docker is not reachable"

# (model, GiB free on one GPU or None for no GPU, Docker with the NVIDIA runtime, engine,
#  quantization, a reason that must be among the reasons). "" as engine: nothing fits.
SCENARIOS = [
    ("dots.ocr", None, True, "transformers", "none", NEEDS_GPU),
    ("dots.ocr", 6, True, "", "4bit", "vLLM would need about 10.4 GiB on cuda:0, more than the 5.5 GiB usable"),
    ("dots.ocr", 6, False, "", "4bit", "0.4 GiB is missing"),
    ("dots.ocr", 8, True, "transformers", "8bit", "transformers unquantized would need about 8.4 GiB"),
    ("dots.ocr", 8, False, "transformers", "8bit", NO_DOCKER_WHY),
    ("dots.ocr", 12, True, "vllm", "none", VLLM_FITS),
    ("dots.ocr", 12, False, "transformers", "none", NO_DOCKER_WHY),
    ("dots.ocr", 24, True, "vllm", "none", "gpu_memory_utilization 0.44"),
    ("dots.ocr", 24, False, "transformers", "none", "transformers unquantized fits"),
    ("dots.ocr", 80, True, "vllm", "none", "gpu_memory_utilization 0.14"),
    ("dots.ocr", 80, False, "transformers", "none", NO_DOCKER_WHY),
    ("got-ocr2", None, False, "transformers", "none", CPU),
    ("got-ocr2", 6, True, "transformers", "none", "transformers unquantized fits"),
    ("got-ocr2", 8, False, "transformers", "none", "transformers unquantized fits"),
    ("got-ocr2", 12, True, "transformers", "none", "transformers unquantized fits"),
    ("got-ocr2", 24, False, "transformers", "none", "transformers unquantized fits"),
    ("got-ocr2", 80, True, "transformers", "none", "transformers unquantized fits"),
    ("qwen2-vl-2b", None, True, "transformers", "none", CPU),
    ("qwen2-vl-2b", 6, True, "transformers", "8bit", "transformers unquantized would need about 6.9 GiB"),
    ("qwen2-vl-2b", 8, True, "transformers", "none", "transformers unquantized fits"),
    ("qwen2-vl-2b", 12, False, "transformers", "none", "transformers unquantized fits"),
    ("qwen2-vl-2b", 24, True, "transformers", "none", "transformers unquantized fits"),
    ("qwen2-vl-2b", 80, False, "transformers", "none", "transformers unquantized fits"),
    ("phi-3.5-vision", None, False, "transformers", "none", CPU),
    ("phi-3.5-vision", 6, True, "transformers", "4bit", "transformers 8-bit would need about 6.9 GiB"),
    ("phi-3.5-vision", 8, False, "transformers", "8bit", "transformers unquantized would need about 10.6 GiB"),
    ("phi-3.5-vision", 12, True, "transformers", "none", "transformers unquantized fits"),
    ("phi-3.5-vision", 24, False, "transformers", "none", "transformers unquantized fits"),
    ("phi-3.5-vision", 80, True, "transformers", "none", "transformers unquantized fits"),
    ("moondream2", None, True, "transformers", "none", CPU),
    ("moondream2", 6, False, "transformers", "8bit", "transformers unquantized would need about 6.3 GiB"),
    ("moondream2", 8, True, "transformers", "none", "transformers unquantized fits"),
    ("moondream2", 12, False, "transformers", "none", "transformers unquantized fits"),
    ("moondream2", 24, True, "transformers", "none", "transformers unquantized fits"),
    ("moondream2", 80, False, "transformers", "none", "transformers unquantized fits"),
    ("qwen2-vl-7b", None, False, "transformers", "none", CPU),
    ("qwen2-vl-7b", 6, True, "", "4bit", "2.5 GiB is missing"),
    ("qwen2-vl-7b", 6, False, "", "4bit", NO_DOCKER_WHY),
    ("qwen2-vl-7b", 8, True, "", "4bit", "vLLM would need about 20.2 GiB"),
    ("qwen2-vl-7b", 8, False, "", "4bit", "0.5 GiB is missing"),
    ("qwen2-vl-7b", 12, False, "transformers", "8bit", "transformers unquantized would need about 18.2 GiB"),
    ("qwen2-vl-7b", 24, True, "transformers", "none", "transformers unquantized fits"),
    ("qwen2-vl-7b", 80, False, "transformers", "none", "transformers unquantized fits"),
    (UNKNOWN, None, True, "transformers", "none", CPU),
    (UNKNOWN, 6, False, "transformers", "4bit", "transformers 8-bit would need about 6.6 GiB"),
    (UNKNOWN, 8, True, "transformers", "8bit", "transformers unquantized would need about 9.4 GiB"),
    (UNKNOWN, 12, False, "transformers", "none", "sizes from safetensors headers"),
    (UNKNOWN, 24, True, "transformers", "none", "KV cache for 6,144 tokens"),
    (UNKNOWN, 80, False, "transformers", "none", "transformers unquantized fits"),
]


@pytest.mark.parametrize(("model", "free", "docker", "engine", "quantization", "reason"), SCENARIOS,
                         ids=[f"{m}-{'cpu' if f is None else f'{f}GiB'}-{'docker' if d else 'nodocker'}"
                              for m, f, d, *_ in SCENARIOS])
def test_scenario(unknown, model, free, docker, engine, quantization, reason):
    entry, size = sized(model, unknown)
    decision = plan(entry, size, host(free, docker))
    assert (decision.engine, decision.quantization) == (engine, quantization), decision.reasons
    assert decision.fits == bool(engine)
    assert decision.device == ("cpu" if free is None else "cuda:0")
    assert any(reason in line for line in decision.reasons), decision.reasons
    if decision.fits and free is not None:
        # It fits: what it needs is within the usable memory (free minus gpu.reserve_mib).
        assert decision.estimated_bytes <= free * GIB - 512 * MIB
    if engine == "vllm":
        assert decision.estimated_bytes == round(decision.gpu_memory_utilization * free * GIB)
    else:
        assert decision.gpu_memory_utilization == 0.0


def test_the_first_reason_states_the_choice_and_the_gpu():
    entry, size = sized("qwen2-vl-2b", None)
    decision = plan(entry, size, Host(gpus=(gpu(8, name="NVIDIA RTX 4060"),)))
    assert decision.reasons[0] == ("transformers unquantized fits: it needs about 6.9 GiB on cuda:0 "
                                   "(NVIDIA RTX 4060), which has 7.5 GiB usable, the most of the GPUs "
                                   "ocrd may use")
    assert summary(decision) == "transformers on cuda:0, unquantized, about 6.9 GiB"
    assert decision.gpu_uuid == "GPU-000-test"


# --- the seed's table -----------------------------------------------------------------------------

SEED_8BIT_PLAUSIBLE = ["rednote-hilab/dots.ocr", "stepfun-ai/GOT-OCR-2.0-hf", "Qwen/Qwen2-VL-2B-Instruct",
                       "microsoft/Phi-3.5-vision-instruct", "vikhyatk/moondream2"]
SEED_VLLM_PLAUSIBLE = ["rednote-hilab/dots.ocr", "Qwen/Qwen2-VL-2B-Instruct", "microsoft/Phi-3.5-vision-instruct"]


@pytest.mark.parametrize("model", SEED_8BIT_PLAUSIBLE)
def test_seed_8bit_figures_are_every_weight_in_int8_plus_under_half_a_gb(model):
    # How the seed's column reads: the whole model at one byte per parameter, plus a little.
    entry = CATALOG.resolve(model)
    seed = entry.seed_memory_gb["transformers_8bit"] * GB
    assert entry.params_billion * GB <= seed <= entry.params_billion * GB + 0.5 * GB


@pytest.mark.parametrize("model", SEED_8BIT_PLAUSIBLE)
def test_ocrd_8bit_weights_are_within_25_percent_of_the_seed(model):
    # ocrd keeps the vision encoder in 16-bit (its runner quantizes only the language model), so
    # models with big vision towers (dots.ocr: 1.2B of 3.04B) come out above the seed, GOT-OCR2
    # below (the seed adds ~0.2 GB to 0.58 GB of int8 weights).
    entry = CATALOG.resolve(model)
    estimate = transformers_estimate(catalog_size_facts(entry), "8bit", on_gpu=True)
    seed = entry.seed_memory_gb["transformers_8bit"] * GB
    assert abs(estimate.weights / seed - 1) <= 0.25


@pytest.mark.parametrize("model", SEED_8BIT_PLAUSIBLE)
def test_ocrd_8bit_totals_add_context_activations_and_kv_to_the_weights(model):
    entry = CATALOG.resolve(model)
    estimate = transformers_estimate(catalog_size_facts(entry), "8bit", on_gpu=True)
    headroom = CUDA_CONTEXT_BYTES + ACTIVATION_BYTES + KV_UNKNOWN_BYTES
    assert estimate.total == estimate.weights + headroom
    assert estimate.total > entry.seed_memory_gb["transformers_8bit"] * GB


def test_seed_qwen2_vl_7b_in_8bit_is_below_its_own_weights():
    # 8.29e9 parameters at one byte each cannot be 4.5 GB; ocrd plans ~9 GB of weights.
    entry = CATALOG.resolve("qwen2-vl-7b")
    seed = entry.seed_memory_gb["transformers_8bit"] * GB
    assert entry.params_billion * GB > seed * 1.8
    estimate = transformers_estimate(catalog_size_facts(entry), "8bit", on_gpu=True)
    assert estimate.weights > 8 * GB > seed


@pytest.mark.parametrize("model", SEED_VLLM_PLAUSIBLE)
def test_ocrd_vllm_plans_the_seeds_figure_plus_at_most_4_gb_of_headroom(model):
    # The seed's vLLM figures hold the bf16 weights plus 1.6-2 GB; ocrd also reserves one
    # full-length sequence of KV cache (2 GiB without config.json), vLLM's profile run (1.5 GiB),
    # CUDA graphs (0.5 GiB) and the CUDA context (0.75 GiB).
    entry = CATALOG.resolve(model)
    estimate = vllm_estimate(catalog_size_facts(entry), vllm_max_model_len(entry))
    seed = entry.seed_memory_gb["vllm"] * GB
    assert estimate.weights <= seed <= estimate.total <= seed + 4 * GB


def test_seed_qwen2_vl_7b_on_vllm_is_below_its_bf16_weights():
    # 16.57 GB of bf16 weights do not fit in the seed's 12 GB ("requires > 12 GB VRAM").
    entry = CATALOG.resolve("qwen2-vl-7b")
    estimate = vllm_estimate(catalog_size_facts(entry), vllm_max_model_len(entry))
    assert estimate.weights > 16 * GB > entry.seed_memory_gb["vllm"] * GB


# --- estimates --------------------------------------------------------------------------------------


def test_quantization_shrinks_only_the_language_models_linear_weights():
    size = SizeFacts(total_params=10_000, vision_params=2_000, embedding_params=1_000, small_params=0,
                     kv_bytes_per_token=100)
    none, int8, nf4 = (transformers_estimate(size, q, on_gpu=True, max_new_tokens=952).weights
                       for q in ("none", "8bit", "4bit"))
    assert none == 20_000
    assert int8 == 3_000 * 2 + 7_000 * 1
    assert nf4 == round(3_000 * 2 + 7_000 * 0.5625)  # NF4 plus one fp32 absmax per 64 weights


def test_kv_cache_is_sized_for_one_page_of_image_tokens_plus_the_completion():
    size = SizeFacts(total_params=1_000, kv_bytes_per_token=28_672)
    estimate = transformers_estimate(size, "none", on_gpu=True, max_new_tokens=4096)
    assert ("KV cache for 6,144 tokens", 28_672 * 6_144) in estimate.parts
    on_cpu = transformers_estimate(size, "none", on_gpu=False, max_new_tokens=4096)
    assert on_cpu.weights == 4_000  # float32 in RAM
    assert ("KV cache for 6,144 tokens", 2 * 28_672 * 6_144) in on_cpu.parts
    assert all(what != "CUDA context" for what, _ in on_cpu.parts)


def test_vllm_sizes_its_kv_cache_for_max_model_len():
    entry = CATALOG.resolve("qwen2-vl-2b")
    assert vllm_max_model_len(entry) == 4096  # from the catalog's --max-model-len
    size = SizeFacts(total_params=1_000_000, kv_bytes_per_token=28_672, max_position_embeddings=32768)
    assert ("KV cache for 4,096 tokens (max-model-len)", 28_672 * 4096) in vllm_estimate(size, 4096).parts
    assert ("KV cache for 32,768 tokens (max-model-len)", 28_672 * 32768) in vllm_estimate(size, None).parts


def test_utilization_is_rounded_up_to_the_next_hundredth():
    assert utilization(10 * GIB, 24 * GIB) == 0.42
    assert utilization(12 * GIB, 24 * GIB) == 0.5


# --- preferences ----------------------------------------------------------------------------------


def test_an_explicit_quantization_that_does_not_fit_is_refused_not_switched():
    entry, size = sized("qwen2-vl-7b", None)
    decision = plan(entry, size, host(12, docker=True),
                    Preference(quantization="none", quantization_from="ocrctl load --quant"))
    assert (decision.fits, decision.quantization, decision.engine) == (False, "none", "")
    assert decision.reasons[0].startswith("does not fit: transformers, unquantized needs about 18.2 GiB")


def test_asking_for_8bit_keeps_a_vllm_first_model_on_transformers():
    entry, size = sized("dots.ocr", None)
    decision = plan(entry, size, host(24, docker=True), Preference(quantization="8bit", quantization_from="--quant"))
    assert (decision.engine, decision.quantization) == ("transformers", "8bit")
    assert "8-bit is asked for (--quant): only the transformers engine quantizes" in decision.reasons


def test_planner_engine_forces_an_engine_the_model_supports_and_is_ignored_otherwise():
    entry, size = sized("dots.ocr", None)
    forced = plan(entry, size, host(24, docker=True),
                  Preference(engine="transformers", engine_from="planner.engine"))
    assert forced.engine == "transformers"
    assert "the transformers engine is asked for (planner.engine)" in forced.reasons
    got, got_size = sized("got-ocr2", None)
    ignored = plan(got, got_size, host(24, docker=True), Preference(engine="vllm", engine_from="planner.engine"))
    assert ignored.engine == "transformers"
    assert "planner.engine asks for vllm, but stepfun-ai/GOT-OCR-2.0-hf runs only on transformers" in ignored.reasons


def test_an_engine_asked_for_but_missing_does_not_fit_and_says_why():
    entry, size = sized("dots.ocr", None)
    decision = plan(entry, size, host(24, docker=False), Preference(engine="vllm", engine_from="ocrctl load --mode"))
    assert (decision.fits, decision.engine, decision.shortfall_bytes) == (False, "", 0)
    assert decision.reasons == (
        "no engine can run rednote-hilab/dots.ocr on this host: vllm not used: Docker is not "
        "reachable: no socket; vLLM runs in Docker (vllm.launcher = 'docker')",
        "the vllm engine is asked for (ocrctl load --mode)",
    )


def test_device_cpu_keeps_a_model_off_the_gpu():
    entry, size = sized("qwen2-vl-2b", None)
    decision = plan(entry, size, host(80), Preference(device="cpu", device_from="transformers.device"))
    assert (decision.device, decision.quantization) == ("cpu", "none")
    assert decision.reasons[0] == "transformers on the CPU, unquantized: transformers.device is cpu"


def test_a_configured_gpu_that_ocrd_may_not_use_is_refused_never_replaced_by_the_cpu():
    entry, size = sized("qwen2-vl-2b", None)
    decision = plan(entry, size, host(80), Preference(device="cuda:3", device_from='[models."qwen2-vl-2b"] device'))
    assert not decision.fits and decision.device == "cpu" and decision.engine == ""
    assert decision.reasons[0].startswith("no engine can run Qwen/Qwen2-VL-2B-Instruct on this host: "
                                          "transformers not used: [models.\"qwen2-vl-2b\"] device asks "
                                          "for cuda:3, which is not among the GPUs ocrd may use")


def test_builtin_models_run_on_the_cpu_whatever_the_gpu():
    entry = CATALOG.resolve("ppocr")
    decision = plan(entry, None, host(80, docker=True))
    assert (decision.engine, decision.device, decision.fits, decision.estimated_bytes) == ("builtin", "cpu", True, 0)


def test_an_already_quantized_checkpoint_is_loaded_as_it_is():
    entry = CATALOG.inferred_entry("someone/vlm-awq", QWEN_LIKE_CONFIG)
    size = SizeFacts(total_params=8 * GB, checkpoint_bytes=5 * GIB, prequantized="awq")
    decision = plan(entry, size, host(24))
    assert decision.quantization == "none"
    assert transformers_estimate(size, "none", on_gpu=True).weights == 5 * GIB
    assert "its checkpoint is already quantized (awq): loaded as it is" in decision.reasons


def test_without_transformers_installed_a_transformers_only_model_cannot_load():
    entry, size = sized("got-ocr2", None)
    decision = plan(entry, size, Host(gpus=(gpu(24),), transformers=Availability(False, "torch not installed")))
    assert not decision.fits and decision.shortfall_bytes == 0
    assert decision.reasons[0] == ("no engine can run stepfun-ai/GOT-OCR-2.0-hf on this host: "
                                   "transformers not used: torch not installed")


# --- GPUs -----------------------------------------------------------------------------------------


def test_the_gpu_with_the_most_usable_memory_is_chosen():
    entry, size = sized("qwen2-vl-2b", None)
    small, big = gpu(10, index=0), gpu(20, index=1, name="NVIDIA L4")
    decision = plan(entry, size, Host(gpus=(small, big)))
    assert (decision.device, decision.gpu_uuid) == ("cuda:1", big.uuid)


def test_memory_promised_to_a_load_in_progress_counts_against_its_gpu():
    entry, size = sized("qwen2-vl-2b", None)
    first, second = gpu(20, index=0), gpu(16, index=1)
    loading = LoadedModel("org/other", "cuda:0", memory_bytes=0, evictable=False, promised_bytes=8 * GIB)
    decision = plan(entry, size, Host(gpus=(first, second), loaded=(loading,)))
    assert decision.device == "cuda:1"  # 20 - 8 GiB promised < 16 GiB


def test_a_warm_transformers_runner_on_the_gpu_gives_its_memory_back_to_the_load_it_takes():
    entry, size = sized("qwen2-vl-2b", None)
    needed = plan(entry, size, host(80)).estimated_bytes
    # NVML shows the warm runner's CUDA context as used: without it the model would just fit
    # unquantized (reserve 512 MiB), with it counted it has to shrink.
    tight = Gpu(0, "GPU-000-test", "Test GPU", 80 * GIB, needed + 512 * MIB - 600 * MIB)
    alone = plan(entry, size, Host(gpus=(tight,)))
    assert alone.quantization != "none"
    warm = WarmRunner("transformers", "cuda:0", 700 * MIB)
    decision = plan(entry, size, Host(gpus=(tight,), warm=(warm,)))
    assert (decision.device, decision.quantization, decision.estimated_bytes) == ("cuda:0", "none", needed)
    assert "the warm transformers runner on cuda:0 takes it: its 700 MiB count as free" in decision.reasons
    # One on another GPU, or of another engine, gives nothing back here.
    for other in (WarmRunner("transformers", "cuda:1", 700 * MIB), WarmRunner("builtin", "cuda:0", 700 * MIB)):
        assert plan(entry, size, Host(gpus=(tight,), warm=(other,))).quantization != "none"


def test_vllm_never_asks_for_more_than_the_free_share_of_its_gpu():
    entry, size = sized("dots.ocr", None)
    busy = Gpu(0, "GPU-0", "Busy", total=24 * GIB, free=10 * GIB)  # another process holds 14 GiB
    decision = plan(entry, size, Host(gpus=(busy,), vllm=DOCKER))
    # vLLM would need 10.6 GiB (0.44 x 24 GiB); only 9.5 GiB is usable: transformers instead.
    assert decision.engine == "transformers"
    assert any(r.startswith("vLLM would need about 10.6 GiB on cuda:0, more than the 9.5 GiB usable")
               for r in decision.reasons)


def test_gpu_devices_narrows_the_gpus_by_index_or_uuid_prefix():
    devices = [GpuDevice(0, "A", "GPU-aaaa-1", 80 * GIB, 0, 80 * GIB, 0),
               GpuDevice(1, "B", "GPU-bbbb-2", 24 * GIB, 0, 24 * GIB, 0)]
    snapshot = GpuSnapshot(True, devices=devices)
    assert [g.index for g in allowed_gpus(snapshot, [])[0]] == [0, 1]
    assert [g.index for g in allowed_gpus(snapshot, ["1"])[0]] == [1]
    assert [g.index for g in allowed_gpus(snapshot, ["GPU-aaaa"])[0]] == [0]
    assert allowed_gpus(snapshot, ["GPU-", "7"]) == ((), "gpu.devices = ['GPU-', '7'] names none of the visible GPUs")
    assert allowed_gpus(GpuSnapshot(False, "no NVIDIA driver"), []) == ((), "no NVIDIA driver")


# --- nothing fits ---------------------------------------------------------------------------------


def test_nothing_fits_lists_idle_models_least_recently_used_first_until_they_cover_it():
    entry, size = sized("qwen2-vl-7b", None)  # 4-bit needs ~7.5 GiB
    loaded = (
        LoadedModel("org/recent", "cuda:0", 3 * GIB, evictable=True, last_used=300.0),
        LoadedModel("org/oldest", "cuda:0", 1 * GIB, evictable=True, last_used=100.0),
        LoadedModel("org/older", "cuda:0", 2 * GIB, evictable=True, last_used=200.0),
        LoadedModel("org/busy", "cuda:0", 5 * GIB, evictable=False, last_used=0.0),
    )
    decision = plan(entry, size, Host(gpus=(gpu(6, total_gib=24),), loaded=loaded))
    assert not decision.fits and decision.shortfall_bytes > 2 * GIB - 16 * MIB
    assert decision.evictable_models == ("org/oldest", "org/older")  # 3 GiB covers ~2 GiB missing
    assert decision.reasons[1] == (
        "unloading the idle model(s) org/oldest (1.0 GiB), org/older (2.0 GiB) would make room")


def test_nothing_fits_and_unloading_is_not_enough_says_so():
    entry, size = sized("qwen2-vl-7b", None)
    loaded = (LoadedModel("org/busy", "cuda:0", 5 * GIB, evictable=False),
              LoadedModel("org/idle", "cuda:0", 1 * GIB, evictable=True))
    decision = plan(entry, size, Host(gpus=(gpu(4, total_gib=24),), loaded=loaded))
    assert not decision.fits and decision.evictable_models == ()
    assert decision.reasons[1].startswith("ocrd's models on cuda:0: org/busy (5.0 GiB, busy or pinned), "
                                          "org/idle (1.0 GiB); unloading the idle ones is not enough")


# --- vLLM availability from the host's facts --------------------------------------------------------


def test_vllm_needs_docker_with_the_nvidia_runtime_or_an_importable_vllm():
    plain_docker = DockerStatus(True, version="20.10.24", runtimes=("runc",))
    assert DOCKER.available and not NO_DOCKER.available
    assert "Docker has no NVIDIA runtime" in vllm_availability("docker", plain_docker, None).reason
    assert vllm_availability("process", None, Availability(True)).available
    missing = Availability(False, "the vllm package is not installed for /usr/bin/python3")
    refused = vllm_availability("process", plain_docker, missing)
    assert not refused.available
    assert refused.reason.startswith("the vllm package is not installed for /usr/bin/python3")


def test_a_cpu_build_of_vllm_needs_docker_but_no_nvidia_runtime():
    plain_docker = DockerStatus(True, version="20.10.24", runtimes=("runc",))
    assert vllm_availability("docker", plain_docker, device="cpu").available
    unreachable = vllm_availability("docker", DockerStatus(False, reason="Docker is not reachable: x"),
                                    device="cpu")
    assert not unreachable.available and unreachable.reason.startswith("Docker is not reachable: x")


# --- vLLM on the CPU (vllm.device = "cpu") ---------------------------------------------------------

VLLM_ON_CPU = "vLLM on the CPU: vllm.device is cpu"

# (model, GiB free on one GPU or None, engine): with a CPU build of vLLM available, a model whose
# catalog puts vLLM first runs on it on the CPU, GPU or not; one that puts transformers first keeps
# transformers wherever it fits (on the GPU, or on the CPU without one).
CPU_VLLM_SCENARIOS = [
    ("dots.ocr", None, "vllm", "cpu"),
    ("dots.ocr", 6, "vllm", "cpu"),
    ("dots.ocr", 80, "vllm", "cpu"),
    ("qwen2-vl-2b", None, "transformers", "cpu"),
    ("qwen2-vl-2b", 24, "transformers", "cuda:0"),
]


@pytest.mark.parametrize(("model", "free", "engine", "device"), CPU_VLLM_SCENARIOS,
                         ids=[f"{m}-{'cpu' if f is None else f'{f}GiB'}" for m, f, *_ in CPU_VLLM_SCENARIOS])
def test_cpu_vllm_scenario(model, free, engine, device):
    entry, size = sized(model, None)
    decision = plan(entry, size, host(free, vllm=Availability(True), vllm_device="cpu"))
    assert (decision.engine, decision.device, decision.fits) == (engine, device, True), decision.reasons
    if engine == "vllm":
        assert decision.reasons[0].startswith(VLLM_ON_CPU), decision.reasons
        assert decision.gpu_memory_utilization == 0.0 and decision.gpu_uuid == ""
        assert summary(decision) == "vllm on cpu, no GPU"


def test_vllm_forced_on_a_cpu_build_runs_on_the_cpu_and_says_why():
    entry, size = sized("qwen2-vl-2b", None)
    decision = plan(entry, size, host(24, vllm=Availability(True), vllm_device="cpu"),
                    Preference(engine="vllm", engine_from="the request (--mode / --quant)"))
    assert (decision.engine, decision.device) == ("vllm", "cpu")
    assert decision.reasons[0].startswith(f"{VLLM_ON_CPU} (a CPU build of vLLM), so "
                                          "Qwen/Qwen2-VL-2B-Instruct gets no GPU")
    assert "the vllm engine is asked for (the request (--mode / --quant))" in decision.reasons


def test_a_cpu_build_of_vllm_is_not_used_when_a_gpu_is_demanded():
    entry, size = sized("dots.ocr", None)
    decision = plan(entry, size, host(24, vllm=Availability(True), vllm_device="cpu"),
                    Preference(device="cuda:0", device_from='[models."rednote-hilab/dots.ocr"] device'))
    assert (decision.engine, decision.device) == ("transformers", "cuda:0")
    assert ('vLLM not used: vllm.device is cpu (a CPU build of vLLM), but '
            '[models."rednote-hilab/dots.ocr"] device asks for cuda:0') in decision.reasons


# --- per-model vLLM settings ----------------------------------------------------------------------

FIXED_FROM = '[models."dots.ocr"] gpu_memory_utilization'


def fixed_share(share: float) -> Preference:
    return Preference(gpu_memory_utilization=share, gpu_memory_utilization_from=FIXED_FROM)


def test_a_fixed_gpu_share_replaces_the_estimate_and_says_whose_it_is():
    entry, size = sized("dots.ocr", None)
    planned = plan(entry, size, host(24, docker=True))
    fixed = plan(entry, size, host(24, docker=True), fixed_share(0.6))
    assert (planned.engine, fixed.engine) == ("vllm", "vllm")
    assert planned.gpu_memory_utilization == 0.44 and fixed.gpu_memory_utilization == 0.6
    assert fixed.estimated_bytes == round(0.6 * 24 * GIB)
    assert (f"gpu_memory_utilization 0.60 from {FIXED_FROM}: 14.4 GiB of the GPU's 24.0 GiB; "
            "ocrd's estimate is 0.44") in fixed.reasons


def test_a_fixed_share_below_the_estimate_is_used_with_a_warning():
    entry, size = sized("dots.ocr", None)
    decision = plan(entry, size, host(24, docker=True), fixed_share(0.3))
    assert (decision.engine, decision.gpu_memory_utilization) == ("vllm", 0.3)
    assert any(reason.startswith("that is less than ocrd's estimate: vLLM may refuse to start")
               for reason in decision.reasons)


def test_a_fixed_share_must_still_fit_the_free_memory():
    entry, size = sized("dots.ocr", None)
    busy = Gpu(0, "GPU-0", "Busy", total=24 * GIB, free=16 * GIB)
    decision = plan(entry, size, Host(gpus=(busy,), vllm=DOCKER), fixed_share(0.9))
    assert decision.engine != "vllm"  # 21.6 GiB asked, 15.5 GiB usable: never squeezed in
    assert any(r.startswith("vLLM would need about 21.6 GiB on cuda:0") for r in decision.reasons)


def test_max_model_len_from_the_configurations_arguments_sizes_the_kv_cache():
    entry = CATALOG.resolve("qwen2-vl-2b")  # the catalog says --max-model-len 4096
    assert vllm_max_model_len(entry, ("--max-model-len", "1024")) == 1024
    assert vllm_max_model_len(entry, ("--max_model_len=2048",)) == 2048
    assert vllm_max_model_len(entry, ("--max-model-len", "1024", "--max-model-len=512")) == 512
    assert vllm_max_model_len(entry, ("--enforce-eager",)) == 4096
    size = SizeFacts(total_params=2_000_000_000, kv_bytes_per_token=28_672, max_position_embeddings=32768)
    default = plan(entry, size, host(24, docker=True), Preference(engine="vllm"))
    longer = plan(entry, size, host(24, docker=True),
                  Preference(engine="vllm", vllm_args=("--max-model-len", "32768")))
    assert default.engine == longer.engine == "vllm"
    # 28,672 tokens more of 28,672 bytes each, give or take the rounding to a hundredth of the GPU.
    assert longer.estimated_bytes - default.estimated_bytes >= 28_672 * 28_672 - 0.01 * 24 * GIB
    assert longer.gpu_memory_utilization > default.gpu_memory_utilization
