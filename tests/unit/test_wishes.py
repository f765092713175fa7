"""ocrd.core.wishes: what the settings, a model's [models."ID"] table and a load ask of a model,
resolved once, most specific first, each wish with where it comes from."""

from __future__ import annotations

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.config.settings import Settings
from ocrd.core.wishes import LoadWish, check_quantization, resolve_wishes
from ocrd.errors import InvalidRequest

CATALOG = Catalog.load_default()
QWEN = CATALOG.resolve("Qwen/Qwen2-VL-2B-Instruct")
SECTION = '[models."Qwen/Qwen2-VL-2B-Instruct"]'


def test_without_wishes_the_planner_chooses_and_the_scheduling_settings_are_the_global_ones():
    wishes = resolve_wishes(QWEN, Settings(scheduler={"keep_alive": "2m", "queue_size": 7}))
    assert (wishes.engine, wishes.preferred_engine, wishes.quantization, wishes.device) == (None,) * 4
    assert (wishes.keep_alive, wishes.pinned, wishes.queue_size) == (120.0, False, 7)
    assert wishes.max_concurrent_requests is None  # the engine's
    preference = wishes.preference()
    assert (preference.engine, preference.quantization, preference.device) == (None, None, None)


def test_a_models_table_wins_over_the_global_settings_and_names_itself_as_the_source():
    settings = Settings(planner={"engine": "vllm"}, transformers={"quantization": "8bit", "device": "cpu"},
                        models={QWEN.id: {"engine": "transformers", "quantization": "4bit", "device": "cuda:1",
                                          "keep_alive": "5m", "pinned": True, "queue_size": 2,
                                          "max_concurrent_requests": 3}})
    wishes = resolve_wishes(QWEN, settings)
    preference = wishes.preference()
    assert (preference.engine, preference.engine_from) == ("transformers", f"{SECTION} engine")
    assert (preference.quantization, preference.quantization_from) == ("4bit", f"{SECTION} quantization")
    assert (preference.device, preference.device_from) == ("cuda:1", f"{SECTION} device")
    assert (wishes.keep_alive, wishes.pinned, wishes.queue_size, wishes.max_concurrent_requests) == (
        300.0, True, 2, 3)


def test_a_models_table_is_found_by_alias():
    alias = QWEN.aliases[0]
    wishes = resolve_wishes(QWEN, Settings(models={alias: {"revision": "v2"}}))
    assert wishes.configured_revision == wishes.revision == "v2"


def test_a_loads_wishes_win_over_the_models_table_and_auto_leaves_the_choice_to_the_next():
    settings = Settings(transformers={"quantization": "8bit"},
                        models={QWEN.id: {"engine": "vllm", "keep_alive": "5m"}})
    load = LoadWish.asked(engine="transformers", quantization="auto", keep_alive=30.0, pin=True)
    wishes = resolve_wishes(QWEN, settings, load)
    preference = wishes.preference()
    assert (preference.engine, preference.engine_from) == ("transformers", "the request (--mode / --quant)")
    assert (preference.quantization, preference.quantization_from) == ("8bit", "transformers.quantization")
    assert (wishes.keep_alive, wishes.pinned) == (30.0, True)


def test_planner_engine_is_a_preference_that_applies_only_where_the_model_supports_it():
    settings = Settings(planner={"engine": "vllm"})
    assert resolve_wishes(QWEN, settings).wanted_engine() == "vllm"
    got = CATALOG.resolve("stepfun-ai/GOT-OCR-2.0-hf")  # transformers only
    wishes = resolve_wishes(got, settings)
    assert wishes.wanted_engine() is None
    # The planner still hears of it, and says why it does not apply.
    assert (wishes.preference().engine, wishes.preference().engine_from) == ("vllm", "planner.engine")


def test_an_engine_the_model_lacks_is_a_400_when_it_is_wanted():
    wishes = resolve_wishes(CATALOG.resolve("ppocr"), Settings(), LoadWish(engine="vllm"))
    with pytest.raises(InvalidRequest, match="cannot run on the vllm engine; it supports: builtin"):
        wishes.wanted_engine()


def test_vllm_arguments_are_the_global_ones_then_the_models():
    settings = Settings(vllm={"args": ["--max-num-seqs", "8"]},
                        models={QWEN.id: {"vllm_args": ["--max-model-len", "4096"],
                                          "gpu_memory_utilization": 0.4}})
    preference = resolve_wishes(QWEN, settings).preference()
    assert preference.vllm_args == ("--max-num-seqs", "8", "--max-model-len", "4096")
    assert preference.gpu_memory_utilization == 0.4
    assert preference.gpu_memory_utilization_from == f"{SECTION} gpu_memory_utilization"


def test_the_revision_is_the_configs_else_the_catalogs_transformers_pin():
    moondream = CATALOG.resolve("vikhyatk/moondream2")
    assert resolve_wishes(moondream, Settings()).revision == "2025-06-21"
    configured = Settings(models={"moondream2": {"revision": "2024-08-26"}})
    assert resolve_wishes(moondream, configured).revision == "2024-08-26"
    assert resolve_wishes(CatalogEntry("org/unknown", engines=("transformers",)), Settings()).revision is None


def test_a_later_loads_wishes_go_on_top_and_what_it_leaves_unsaid_stays():
    first = LoadWish(engine="vllm", keep_alive=60.0, pin=True)
    later = first.then(LoadWish(quantization="8bit"))
    assert later == LoadWish(engine="vllm", quantization="8bit", keep_alive=60.0, pin=True)
    assert first.then(LoadWish(engine="transformers", keep_alive=0.0)).keep_alive == 0.0


def test_a_loads_engine_and_quantization_are_checked_as_users_write_them():
    assert LoadWish.asked(engine="", quantization="auto") == LoadWish()
    assert not LoadWish.asked(engine="", quantization="auto", pin=True).plans
    with pytest.raises(InvalidRequest, match="unknown engine 'onnx'"):
        LoadWish.asked(engine="onnx")


def test_quantization_is_for_the_engines_that_quantize():
    ppocr = CATALOG.resolve("ppocr")
    with pytest.raises(InvalidRequest) as caught:
        check_quantization(ppocr, LoadWish(quantization="4bit"), "builtin")
    assert caught.value.message == ("builtin/ppocr runs on the builtin engine, which does not quantize; "
                                    "quantization (8bit/4bit) is for the transformers engine")
    check_quantization(ppocr, LoadWish(quantization="none"), "builtin")  # nothing to do: fine
    # A model that may run on transformers quantizes there when no engine is asked for.
    check_quantization(QWEN, LoadWish(quantization="8bit"), "vllm")
    with pytest.raises(InvalidRequest):
        check_quantization(QWEN, LoadWish(engine="vllm", quantization="8bit"), "vllm")
