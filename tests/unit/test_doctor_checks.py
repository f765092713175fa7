"""The checks of ``ocrctl doctor``, one by one, on real facts: temporary directories laid out like
the Hugging Face cache, device nodes and Docker sockets; FakeNvml for the GPU; the docker SDK
against a socket that does not exist. Checks that ask ``os.access`` for a denied case run in a
subprocess without privileges (root passes every permission check otherwise)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ocrd.catalog import Catalog
from ocrd.config.settings import Settings
from ocrd.core.scheduler import Scheduler
from ocrd.errors import ModelNotFound
from ocrd.ops.doctor import FAIL, OK, SKIPPED, WARN, ModelFit, plan_fit, run_checks
from ocrd.ops.doctor.base import check_user
from ocrd.ops.doctor.cache_checks import (
    check_downloads,
    check_hf_cache,
    check_hf_cache_access,
    check_hf_cache_mount,
    check_hf_cache_wsl,
)
from ocrd.ops.doctor.engine_checks import (
    check_docker,
    check_docker_socket,
    check_nvidia_runtime,
    check_transformers,
    check_vllm_image,
    vllm_severity,
)
from ocrd.ops.doctor.gpu_checks import check_gpu_devices, check_gpu_memory, check_nvml
from ocrd.planning import availability
from ocrd.planning.availability import Availability
from ocrd.planning.gpu import GpuProbe, unavailable
from ocrd.planning.planner import Decision
from ocrd.runners.vllm.docker_host import DockerStatus, docker_status
from tests.support.fake_nvml import FakeNvml, NVMLError_LibraryNotFound, two_gpus
from tests.support.fake_runner import FakeRunnerFactory

pytestmark = pytest.mark.usefixtures("isolated_config")

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30
WSL_VERSION = "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@1e2a) #1 SMP"
NATIVE_VERSION = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) #1 SMP"
DOTS = "rednote-hilab/dots.ocr"  # engines: vllm, transformers




# --- GPU -------------------------------------------------------------------------------------------


def test_nvml_lists_the_gpus_with_the_driver():
    check = check_nvml(GpuProbe(two_gpus(), environ={}).snapshot(), driver_loaded=True)
    assert check.status == OK and not check.fix
    assert check.message == "driver 550.54.15 (CUDA 12.4), 2 GPUs: NVIDIA H100 80GB HBM3, NVIDIA L4"


def test_no_driver_is_a_warning_that_models_run_on_the_cpu():
    nvml = FakeNvml(fail={"nvmlInit": NVMLError_LibraryNotFound()})
    check = check_nvml(GpuProbe(nvml, environ={}).snapshot(), driver_loaded=False)
    assert check.status == WARN
    assert "runs on the CPU" in check.message and "NVML Shared Library Not Found" in check.message
    assert "install its driver" in check.fix


def test_a_loaded_driver_without_pynvml_says_to_install_it():
    snapshot = unavailable("no NVML: the nvidia-ml-py package (pynvml) is not installed")
    check = check_nvml(snapshot, driver_loaded=True)
    assert check.status == WARN and check.fix == "pip install nvidia-ml-py into ocrd's venv"


def test_a_broken_nvml_with_a_driver_points_at_nvidia_smi():
    nvml = two_gpus()
    nvml.fail["nvmlDeviceGetCount"] = nvml.NVMLError("Driver/library version mismatch")
    check = check_nvml(GpuProbe(nvml, environ={}).snapshot(), driver_loaded=True)
    assert check.status == WARN and "version mismatch" in check.message
    assert "nvidia-smi" in check.fix


def decision(**fields: object) -> Decision:
    base = dict(model="Qwen/Qwen2-VL-7B-Instruct", engine="transformers", device="cuda:0",
                quantization="8bit", gpu_memory_utilization=0.0, estimated_bytes=9 * GIB,
                reasons=("8-bit fits on GPU 0 (NVIDIA L4): 9.0 GiB of 23.5 GiB usable",), fits=True)
    return Decision(**{**base, **fields})


def test_a_model_that_fits_is_ok_with_the_plan_and_the_reason():
    check = check_gpu_memory(ModelFit("Qwen/Qwen2-VL-7B-Instruct", decision=decision()))
    assert check.status == OK
    assert check.message == ("Qwen/Qwen2-VL-7B-Instruct fits (needs 9.0 GiB, transformers engine on "
                             "cuda:0, 8bit): 8-bit fits on GPU 0 (NVIDIA L4): 9.0 GiB of 23.5 GiB usable")


def test_a_model_that_does_not_fit_fails_and_names_the_models_to_unload():
    short = decision(fits=False, shortfall_bytes=2 * GIB, evictable_models=("builtin/ppocr", "moondream2"))
    check = check_gpu_memory(ModelFit(short.model, decision=short))
    assert check.status == FAIL and "2.0 GiB missing" in check.message
    assert check.fix == "unload idle models to make room: ocrctl unload builtin/ppocr moondream2"


def test_a_model_that_does_not_fit_with_nothing_to_evict_says_how_to_make_room():
    vllm = decision(engine="vllm", quantization="none", gpu_memory_utilization=0.45, fits=False,
                    shortfall_bytes=GIB)
    check = check_gpu_memory(ModelFit(vllm.model, decision=vllm))
    assert check.status == FAIL and "gpu_memory_utilization 0.45" in check.message
    assert "ocrctl gpu" in check.fix and "--quant 4bit" in check.fix


def test_no_engine_for_the_model_fails_with_the_planners_reason():
    none = decision(engine="", device="cpu", fits=False, reasons=("vLLM needs an NVIDIA GPU",))
    check = check_gpu_memory(ModelFit(none.model, decision=none))
    assert check.status == FAIL and check.message.endswith("vLLM needs an NVIDIA GPU")


def test_a_model_that_cannot_be_planned_fails_and_says_where_to_look():
    error = check_gpu_memory(ModelFit("dots.ocr", error="model 'dots.ocr' is not downloaded"))
    assert error.status == FAIL and "not downloaded" in error.message and "ocrctl models" in error.fix


def test_gpu_device_nodes_open_to_the_user_are_ok(tmp_path):
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch(mode=0o666)
    (tmp_path / "nvidia-caps").mkdir()  # a directory, not a node
    check = check_gpu_devices(tmp_path)
    assert check.status == OK and check.message.endswith("can open nvidia-uvm, nvidia0, nvidiactl")




def test_no_nvidia_device_nodes_is_skipped(tmp_path):
    assert check_gpu_devices(tmp_path).status == SKIPPED


# --- Docker and vLLM -------------------------------------------------------------------------------


@pytest.fixture
def no_docker(monkeypatch, tmp_path) -> Path:
    """DOCKER_HOST names a socket that does not exist: the real SDK finds no engine."""
    path = tmp_path / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    return path


def test_unreachable_docker_is_a_warning_while_another_engine_can_serve(no_docker):
    status = docker_status()
    assert not status.reachable
    check = check_docker(status, "docker", WARN)
    assert check.status == WARN and check.message.startswith("vLLM containers cannot start: ")
    assert "systemctl start docker" in check.fix


def test_docker_checks_are_skipped_with_the_process_launcher(no_docker):
    status = docker_status()
    for check in (check_docker(status, "process", FAIL), check_nvidia_runtime(status, True, "process", FAIL),
                  check_docker_socket(os.environ, "process", FAIL)):
        assert check.status == SKIPPED and "launcher = process" in check.message


def test_reachable_docker_lists_its_runtimes_and_the_nvidia_one_is_required_for_a_gpu():
    plain = DockerStatus(True, version="20.10.24", runtimes=("io.containerd.runc.v2", "runc"))
    assert check_docker(plain, "docker", FAIL).message == (
        "Docker 20.10.24 is reachable (runtimes: io.containerd.runc.v2, runc)")
    missing = check_nvidia_runtime(plain, gpu_available=True, launcher="docker", severity=FAIL)
    assert missing.status == FAIL and "nvidia-ctk runtime configure" in missing.fix
    assert check_nvidia_runtime(plain, gpu_available=False, launcher="docker", severity=FAIL).status == SKIPPED
    nvidia = DockerStatus(True, version="24.0.7", runtimes=("nvidia", "runc"))
    assert check_nvidia_runtime(nvidia, gpu_available=True, launcher="docker", severity=FAIL).status == OK
    assert check_nvidia_runtime(DockerStatus(False, "down"), True, "docker", FAIL).status == SKIPPED


def test_the_vllm_image_must_be_present_because_ocrd_never_pulls():
    settings, up = Settings(), DockerStatus(True, version="20.10.24")
    image = settings.vllm.image
    assert check_vllm_image(up, image, True, settings, WARN).status == OK
    absent = check_vllm_image(up, image, False, settings, WARN)
    assert absent.status == WARN and absent.fix == f"ocrctl pull-image {image} (or set vllm.pull_images = true)"
    pulling = check_vllm_image(up, image, False, Settings(vllm={"pull_images": True}), FAIL)
    assert pulling.status == WARN and "first vLLM load pulls it" in pulling.message
    assert check_vllm_image(DockerStatus(False, "down"), image, None, settings, WARN).status == SKIPPED


def test_docker_and_vllm_problems_fail_only_when_vllm_is_the_models_only_way():
    catalog = Catalog.load_default()
    dots, ppocr = catalog.resolve(DOTS), catalog.resolve("ppocr")
    installed, missing = Availability(True), Availability(False, "torch not installed")
    assert vllm_severity(Settings(), dots, installed) == WARN
    assert vllm_severity(Settings(), dots, missing) == FAIL
    assert vllm_severity(Settings(), ppocr, missing) == WARN  # builtin never needs vLLM
    assert vllm_severity(Settings(planner={"engine": "vllm"}), ppocr, installed) == FAIL
    assert vllm_severity(Settings(models={"dots.ocr": {"engine": "vllm"}}), dots, installed) == FAIL
    got = catalog.resolve("stepfun-ai/GOT-OCR-2.0-hf")  # transformers only: vLLM is irrelevant
    assert vllm_severity(Settings(), got, missing) == WARN




def test_no_docker_socket_or_a_tcp_docker_host_skips_the_socket_check(tmp_path):
    missing = check_docker_socket({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}, "docker", WARN)
    assert missing.status == SKIPPED and "no Docker socket" in missing.message
    tcp = check_docker_socket({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, "docker", WARN)
    assert tcp.status == SKIPPED and "not a Unix socket" in tcp.message


def test_the_transformers_engine_missing_is_a_warning_with_the_install_line_for_this_installation(
        tmp_path, monkeypatch):
    assert check_transformers(Availability(True)).status == OK
    # Made-up package names on an empty directory: missing whatever this venv has installed.
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(availability, "TRANSFORMERS_PACKAGES", ("ocrd_doctor_torch", "ocrd_doctor_transformers"))
    monkeypatch.setattr(availability, "_missing_packages", availability.MissingPackages())
    check = check_transformers(availability.transformers_availability(Settings()))
    assert check.status == WARN
    assert check.message == (f"the transformers engine is not available: ocrd_doctor_torch, "
                             f"ocrd_doctor_transformers not installed for {sys.executable}")
    # The checkout this venv has ocrd from (scripts/test installs it with pip install -e), into
    # this interpreter: not the pip on PATH, not ocrd-vlm from an index (it is on none).
    command = f"{sys.executable} -m pip install -e '{REPO}[transformers]'"
    assert check.fix.startswith(command)
    assert check.fix.endswith(", or set transformers.python to a venv that has torch and transformers")


# --- the Hugging Face cache ------------------------------------------------------------------------


def make_snapshot(hub: Path, repo: str, files: dict[str, str], rev: str = "a" * 40) -> Path:
    """A cached revision in huggingface_hub's layout (plain files are enough for its lookups)."""
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    snapshot = root / "snapshots" / rev
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    (root / "blobs").mkdir(exist_ok=True)
    return snapshot


