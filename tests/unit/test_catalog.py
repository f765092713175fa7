"""The catalog (ocrd.catalog.catalog) and its data, the packaged ``models.toml``."""

from __future__ import annotations

import re
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from ocrd.catalog import Catalog, CatalogEntry
from ocrd.catalog.catalog import parse_entries
from ocrd.catalog.programs import ProgramFinder
from ocrd.errors import ModelNotFound

ENGINES = {"builtin", "transformers", "vllm"}
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MISSING_TESSERACT = {"tesseract": "/nonexistent/tesseract"}


def raw_models() -> list[dict]:
    text = resources.files("ocrd.catalog").joinpath("models.toml").read_text("utf-8")
    return tomllib.loads(text)["model"]


@pytest.fixture
def fake_tesseract(tmp_path: Path) -> str:
    """An executable file standing in for tesseract: the catalog only asks whether it exists."""
    binary = tmp_path / "tesseract"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return str(binary)


# --- the data -----------------------------------------------------------------------------------


def test_models_toml_lists_at_least_the_builtin_models() -> None:
    ids = {entry.id for entry in Catalog.load_default().entries()}

    assert {"builtin/ppocr", "builtin/tesseract"} <= ids


def test_every_id_is_org_slash_name() -> None:
    for entry in Catalog.load_default().entries():
        assert MODEL_ID.match(entry.id), entry.id


def test_aliases_and_ids_are_unique_across_the_catalog() -> None:
    names = [name for raw in raw_models() for name in (raw["id"], *raw.get("aliases", []))]

    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_aliases_have_no_slash_and_are_not_blank() -> None:
    for entry in Catalog.load_default().entries():
        for alias in entry.aliases:
            assert alias.strip() == alias and alias and "/" not in alias, (entry.id, alias)


def test_every_entry_has_at_least_one_known_engine() -> None:
    for entry in Catalog.load_default().entries():
        assert entry.engines, entry.id
        assert set(entry.engines) <= ENGINES, (entry.id, entry.engines)
        assert entry.default_engine == entry.engines[0]


def test_engine_options_belong_to_engines_the_entry_lists() -> None:
    for entry in Catalog.load_default().entries():
        assert set(entry.engine_options) <= set(entry.engines), entry.id


def test_builtin_models_name_their_backend() -> None:
    entries = {entry.id: entry for entry in Catalog.load_default().entries()}

    assert entries["builtin/ppocr"].engine_options["builtin"]["backend"] == "ppocr"
    assert entries["builtin/ppocr"].requires_binary is None
    assert entries["builtin/tesseract"].engine_options["builtin"]["backend"] == "tesseract"
    assert entries["builtin/tesseract"].requires_binary == "tesseract"


# --- resolving ----------------------------------------------------------------------------------


def test_resolve_by_id_and_by_alias_give_the_same_entry() -> None:
    catalog = Catalog.load_default()

    by_id = catalog.resolve("builtin/ppocr")

    assert by_id.id == "builtin/ppocr"
    assert catalog.resolve("ppocr") is by_id


def test_resolve_unknown_model_is_model_not_found_listing_what_exists() -> None:
    catalog = Catalog.load_default(MISSING_TESSERACT)

    with pytest.raises(ModelNotFound) as caught:
        catalog.resolve("acme/nothing")

    error = caught.value
    assert error.http_status == 404
    assert error.param == "model"
    assert "acme/nothing" in error.message
    assert "builtin/ppocr" in error.message
    # What the host cannot serve is not offered.
    assert "builtin/tesseract" not in error.message


def test_resolve_is_exact_not_a_prefix_or_case_insensitive_match() -> None:
    catalog = Catalog.load_default()

    for name in ("builtin/ppocr/", "builtin", "PPOCR", "ppoc"):
        with pytest.raises(ModelNotFound):
            catalog.resolve(name)


# --- availability of models that need a program ------------------------------------------------


def test_tesseract_is_not_available_when_its_binary_is_missing() -> None:
    catalog = Catalog.load_default(MISSING_TESSERACT)

    available = {entry.id for entry in catalog.available()}

    assert "builtin/tesseract" not in available
    assert "builtin/ppocr" in available
    # Still known: entries() lists every model, available or not.
    assert "builtin/tesseract" in {entry.id for entry in catalog.entries()}


@pytest.mark.parametrize("name", ["builtin/tesseract", "tesseract"])
def test_resolving_tesseract_without_its_binary_names_the_apt_package(name: str) -> None:
    catalog = Catalog.load_default(MISSING_TESSERACT)

    with pytest.raises(ModelNotFound) as caught:
        catalog.resolve(name)

    assert caught.value.http_status == 404
    assert caught.value.param == "model"
    assert "tesseract-ocr" in caught.value.message
    assert "not installed" in caught.value.message


def test_tesseract_is_available_when_the_configured_binary_exists(fake_tesseract: str) -> None:
    catalog = Catalog.load_default({"tesseract": fake_tesseract})

    assert "builtin/tesseract" in {entry.id for entry in catalog.available()}
    assert catalog.resolve("tesseract").id == "builtin/tesseract"


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed here")
def test_tesseract_is_listed_with_the_real_binary_on_path() -> None:
    catalog = Catalog.load_default({"tesseract": "tesseract"})

    assert "builtin/tesseract" in {entry.id for entry in catalog.available()}
    assert catalog.resolve("builtin/tesseract").requires_binary == "tesseract"


