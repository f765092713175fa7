"""The packaged catalog data (ocrd/catalog/models.toml): every model the issue lists, with sane facts.

These tests read the data through the public API and check it against rules written out here, not
against the parser's own validators, so a validator that lets something through is caught too.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from importlib import resources

import pytest

from ocrd.catalog import Catalog, CatalogEntry, render_preset

ENGINES = {"builtin", "transformers", "vllm"}
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
ALIAS = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
LOADERS = {"AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel"}
# vLLM flags known to take no value; every other --flag takes exactly one.
BOOLEAN_FLAGS = {"--trust-remote-code", "--no-enable-prefix-caching", "--enforce-eager"}

SEED_MODELS = {
    "rednote-hilab/dots.ocr": "dots.ocr",
    "stepfun-ai/GOT-OCR-2.0-hf": "got-ocr2",
    "Qwen/Qwen2-VL-2B-Instruct": "qwen2-vl-2b",
    "Qwen/Qwen2-VL-7B-Instruct": "qwen2-vl-7b",
    "microsoft/Phi-3.5-vision-instruct": "phi-3.5-vision",
    "vikhyatk/moondream2": "moondream2",
    "OpenGVLab/InternVL2-2B": "internvl2-2b",
    "microsoft/Phi-3-vision-128k-instruct": "phi-3-vision-128k",
}
CURRENT_OCR_MODELS = {
    "allenai/olmOCR-2-7B-1025", "deepseek-ai/DeepSeek-OCR", "PaddlePaddle/PaddleOCR-VL",
    "nanonets/Nanonets-OCR2-3B", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct",
    "ibm-granite/granite-docling-258M", "opendatalab/MinerU2.5-2509-1.2B",
}
# The leaders of olmOCR-Bench and OmniDocBench the issue names, with an alias each.
LEADERS = {
    "lightonai/LightOnOCR-2-1B": "lightonocr-2",
    "tencent/HunyuanOCR": "hunyuanocr",
    "PaddlePaddle/PaddleOCR-VL-1.5": "paddleocr-vl-1.5",
    "zai-org/GLM-OCR": "glm-ocr",
    "datalab-to/chandra-ocr-2": "chandra-2",
}
# Chat models trained to transcribe the image alone: their preset has no text at all.
IMAGE_ONLY_CHAT = {"lightonai/LightOnOCR-2-1B"}
# The seed's memory table, transcribed by hand from the user's original guide
# (model-modes-guide.ru.md, which is not part of this repository).
SEED_MEMORY = {
    "rednote-hilab/dots.ocr": {"transformers_8bit": 3.5, "vllm": 8.0},
    "stepfun-ai/GOT-OCR-2.0-hf": {"transformers_8bit": 0.8},
    "Qwen/Qwen2-VL-2B-Instruct": {"transformers_8bit": 2.5, "vllm": 6.0},
    "microsoft/Phi-3.5-vision-instruct": {"transformers_8bit": 4.5, "vllm": 10.0},
    "vikhyatk/moondream2": {"transformers_8bit": 2.0},
    "Qwen/Qwen2-VL-7B-Instruct": {"transformers_8bit": 4.5, "vllm": 12.0},
}
# Presets the issue names, per model.
NAMED_PRESETS = {
    "rednote-hilab/dots.ocr": {"layout", "ocr"},
    "stepfun-ai/GOT-OCR-2.0-hf": {"plain", "format"},
    "deepseek-ai/DeepSeek-OCR": {"markdown", "free"},
    "PaddlePaddle/PaddleOCR-VL": {"ocr", "table", "formula"},
    "PaddlePaddle/PaddleOCR-VL-1.5": {"ocr", "table", "formula", "chart", "spotting", "seal"},
    "zai-org/GLM-OCR": {"text", "table", "formula"},
    "datalab-to/chandra-ocr-2": {"layout", "ocr"},
}


def catalog() -> Catalog:
    return Catalog.load_default()


def entries() -> list[CatalogEntry]:
    return catalog().entries()


def hf_entries() -> list[CatalogEntry]:
    return [entry for entry in entries() if "builtin" not in entry.engines]


def every_preset():
    return [(entry, name) for entry in entries() for name in entry.presets]


def parse_vllm_args(args: tuple[str, ...]) -> dict[str, str | None]:
    """flag -> value (None for a boolean flag); AssertionError when the list is malformed."""
    parsed: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        assert flag.startswith("--"), (args, i)
        if flag in BOOLEAN_FLAGS:
            parsed[flag] = None
            i += 1
            continue
        assert i + 1 < len(args) and not args[i + 1].startswith("--"), f"{flag} has no value"
        parsed[flag] = args[i + 1]
        i += 2
    return parsed


# --- which models -------------------------------------------------------------------------------


def test_every_seed_model_is_present_with_its_seed_alias() -> None:
    cat = catalog()

    for model_id, alias in SEED_MODELS.items():
        assert cat.resolve(alias).id == model_id
        assert cat.resolve(model_id).id == model_id


def test_every_current_ocr_model_and_the_builtins_are_present() -> None:
    ids = {entry.id for entry in entries()}

    assert CURRENT_OCR_MODELS | {"builtin/ppocr", "builtin/tesseract"} <= ids


def test_the_benchmark_leaders_are_present_with_their_alias_and_read_documents() -> None:
    from ocrd.catalog.documents import OUTPUT_FORMATS

    cat = catalog()
    for model_id, alias in LEADERS.items():
        entry = cat.resolve(alias)
        assert entry.id == model_id
        # Each says how it reads a page: a preset it has, in a format ocrd knows.
        assert entry.document is not None and entry.document.preset in entry.presets, model_id
        assert entry.presets[entry.document.preset].format in OUTPUT_FORMATS, model_id
        assert entry.default_engine == "vllm", model_id


# --- licences -----------------------------------------------------------------------------------


def test_every_model_names_its_licence_with_a_source() -> None:
    text = resources.files("ocrd.catalog").joinpath("models.toml").read_text("utf-8")
    sourced = re.compile(r'(?m)^license = "[^"]+"\s+# .*(\[(card|HFt|HFd)\]|unverified)')

    for entry in entries():
        assert isinstance(entry.license, str) and entry.license.strip(), entry.id
        assert entry.license_note is None or entry.license_note.strip(), entry.id
    blocks = re.split(r"(?m)^\[\[model\]\]$", text)[1:]
    assert all(sourced.search(block) for block in blocks)


def test_restrictive_licences_carry_a_note_chandra_s_commercial_restriction_first() -> None:
    cat = catalog()

    chandra = cat.resolve("chandra-2")
    assert "openrail" in chandra.license.lower() and "commercial" in chandra.license_note
    assert cat.resolve("hunyuanocr").license_note
    assert cat.resolve("qwen2.5-vl-3b").license_note
    for entry in entries():  # the permissive licences need none
        if entry.license in {"apache-2.0", "mit"}:
            assert entry.license_note is None, entry.id


def test_every_id_is_well_formed_and_every_alias_short_lower_case() -> None:
    for entry in entries():
        assert MODEL_ID.match(entry.id), entry.id
        for alias in entry.aliases:
            assert ALIAS.match(alias), (entry.id, alias)


def test_names_are_unique_also_in_their_model_preset_forms() -> None:
    names = [name for entry in entries() for name in (entry.id, *entry.aliases)]
    with_presets = [f"{name}:{preset}" for entry in entries()
                    for name in (entry.id, *entry.aliases) for preset in entry.presets]

    assert len(names) == len(set(names))
    assert len(with_presets) == len(set(with_presets))
    assert not set(with_presets) & set(names)
    assert not any(":" in name for name in names)


# --- engines ----------------------------------------------------------------------------------


def test_every_model_has_an_engine_and_a_reason_for_each_engine_it_lacks() -> None:
    for entry in entries():
        assert entry.engines and set(entry.engines) <= ENGINES, entry.id
        assert set(entry.unsupported) == ENGINES - set(entry.engines), entry.id
        assert all(len(reason) > 20 for reason in entry.unsupported.values()), entry.unsupported


@pytest.mark.parametrize("model", ["stepfun-ai/GOT-OCR-2.0-hf", "vikhyatk/moondream2"])
def test_got_ocr2_and_moondream2_are_transformers_only_with_a_reason(model: str) -> None:
    entry = catalog().resolve(model)

    assert entry.engines == ("transformers",)
    assert "vllm" in entry.unsupported.get("vllm", "").lower()


@pytest.mark.parametrize("model", ["OpenGVLab/InternVL2-2B", "microsoft/Phi-3-vision-128k-instruct"])
def test_seed_claims_of_vllm_incompatibility_are_overruled_by_vllms_model_list(model: str) -> None:
    assert "vllm" in catalog().resolve(model).engines


def test_every_transformers_model_names_a_loader_and_consistent_remote_code() -> None:
    for entry in entries():
        facts = entry.transformers
        if "transformers" not in entry.engines:
            assert facts is None
            continue
        assert facts.loader in LOADERS, entry.id
        # A repository's own code is what AutoModelForCausalLM/AutoModel load for these models.
        if facts.loader != "AutoModelForImageTextToText":
            assert facts.trust_remote_code, entry.id


def test_known_transformers_constraints() -> None:
    cat = catalog()

    assert cat.resolve("dots.ocr").transformers.transformers_version == "<5"
    assert cat.resolve("got-ocr2").transformers.transformers_version == ">=4.49"
    assert cat.resolve("phi-3.5-vision").transformers.attn_implementation == "eager"
    assert cat.resolve("moondream2").transformers.revision


def test_vllm_args_are_flag_value_pairs_or_known_boolean_flags() -> None:
    for entry in hf_entries():
        if entry.vllm is None:
            continue
        parsed = parse_vllm_args(entry.vllm.args)
        for flag, value in parsed.items():
            # ocrd's planner and runner own these.
            assert flag not in {"--gpu-memory-utilization", "--served-model-name", "--port", "--host"}
            if value is not None and value[:1] in "{[":
                json.loads(value)


def test_preset_max_tokens_fit_the_vllm_context_when_one_is_set() -> None:
    for entry in hf_entries():
        if entry.vllm is None:
            continue
        max_len = parse_vllm_args(entry.vllm.args).get("--max-model-len")
        if max_len is None:
            continue
        for preset in entry.presets.values():
            assert preset.sampling.get("max_tokens", 0) < int(max_len), (entry.id, preset.name)


# --- presets ----------------------------------------------------------------------------------


def test_every_model_outside_builtin_has_presets_and_a_default_one() -> None:
    for entry in hf_entries():
        assert entry.presets, entry.id
        assert entry.default_preset in entry.presets, entry.id


def test_the_issues_named_presets_exist() -> None:
    cat = catalog()

    for model, names in NAMED_PRESETS.items():
        assert names <= set(cat.resolve(model).presets), model


@pytest.mark.parametrize(("entry", "name"), every_preset(), ids=lambda v: getattr(v, "id", v))
def test_every_preset_renders_with_sampling_in_range(entry: CatalogEntry, name: str) -> None:
    preset = entry.presets[name]
    user_text = "[10, 20, 30, 40]" if preset.takes_text else None

    if entry.engines == ("builtin",):
        # OCR pipelines read no prompt and sample nothing: their presets only pick the output.
        rendered = render_preset(entry, name, user_text, engine="builtin")
        assert rendered.prompt == "" and rendered.sampling == {} and preset.output.strip()
        return
    for engine in entry.engines:
        rendered = render_preset(entry, name, user_text, engine=engine)
        # Only models whose API takes no text prompt may render an empty one.
        if not rendered.prompt and entry.id not in IMAGE_ONLY_CHAT:
            api = entry.transformers.api
            assert api in {"got_ocr2", "moondream"}, (entry.id, name)
            # moondream2's task is a method call; GOT-OCR2's plain OCR needs no options at all.
            assert api != "moondream" or rendered.processor_kwargs.get("method"), (entry.id, name)
        assert "{text}" not in rendered.prompt
        assert preset.output.strip()
        _assert_sampling_in_range(rendered.sampling, (entry.id, name))


def _assert_sampling_in_range(sampling: dict, where: tuple) -> None:
    assert isinstance(sampling.get("max_tokens"), int) and sampling["max_tokens"] > 0, where
    for key, value in sampling.items():
        assert not isinstance(value, bool) and math.isfinite(value), (where, key)
    assert 0 <= sampling.get("temperature", 0) <= 2, where
    assert 0 < sampling.get("top_p", 1) <= 1, where
    for key in ("presence_penalty", "frequency_penalty"):
        assert -2 <= sampling.get(key, 0) <= 2, (where, key)


def test_dots_ocr_on_vllm_gets_its_image_tokens_in_front() -> None:
    entry = catalog().resolve("dots.ocr")

    on_vllm = render_preset(entry, "ocr", None, engine="vllm").prompt
    on_transformers = render_preset(entry, "ocr", None, engine="transformers").prompt

    assert on_vllm == "<|img|><|imgpad|><|endofimg|>Extract the text content from this image."
    assert on_transformers == "Extract the text content from this image."


def test_got_ocr2_format_preset_passes_format_to_the_processor() -> None:
    rendered = render_preset(catalog().resolve("got-ocr2"), "format", None)

    assert rendered.prompt == ""
    assert rendered.processor_kwargs == {"format": True}
    assert rendered.stop == ("<|im_end|>",)


def test_granite_docling_keeps_special_tokens_and_stops_at_the_end_tag() -> None:
    rendered = render_preset(catalog().resolve("granite-docling"), None, None)

    assert rendered.prompt == "Convert this page to docling."
    assert rendered.skip_special_tokens is False
    assert "</doctag>" in rendered.stop


def test_mineru_presets_merge_model_and_task_sampling() -> None:
    table = catalog().resolve("mineru2.5").presets["table"]

    assert table.prompt == "\nTable Recognition:"
    assert table.sampling["frequency_penalty"] == 0.005
    assert table.sampling["temperature"] == 0.0 and table.sampling["no_repeat_ngram_size"] == 100
    assert table.system == "You are a helpful assistant."


# --- sizes and the seed's memory table --------------------------------------------------------


def test_every_hugging_face_model_has_size_figures() -> None:
    for entry in hf_entries():
        assert entry.params_billion and 0.1 < entry.params_billion < 20, entry.id
        # bf16 is 2 bytes a parameter; Hub figures and nominal counts differ by a few percent.
        ratio = entry.bf16_bytes / (entry.params_billion * 1e9 * 2)
        assert 0.85 < ratio < 1.15, (entry.id, ratio)


def test_the_seed_memory_table_is_recorded_verbatim() -> None:
    recorded = {entry.id: entry.seed_memory_gb for entry in entries() if entry.seed_memory_gb}

    assert recorded == SEED_MEMORY


def test_the_toml_cites_a_source_near_every_model() -> None:
    text = resources.files("ocrd.catalog").joinpath("models.toml").read_text("utf-8")
    blocks = re.split(r"(?m)^\[\[model\]\]$", text)[1:]
    tags = re.compile(r"\[(VSM|VEX|REC|HFt|card|HFd|seed|facts|ocrd)\]|computed|unverified|inferred")

    assert len(blocks) == len(tomllib.loads(text)["model"])
    for block in blocks:
        if 'engines = ["builtin"]' in block:
            continue
        assert len(tags.findall(block)) >= 5, block.splitlines()[0:2]