def test_the_cache_is_there_or_missing_or_in_the_way(tmp_path):
    hub = tmp_path / "hub"
    missing = check_hf_cache(hub)
    assert missing.status == WARN and "does not exist yet" in missing.message and "ocrctl pull" in missing.fix
    make_snapshot(hub, "org/one", {"config.json": "{}"})
    assert check_hf_cache(hub).message == f"{hub} (1 model)"
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert check_hf_cache(blocked).status == FAIL


def test_a_cache_the_user_can_write_or_create_is_ok(tmp_path):
    hub = tmp_path / "hub"
    assert check_hf_cache_access(hub).message.endswith(f"can create {hub} (in {tmp_path})")
    hub.mkdir()
    assert check_hf_cache_access(hub).message.endswith(f"can read and write {hub}")






def test_a_cache_on_a_windows_drive_under_wsl_warns(tmp_path):
    windows = Path("/mnt/c/Users/me/.cache/huggingface/hub")
    check = check_hf_cache_wsl(windows, WSL_VERSION)
    assert check.status == WARN and "Windows drive" in check.message
    assert "Linux filesystem" in check.fix
    linked = tmp_path / "hub"
    linked.symlink_to(windows)  # ~/.cache/huggingface/hub -> /mnt/c/...: the common set-up
    assert check_hf_cache_wsl(linked, WSL_VERSION).status == WARN
    assert check_hf_cache_wsl(tmp_path, WSL_VERSION).status == OK
    assert check_hf_cache_wsl(windows, NATIVE_VERSION).status == SKIPPED


