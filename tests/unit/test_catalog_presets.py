"""Presets: choosing one with "model:preset", rendering it with the user's text, and bad preset data."""

from __future__ import annotations

import tomllib

import pytest

from ocrd.catalog import Catalog, CatalogEntry, render_preset, split_model_preset
from ocrd.catalog.catalog import parse_entries
from ocrd.errors import InvalidRequest, ModelNotFound


def small_catalog() -> Catalog:
    data = tomllib.loads(
        """
        [[model]]
        id = "org/ocr-1"
        aliases = ["ocr1", "ocr1.5"]
        engines = ["transformers", "vllm"]
        default_preset = "page"
        sampling = { temperature = 0.1, max_tokens = 100 }
        stop = ["<end>"]
        [model.vllm]
        prompt_prefix = "<img>"
        [model.presets.page]
        prompt = "Read the page."
        output = "text"
        [model.presets.box]
        prompt = "Read inside {text} only."
        output = "text"
        text_hint = "a box [x1, y1, x2, y2]"
        sampling = { max_tokens = 10 }
        [model.presets.noprompt]
        prompt = ""
        output = "text"
        processor_kwargs = { format = true }

        [[model]]
        id = "org/plain"
        aliases = ["plain"]
        engines = ["builtin"]
        """
    )
    return Catalog(parse_entries(data))


# --- resolve_request_model ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model", "preset"),
    [
        ("org/ocr-1", "org/ocr-1", None),
        ("ocr1", "org/ocr-1", None),
        ("ocr1:box", "org/ocr-1", "box"),
        ("org/ocr-1:page", "org/ocr-1", "page"),
        # An alias with a period is not confused with a preset separator.
        ("ocr1.5:page", "org/ocr-1", "page"),
    ],
)
def test_resolve_request_model_splits_a_preset_suffix(name: str, model: str, preset: str | None) -> None:
    entry, chosen = small_catalog().resolve_request_model(name)

    assert (entry.id, chosen) == (model, preset)


def test_unknown_preset_is_invalid_request_listing_the_models_presets() -> None:
    with pytest.raises(InvalidRequest) as caught:
        small_catalog().resolve_request_model("ocr1:layout")

    error = caught.value
    assert error.http_status == 400 and error.param == "model"
    assert "'layout'" in error.message
    assert "box, noprompt, page" in error.message


def test_preset_suffix_on_a_model_without_presets_says_it_has_none() -> None:
    with pytest.raises(InvalidRequest, match="its presets: none"):
        small_catalog().resolve_request_model("plain:ocr")


@pytest.mark.parametrize("name", ["nothing:page", "nothing", "ocr1:page:extra", ":page"])
def test_unknown_model_before_the_suffix_is_model_not_found(name: str) -> None:
    # "ocr1:page:extra" splits at the last ":", so the model part "ocr1:page" is unknown.
    with pytest.raises(ModelNotFound):
        small_catalog().resolve_request_model(name)


def test_trailing_colon_names_no_preset() -> None:
    with pytest.raises(InvalidRequest, match="names no preset"):
        small_catalog().resolve_request_model("ocr1:")


def test_split_model_preset_works_with_any_resolver() -> None:
    entry = CatalogEntry(id="org/cached", engines=("transformers",))

    def resolve(name: str) -> CatalogEntry:
        if name != "org/cached":
            raise ModelNotFound(f"model {name!r} does not exist")
        return entry

    assert split_model_preset("org/cached", resolve) == (entry, None)
    with pytest.raises(InvalidRequest):
        split_model_preset("org/cached:ocr", resolve)


def test_resolve_request_model_on_the_real_catalog() -> None:
    catalog = Catalog.load_default()

    entry, preset = catalog.resolve_request_model("dots.ocr:layout")

    assert (entry.id, preset) == ("rednote-hilab/dots.ocr", "layout")
    assert catalog.resolve_request_model("rednote-hilab/dots.ocr") == (entry, None)


