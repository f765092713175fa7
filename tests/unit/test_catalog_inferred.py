"""Cached models the catalog does not list (Catalog.inferred_entry, with_extra), and engine facts."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import tomllib
from pathlib import Path

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.catalog.catalog import parse_entries
from ocrd.catalog.inferred import image_text_to_text_model_types

# Trimmed from the real config.json files of these model families.
QWEN2_VL_LIKE = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "model_type": "qwen2_vl",
    "vision_config": {"depth": 32, "embed_dim": 1280},
    "hidden_size": 1536,
}
LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
}
CLIP = {
    "architectures": ["CLIPModel"],
    "model_type": "clip",
    "text_config": {"hidden_size": 512},
    "vision_config": {"hidden_size": 768},
}
REMOTE_CODE_VLM = {
    "architectures": ["InternVLChatModel"],
    "model_type": "internvl_chat",
    "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                 "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
    "vision_config": {"model_type": "intern_vit_6b"},
}


def test_a_qwen2_vl_like_config_gives_a_transformers_only_entry_without_presets() -> None:
    entry = Catalog.inferred_entry("someone/my-qwen2-vl-finetune", QWEN2_VL_LIKE)

    assert entry is not None
    assert entry.id == "someone/my-qwen2-vl-finetune"
    assert entry.engines == ("transformers",)
    assert entry.transformers.loader == "AutoModelForImageTextToText"
    assert entry.transformers.trust_remote_code is False
    assert entry.presets == {} and entry.default_preset is None
    assert entry.inferred
    assert entry.vllm is None


def test_a_text_only_llama_config_gives_none() -> None:
    assert Catalog.inferred_entry("meta-llama/Llama-3.1-8B", LLAMA) is None


def test_a_native_model_type_without_vision_config_is_enough() -> None:
    config = {"model_type": "got_ocr2", "architectures": ["GotOcr2ForConditionalGeneration"]}

    entry = Catalog.inferred_entry("someone/got-copy", config)

    assert entry is not None
    assert (entry.id, entry.engines) == ("someone/got-copy", ("transformers",))
    assert (entry.transformers.loader, entry.transformers.trust_remote_code) == ("AutoModelForImageTextToText", False)


def test_a_vision_encoder_with_a_vision_config_is_not_servable() -> None:
    assert Catalog.inferred_entry("openai/clip-vit-base-patch32", CLIP) is None


def test_a_remote_code_vlm_is_loaded_with_the_class_its_auto_map_registers() -> None:
    entry = Catalog.inferred_entry("someone/internvl-finetune", REMOTE_CODE_VLM)

    assert entry is not None
    assert entry.transformers.loader == "AutoModel"
    assert entry.transformers.trust_remote_code is True


@pytest.mark.parametrize("config", [{}, {"model_type": 7}, [], "qwen2_vl"])
def test_configs_that_say_nothing_give_none(config) -> None:
    assert Catalog.inferred_entry("someone/odd", config) is None


def test_with_extra_adds_inferred_entries_and_keeps_the_binaries() -> None:
    base = Catalog.load_default({"tesseract": "/nonexistent/tesseract"})
    extra = Catalog.inferred_entry("someone/my-qwen2-vl-finetune", QWEN2_VL_LIKE)

    bigger = base.with_extra([extra])

    assert bigger.resolve("someone/my-qwen2-vl-finetune") is extra
    assert len(bigger.entries()) == len(base.entries()) + 1
    assert "builtin/tesseract" not in {entry.id for entry in bigger.available()}
    assert extra not in base.entries()


def test_with_extra_refuses_a_known_id() -> None:
    duplicate = CatalogEntry(id="rednote-hilab/dots.ocr", engines=("transformers",))

    with pytest.raises(ValueError, match="dots.ocr"):
        Catalog.load_default().with_extra([duplicate])


# --- the copied list of transformers' image-text-to-text model types ----------------------------


def test_the_copied_model_type_list_contains_the_catalogs_native_architectures() -> None:
    types = image_text_to_text_model_types()

    assert {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "got_ocr2", "idefics3"} <= types
    assert "llama" not in types


def _installed_mapping_keys() -> list[str] | None:
    # The installed transformers' source, read without importing it (the daemon never does).
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).parent / "models" / "auto" / "modeling_auto.py"
    for node in ast.parse(source.read_text("utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if getattr(target, "id", "") == "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES":
            return [key for key, _ in ast.literal_eval(node.value.args[0])]
    return None


def test_the_copied_list_matches_the_installed_transformers_of_the_same_version() -> None:
    keys = _installed_mapping_keys()
    if keys is None:
        pytest.skip("transformers is not installed here")
    installed = importlib.metadata.version("transformers")
    data_path = Path(__file__).parents[2] / "ocrd" / "catalog" / "image_text_to_text.toml"
    data = tomllib.loads(data_path.read_text("utf-8"))
    if installed != data["transformers_version"]:
        pytest.skip(f"installed transformers {installed} is not the copied "
                    f"{data['transformers_version']}")
    assert data["model_types"] == keys


# --- engine facts are checked when the catalog is read ------------------------------------------


def _entry(extra: str) -> str:
    return '[[model]]\nid = "org/m"\nengines = ["transformers", "vllm"]\n' + extra


@pytest.mark.parametrize(
    ("toml", "complaint"),
    [
        ('[model.vllm]\nargs = ["--max-model-len"]\n', "needs a value"),
        ('[model.vllm]\nargs = ["4096"]\n', "expected a --flag"),
        ('[model.vllm]\nargs = ["--gpu-memory-utilization", "0.9"]\n', "set by ocrd"),
        ("[model.vllm]\nargs = [\"--limit-mm-per-prompt\", '{image:1}']\n", "not JSON"),
        ('[model.vllm]\nmax_model_len = 4096\n', "max_model_len"),
        ('[model.transformers]\nloader = "AutoModelForVision2Seq"\n', "AutoModelForVision2Seq"),
        ('[model.transformers]\napi = "magic"\n', "magic"),
        ('[model.transformers]\ntransformers_version = "five"\n', "specifier"),
        ('[model.transformers]\nattn_implementation = "flash"\n', "flash"),
        ('[model.builtin]\nbackend = "ppocr"\n', "does not list"),
        ('unsupported = { vllm = "no" }\n', "unsupported"),
        ('seed_memory_gb = { cpu = 1.0 }\n', "seed_memory_gb"),
        ('params_billion = -1\n', "params_billion"),
    ],
)
def test_bad_engine_facts_are_value_errors(toml: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_entries(tomllib.loads(_entry(toml)))


def test_unsupported_defaults_fill_only_engines_the_entry_lacks() -> None:
    data = tomllib.loads(
        '[unsupported_defaults]\nbuiltin = "bundled pipelines only"\n'
        '[[model]]\nid = "org/a"\nengines = ["transformers"]\nunsupported = { vllm = "no port" }\n'
        '[[model]]\nid = "org/b"\nengines = ["builtin"]\n'
    )

    a, b = parse_entries(data)

    assert a.unsupported == {"builtin": "bundled pipelines only", "vllm": "no port"}
    assert b.unsupported == {}