def test_containers_mount_the_hub_cache_or_its_hf_home(tmp_path):
    hub = tmp_path / "hf" / "hub"
    assert check_hf_cache_mount(hub, "docker").message.startswith(
        f"vLLM containers bind-mount {tmp_path / 'hf'} as their HF_HOME")
    models = tmp_path / "models"
    assert check_hf_cache_mount(models, "docker").message.startswith(
        f"vLLM containers bind-mount {models} as their hub cache")
    assert check_hf_cache_mount(models, "process").message == (
        f"vLLM processes get HF_HUB_CACHE={models}: the same cache")


def test_a_hub_cache_that_is_a_symlink_warns_that_containers_see_a_dangling_link(tmp_path):
    real = tmp_path / "disk" / "hub"
    real.mkdir(parents=True)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "hub").symlink_to(real)
    check = check_hf_cache_mount(tmp_path / "hf" / "hub", "docker")
    assert check.status == WARN and check.fix == f"set cache.hub_dir (or HF_HUB_CACHE) to {real}"


def test_interrupted_downloads_and_incomplete_snapshots_are_reported(tmp_path):
    hub = tmp_path / "hub"
    make_snapshot(hub, "org/complete", {"config.json": "{}", "model.safetensors": "x"})
    assert check_downloads(hub, ["org/complete"]).status == OK
    make_snapshot(hub, "org/partial", {"config.json": "{}", "model.safetensors": "x"})
    (hub / "models--org--partial" / "blobs" / "0123abcd.incomplete").write_bytes(b"\0" * 3 * 2**20)
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                       "b": "model-00002-of-00002.safetensors"}})
    make_snapshot(hub, "org/sharded", {"config.json": "{}", "model.safetensors.index.json": index,
                                       "model-00001-of-00002.safetensors": "x"})
    check = check_downloads(hub, ["org/complete", "org/sharded"])
    assert check.status == WARN
    assert check.message == ("incomplete: org/partial (partial download, 3 MiB); "
                             "org/sharded (missing model-00002-of-00002.safetensors)")
    assert check.fix.startswith("resume: ocrctl pull org/partial")
    assert check_downloads(hub, ["org/sharded"], model="org/sharded").status == FAIL
    assert check_downloads(tmp_path / "none", []).status == SKIPPED