def test_a_name_with_a_colon_cannot_enter_the_catalog() -> None:
    with pytest.raises(ValueError, match="separates"):
        Catalog([CatalogEntry(id="org/m", aliases=("m:x",), engines=("builtin",))])


# --- render_preset ------------------------------------------------------------------------------


def test_fixed_prompt_ignores_the_users_text_and_says_so() -> None:
    entry = small_catalog().resolve("ocr1")

    plain = render_preset(entry, "page", None)
    with_text = render_preset(entry, "page", "please translate too")

    assert plain.prompt == with_text.prompt == "Read the page."
    assert not plain.user_text_ignored and with_text.user_text_ignored


def test_placeholder_takes_the_users_text() -> None:
    rendered = render_preset(small_catalog().resolve("ocr1"), "box", "  [1, 2, 3, 4] ")

    assert rendered.prompt == "Read inside [1, 2, 3, 4] only."
    assert not rendered.user_text_ignored


@pytest.mark.parametrize("text", [None, "", "   "])
def test_placeholder_without_text_is_invalid_request_with_the_hint(text: str | None) -> None:
    with pytest.raises(InvalidRequest, match=r"a box \[x1, y1, x2, y2\]"):
        render_preset(small_catalog().resolve("ocr1"), "box", text)


def test_preset_sampling_overrides_the_models_and_inherits_the_rest() -> None:
    entry = small_catalog().resolve("ocr1")

    box = render_preset(entry, "box", "x")
    page = render_preset(entry, "page", None)

    assert box.sampling == {"temperature": 0.1, "max_tokens": 10}
    assert page.sampling == {"temperature": 0.1, "max_tokens": 100}
    assert box.stop == page.stop == ("<end>",)


def test_engine_wrapping_applies_only_for_that_engine_and_not_to_an_empty_prompt() -> None:
    entry = small_catalog().resolve("ocr1")

    assert render_preset(entry, "page", None, engine="vllm").prompt == "<img>Read the page."
    assert render_preset(entry, "page", None, engine="transformers").prompt == "Read the page."
    assert render_preset(entry, "noprompt", None, engine="vllm").prompt == ""


def test_no_preset_name_means_the_default_preset() -> None:
    entry = small_catalog().resolve("ocr1")

    assert render_preset(entry, None, None) == render_preset(entry, "page", None)


def test_no_preset_name_and_no_default_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="no default preset"):
        render_preset(small_catalog().resolve("plain"), None, None)


def test_rendered_dicts_are_copies() -> None:
    entry = small_catalog().resolve("ocr1")

    render_preset(entry, "noprompt", None).processor_kwargs["format"] = False
    render_preset(entry, "page", None).sampling["max_tokens"] = 1

    assert entry.presets["noprompt"].processor_kwargs == {"format": True}
    assert entry.presets["page"].sampling["max_tokens"] == 100


# --- bad preset data ----------------------------------------------------------------------------


def _entry_with(extra: str) -> str:
    return '[[model]]\nid = "org/m"\nengines = ["transformers"]\n' + extra


@pytest.mark.parametrize(
    ("toml", "complaint"),
    [
        ('[model.presets.p]\nprompt = "x"\n', "non-empty 'output'"),
        ('[model.presets.P]\nprompt = "x"\noutput = "t"\n', "lower-case"),
        ('[model.presets.p]\nprompt = "{text}"\noutput = "t"\n', "text_hint"),
        ('[model.presets.p]\nprompt = "x"\noutput = "t"\ntemprature = 1\n', "temprature"),
        ('[model.presets.p]\nprompt = "x"\noutput = "t"\nsampling = { temperature = 3.0 }\n', "outside"),
        ('[model.presets.p]\nprompt = "x"\noutput = "t"\nsampling = { max_tokens = 1.5 }\n', "integer"),
        ('sampling = { top_q = 0.5 }\n', "top_q"),
        ('default_preset = "nope"\n', "default_preset"),
    ],
)
def test_bad_preset_data_is_a_value_error(toml: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_entries(tomllib.loads(_entry_with(toml)))
