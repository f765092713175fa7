"""Tiny random-weight VLMs built offline and laid out as a real Hugging Face hub cache.

The Hub is unreachable from test machines, so the fixtures are made in-process: a byte-level BPE
tokenizer trained on a few sentences, a tiny config of the real architecture (hidden 64, 2 layers,
every linear layer >= 64 wide, heads of 32), random float32 weights, and the family's real
processor classes. ``build_tiny_model`` then lays the files out exactly as ``huggingface_hub``
downloads them::

    hub_dir/models--ORG--NAME/blobs/<sha256 of content>
    hub_dir/models--ORG--NAME/snapshots/<rev>/<file> -> ../../blobs/<sha256>   (relative symlink)
    hub_dir/models--ORG--NAME/refs/main                                          (rev, no newline)

so ``huggingface_hub.scan_cache_dir(hub_dir)`` lists them and Transformers loads them by repo id
with ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE=hub_dir`` (or ``cache_dir=hub_dir``). Always load them
offline: online, a cached repo still costs ~300 s of retries against the unreachable Hub.

Random weights produce nonsense text; assert shapes, token counts, finish reasons and streaming
equivalence, never content. Pass ``min_new_tokens`` to force a length (the random model may pick
its eos token at any step).

Loading Qwen2-VL / Qwen2.5-VL without torchvision (what the runner must do on CPU hosts):
``AutoProcessor.from_pretrained(repo)`` raises ``ImportError: Qwen2VLVideoProcessor requires the
Torchvision library`` because ``processor_config.json`` names a video processor, as the real repos
do (with torchvision installed it loads whole). The image half loads fine, so catch that error
and load an image-only processor instead: a subclass of the processor class named in
``processor_config.json`` whose ``__init__`` has no ``video_processor`` parameter (``ProcessorMixin``
discovers sub-processors from that signature; passing ``video_processor=None`` to the stock class
fails its type check). ``tiny_model_recipes.image_only_processor(transformers.Qwen2VLProcessor)
.from_pretrained(repo)`` is such a subclass; the tokenizer, image processor and chat template come
from the same files as with ``AutoProcessor``.

Per kind (``image_token_count`` = image placeholder tokens one image expands to in ``input_ids``):

- ``qwen2_vl`` / ``qwen2_5_vl``: 8 px patches merged 2x2 (one token per 16x16 px), images resized
  to 32x32..64x64 px worth of area, so 4-16 tokens depending on aspect ratio: no fixed count.
- ``llava``: 32x32 CLIP tower, 8 px patches, CLS dropped: 16 tokens.
- ``idefics3``: 64x64 SigLIP tower, 8 px patches, pixel shuffle 2, image splitting off: 16
  ``<image>`` tokens (plus ``<fake_token_around_image><global-img>`` around them).
- ``got_ocr2``: the processor always writes 256 ``<imgpad>`` tokens, so the tower is built to
  yield 256 features (128 px images, 2 px patches, two stride-2 convolutions). Its chat template
  is ours (the real repo builds prompts in code) and renders the same ``<img><imgpad></img>``.
  bitsandbytes 8-bit on CPU fails in its SAM-style vision tower (``RuntimeError: The size of
  tensor a (8) must match ...``: the CPU int8 kernel does not take its 4-D activations); with
  ``llm_int8_skip_modules=["model.vision_tower", "model.multi_modal_projector", "lm_head"]``
  (full prefixes: a bare ``"vision_tower"`` did not match) it loads and generates. 4-bit works.

Quantization: float32 weights; ``load_in_8bit`` (layers become ``Linear8bitLt``) and
``load_in_4bit`` (``Linear4bit``) with ``device_map="cpu"`` load and generate for every other kind.

Transformers is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

KINDS: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "llava", "idefics3", "got_ocr2")

# Shaped like the real repo ids so catalog lookups by family work in tests.
DEFAULT_REPO_IDS: dict[str, str] = {
    "qwen2_vl": "ocrd-test/tiny-qwen2-vl",
    "qwen2_5_vl": "ocrd-test/tiny-qwen2.5-vl",
    "llava": "ocrd-test/tiny-llava",
    "idefics3": "ocrd-test/tiny-idefics3",
    "got_ocr2": "ocrd-test/tiny-got-ocr2",
}

WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class TinyModel:
    """One built fixture repo."""

    kind: str
    repo_id: str
    revision: str  # 40-hex commit-like id, what refs/main holds
    snapshot: Path  # hub/models--ORG--NAME/snapshots/<rev>
    architecture: str  # config.json "architectures"[0]
    image_token_count: int | None  # image tokens one test image expands to, if fixed


@dataclass(frozen=True)
class TinyHub:
    """What the ``tiny_hub`` pytest fixture yields: ``hub_dir`` is ``hf_home / "hub"``."""

    hf_home: Path
    hub_dir: Path
    models: dict[str, TinyModel]


def build_tiny_model(kind: str, hub_dir: Path, repo_id: str | None = None, *, seed: int = 0) -> TinyModel:
    """Builds one tiny ``kind`` model and publishes it into ``hub_dir`` as ``repo_id``.

    The same kind and seed give byte-identical files and so the same revision; another seed gives
    another revision, which becomes ``refs/main`` (like a new commit on the Hub).
    """
    from tests.support.tiny_model_recipes import RECIPES

    if kind not in RECIPES:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(KINDS)}")
    repo_id = repo_id or DEFAULT_REPO_IDS[kind]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    # One thread: on a busy 2-core machine two threads made tiny models ~20x slower.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix=f"tiny-{kind}-") as tmp:
        out_dir = Path(tmp)
        # fork_rng: seeding must not disturb the random state of the test that asked for a model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            built = RECIPES[kind](out_dir)
        revision, snapshot = publish_snapshot(out_dir, Path(hub_dir), repo_id)
    architecture = json.loads((snapshot / "config.json").read_text())["architectures"][0]
    return TinyModel(kind, repo_id, revision, snapshot, architecture, built.image_token_count)


def build_tiny_hub(hub_dir: Path, kinds: tuple[str, ...] | list[str] = KINDS) -> dict[str, TinyModel]:
    """Builds every kind in ``kinds`` under its default repo id; returns them by kind."""
    return {kind: build_tiny_model(kind, hub_dir) for kind in kinds}


def repo_folder(hub_dir: Path, repo_id: str) -> Path:
    """``hub_dir/models--ORG--NAME``, huggingface_hub's folder for a model repo."""
    return Path(hub_dir) / ("models--" + repo_id.replace("/", "--"))


def publish_snapshot(src_dir: Path, hub_dir: Path, repo_id: str) -> tuple[str, Path]:
    """Copies the files of ``src_dir`` into the cache as one snapshot of ``repo_id``.

    Blobs are named by the sha256 of their content (what huggingface_hub does for LFS files), so
    files unchanged between two revisions share one blob. The revision is a hash of the snapshot's
    file list and contents: rebuilding the same thing is idempotent.
    """
    repo_dir = repo_folder(hub_dir, repo_id)
    digests = {
        path.relative_to(src_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(src_dir.rglob("*"))
        if path.is_file()
    }
    revision = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    for name, digest in digests.items():
        blob = repo_dir / "blobs" / digest
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_dir / name, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    refs = repo_dir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(revision)
    return revision, snapshot


def corrupt_weights(model: TinyModel) -> None:
    """Damages the weights blob in place, like a download cut short.

    The safetensors header is kept and half of the tensor bytes are dropped, so the file still
    looks like safetensors but its header points past the end: loading fails with an error instead
    of silently reading garbage. Every snapshot sharing the blob is damaged with it.
    """
    blob = (model.snapshot / WEIGHTS_FILE).resolve()
    data = blob.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    blob.write_bytes(data[: header_end + (len(data) - header_end) // 2])