# --- the user, and everything together ---------------------------------------------------------------


def test_the_user_check_names_uid_gid_and_groups_and_warns_about_root():
    root = check_user(0, 0, [0])
    assert root.status == WARN and root.message.startswith("runs as root (uid 0), group root (gid 0)")
    assert "User=ocrd" in root.fix
    nobody = check_user(65534, 65534, [65534, 0])
    assert nobody.status == OK and nobody.message.endswith("other groups: root")


def test_run_checks_looks_at_the_configured_cache_the_gpu_and_the_kernel(tmp_path, no_docker):
    hub = tmp_path / "cache" / "hub"
    make_snapshot(hub, DOTS, {"config.json": "{}"})  # no weights: an incomplete snapshot
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir()
    (dev / "nvidiactl").touch(mode=0o666)
    proc.mkdir()
    (proc / "version").write_text(WSL_VERSION)
    fit = ModelFit(DOTS, decision=decision(model=DOTS))
    checks = run_checks(Settings(cache={"hub_dir": hub}, state_dir=tmp_path / "state"), fit,
                        GpuProbe(two_gpus(), environ={}),
                        Catalog.load_default(), dev_root=dev, proc_root=proc)
    by_name = {check.name: check for check in checks}
    assert list(by_name) == [
        "nvml", "gpu-devices", "gpu-memory", "transformers", "docker", "docker-socket",
        "nvidia-runtime", "vllm-image", "hf-cache", "hf-cache-access", "hf-cache-wsl",
        "hf-cache-mount", "downloads", "state-store", "user",
    ]
    assert by_name["state-store"].status == WARN  # not made yet: the daemon makes it at start
    assert by_name["nvml"].message.endswith("2 GPUs: NVIDIA H100 80GB HBM3, NVIDIA L4")
    assert by_name["gpu-devices"].message.endswith("can open nvidiactl")
    assert by_name["gpu-memory"].status == OK
    assert by_name["docker"].status == WARN  # transformers is installed here: it serves instead
    assert by_name["docker-socket"].message == f"no Docker socket at {no_docker}"
    assert by_name["hf-cache"].message == f"{hub} (1 model)"
    assert by_name["hf-cache-wsl"].status == OK  # WSL, but on the Linux filesystem
    assert by_name["downloads"].status == FAIL and DOTS in by_name["downloads"].message
    assert all(check.message and "\n" not in check.message for check in checks)


async def test_plan_fit_asks_the_scheduler_and_an_unknown_name_is_the_callers_mistake(tmp_path):
    settings = Settings(cache={"hub_dir": tmp_path / "hub"}, runtime_dir=tmp_path)
    scheduler = Scheduler(settings, Catalog.load_default(), FakeRunnerFactory(),
                          gpu_probe=GpuProbe(two_gpus(), environ={}))
    try:
        fit = await plan_fit(scheduler, "ppocr", explicit=True)
        assert fit.model == "builtin/ppocr" and fit.decision is not None and fit.decision.fits
        with pytest.raises(ModelNotFound):
            await plan_fit(scheduler, "no-such-model", explicit=True)
        default = await plan_fit(scheduler, "no-such-model", explicit=False)
        assert "does not exist" in default.error
        missing = await plan_fit(scheduler, DOTS, explicit=True)  # known, not downloaded
        assert "not downloaded" in missing.error
    finally:
        await scheduler.shutdown()