def test_model_without_required_binary_is_always_available() -> None:
    catalog = Catalog([CatalogEntry(id="org/plain", engines=("builtin",))], {})

    assert [entry.id for entry in catalog.available()] == ["org/plain"]


# --- building a catalog ----------------------------------------------------------------------


def test_duplicate_alias_is_a_value_error() -> None:
    entries = [
        CatalogEntry(id="org/one", aliases=("same",), engines=("builtin",)),
        CatalogEntry(id="org/two", aliases=("same",), engines=("builtin",)),
    ]

    with pytest.raises(ValueError, match="same"):
        Catalog(entries)


def test_alias_equal_to_another_entrys_id_is_a_value_error() -> None:
    entries = [
        CatalogEntry(id="org/one", engines=("builtin",)),
        CatalogEntry(id="org/two", aliases=("org/one",), engines=("builtin",)),
    ]

    with pytest.raises(ValueError, match="org/one"):
        Catalog(entries)


def test_duplicate_id_is_a_value_error() -> None:
    entries = [
        CatalogEntry(id="org/one", engines=("builtin",)),
        CatalogEntry(id="org/one", engines=("vllm",)),
    ]

    with pytest.raises(ValueError, match="org/one"):
        Catalog(entries)


def test_parse_entries_reads_engine_tables_as_engine_options() -> None:
    [entry] = parse_entries(
        {
            "model": [
                {
                    "id": "org/m",
                    "aliases": ["m"],
                    "description": "d",
                    "engines": ["vllm", "transformers"],
                    "vllm": {"args": ["--max-model-len", "4096"]},
                }
            ]
        }
    )

    assert entry == CatalogEntry(
        id="org/m",
        aliases=("m",),
        description="d",
        engines=("vllm", "transformers"),
        engine_options={"vllm": {"args": ["--max-model-len", "4096"]}},
    )
    assert entry.default_engine == "vllm"


def test_unknown_key_in_a_toml_entry_is_a_value_error() -> None:
    data = tomllib.loads(
        """
        [[model]]
        id = "org/m"
        engines = ["builtin"]
        engnes = ["vllm"]
        """
    )

    with pytest.raises(ValueError, match="engnes"):
        parse_entries(data)


def test_license_and_its_note_are_read_and_a_note_needs_a_license() -> None:
    [entry] = parse_entries(tomllib.loads(
        '[[model]]\nid = "org/m"\nengines = ["builtin"]\nlicense = "openrail"\nlicense_note = "no resale"\n'))
    assert (entry.license, entry.license_note) == ("openrail", "no resale")

    with pytest.raises(ValueError, match="license_note without a license"):
        parse_entries(tomllib.loads('[[model]]\nid = "org/m"\nengines = ["builtin"]\nlicense_note = "x"\n'))
    with pytest.raises(ValueError, match="license must be a non-empty string"):
        parse_entries(tomllib.loads('[[model]]\nid = "org/m"\nengines = ["builtin"]\nlicense = " "\n'))


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ('engines = ["builtin"]', "has no id"),
        ('id = "org/m"', "engines must be a non-empty subset"),
        ('id = "org/m"\nengines = []', "engines must be a non-empty subset"),
        ('id = "org/m"\nengines = ["onnx"]', "'onnx'"),
    ],
)
def test_entry_without_id_or_with_bad_engines_is_a_value_error(entry: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_entries(tomllib.loads("[[model]]\n" + entry))


def test_whether_a_program_is_installed_is_looked_up_once_a_while_not_per_request(tmp_path: Path) -> None:
    """``resolve`` runs for every request to tesseract: ``shutil.which`` (a stat per PATH folder)
    is asked again only after RECHECK_SECONDS, or after ``recheck_programs`` (a reload), so that
    a program installed while ocrd runs is still noticed."""
    program = tmp_path / "tesseract"
    lookups: list[str] = []
    now = [100.0]

    def which(command: str) -> str | None:
        lookups.append(command)
        return shutil.which(command)

    finder = ProgramFinder(which=which, clock=lambda: now[0], recheck_seconds=5.0)
    catalog = Catalog(Catalog.load_default().entries(), {"tesseract": str(program)}, finder)

    with pytest.raises(ModelNotFound):
        catalog.resolve("tesseract")
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    with pytest.raises(ModelNotFound):  # within the recheck window: the kept answer
        catalog.resolve("tesseract")
    assert lookups == [str(program)]

    now[0] += 5.0
    for _ in range(50):
        assert catalog.with_extra([]).resolve("tesseract").id == "builtin/tesseract"
    assert lookups == [str(program)] * 2  # copies made by with_extra share the answers

    program.unlink()
    catalog.recheck_programs()
    assert "builtin/tesseract" not in {entry.id for entry in catalog.available()}
    assert lookups == [str(program)] * 3
