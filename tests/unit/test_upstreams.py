"""``[[upstreams]]``: the settings, the catalog entries they become, how the directory, planner and
scheduler treat them, and what UpstreamRunner checks when a model loads.

The runner's tests talk to a real HTTP server in this process (``FakeUpstream``); the scheduler is
the real one, with a FakeRunner for the local model beside the upstream.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocrd.catalog import Catalog
from ocrd.config.loading import load_settings
from ocrd.config.settings import Settings
from ocrd.config.upstreams import ENGINE, UpstreamSettings, upstream_entries
from ocrd.core.directory import ModelDirectory
from ocrd.core.scheduler import Scheduler
from ocrd.errors import ConfigError, ModelLoadFailed, ModelNotFound
from ocrd.events import ModelState
from ocrd.planning.planner import Host, plan, summary
from ocrd.runners.base import RunnerSpec
from ocrd.runners.upstream import UpstreamRunner
from tests.support.fake_runner import FakeRunnerFactory
from tests.support.fake_upstream import FakeUpstream

pytestmark = pytest.mark.usefixtures("isolated_config")

REPO = Path(__file__).resolve().parents[2]


def settings_with(*upstreams: dict, **sections: object) -> Settings:
    return Settings(upstreams=list(upstreams), **sections)


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ocrd.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.message


# --- settings -------------------------------------------------------------------------------------


def test_the_example_proxy_config_is_valid() -> None:
    settings = load_settings(REPO / "examples" / "ocrd-proxy.toml")
    assert [u.model for u in settings.upstreams] == [
        "rednote-hilab/dots.ocr", "Qwen/Qwen2-VL-2B-Instruct", "ibm-granite/granite-docling-258M"]
    assert settings.upstreams[0].url == "http://dots-ocr:8000/v1"


def test_upstream_fields_are_read_with_durations_and_a_trailing_slash_dropped(tmp_path: Path) -> None:
    path = tmp_path / "ocrd.toml"
    path.write_text('[[upstreams]]\nmodel = "acme/ocr"\nurl = "https://ocr.example.com/api/v1/"\n'
                    'api_key_env = "ACME_KEY"\ntimeout = "2m"\nserved_model_name = "ocr-large"\n')
    upstream = load_settings(path).upstreams[0]
    assert upstream.url == "https://ocr.example.com/api/v1"
    assert upstream.timeout == 120.0
    assert (upstream.api_key_env, upstream.remote_name) == ("ACME_KEY", "ocr-large")


@pytest.mark.parametrize(("entry", "key", "words"), [
    ('model = "a/b"\nurl = "ftp://host/v1"', "upstreams.0.url", "http:// or https://"),
    ('model = "a/b"\nurl = "http://host:8000"', "upstreams.0.url", "ending in /v1"),
    ('model = "a/b"\nurl = "http://host/v1"\napi_key_env = "MY-KEY"', "upstreams.0.api_key_env",
     "environment variable"),
    ('model = "a/b:x"\nurl = "http://host/v1"', "upstreams.0.model", "':'"),
    ('model = "a/b"\nurl = "http://host/v1"\ntimeout = "soon"', "upstreams.0.timeout", "duration"),
    ('model = "a/b"\nurl = "http://host/v1"\nport = 8000', "upstreams.0.port", "unknown key"),
    ('url = "http://host/v1"', "upstreams.0.model", "Field required"),
])
def test_a_bad_upstream_is_one_line_naming_its_key(tmp_path: Path, entry: str, key: str, words: str) -> None:
    message = config_error(tmp_path, f"[[upstreams]]\n{entry}\n")
    assert message.startswith(f"{key}: ") and words in message, message
    assert "\n" not in message


def test_two_upstreams_for_one_model_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[[upstreams]]\nmodel = "a/b"\nurl = "http://one/v1"\n'
                                     '[[upstreams]]\nmodel = "a/b"\nurl = "http://two/v1"\n')
    assert message.startswith("upstreams: ") and "'a/b' is configured twice" in message, message


def test_two_names_of_one_catalog_model_are_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[[upstreams]]\nmodel = "dots.ocr"\nurl = "http://one/v1"\n'
                                     '[[upstreams]]\nmodel = "rednote-hilab/dots.ocr"\n'
                                     'url = "http://two/v1"\n')
    assert "both name the model 'rednote-hilab/dots.ocr'" in message, message


# --- entries, directory, planner ------------------------------------------------------------------


def test_an_upstream_takes_over_the_catalog_model_it_names_by_alias() -> None:
    catalog = Catalog.load_default()
    upstream = UpstreamSettings(model="dots.ocr", url="http://dots:8000/v1")
    [entry] = upstream_entries([upstream], catalog)
    known = catalog.resolve("dots.ocr")
    assert entry.id == known.id and entry.aliases == known.aliases
    assert entry.presets == known.presets and entry.default_preset == known.default_preset
    assert entry.engines == (ENGINE,)
    assert "http://dots:8000/v1" in entry.description
    # The catalog's vLLM prompt wrapping goes with it (the upstream is a vLLM server).
    assert entry.prompt_wrap(ENGINE) == known.prompt_wrap("vllm")
    assert entry.engine_options[ENGINE]["remote_name"] == "dots.ocr"


def test_an_upstream_of_an_unknown_model_is_a_model_of_its_own() -> None:
    [entry] = upstream_entries([UpstreamSettings(model="acme/ocr", url="http://acme/v1")],
                               Catalog.load_default())
    assert (entry.id, entry.aliases, entry.presets, entry.engines) == ("acme/ocr", (), {}, (ENGINE,))


def test_the_directory_lists_upstreams_in_place_of_the_models_they_take_over(tmp_path: Path) -> None:
    settings = settings_with({"model": "rednote-hilab/dots.ocr", "url": "http://dots:8000/v1"},
                             {"model": "acme/ocr", "url": "http://acme/v1"},
                             cache={"hub_dir": tmp_path})  # an empty cache: nothing downloaded
    directory = ModelDirectory(Catalog.load_default(), settings)
    available = [entry.id for entry in directory.available()]
    # dots.ocr is not downloaded, yet servable: it is the upstream's, in the catalog's place.
    assert available == ["builtin/ppocr", *(["builtin/tesseract"] if "builtin/tesseract" in available
                                            else []), "rednote-hilab/dots.ocr", "acme/ocr"]
    assert directory.resolve("dots-ocr").engines == (ENGINE,)
    assert directory.engine_for(directory.wishes(directory.resolve("acme/ocr"))) == ENGINE


def test_an_upstream_decision_has_no_memory_and_names_the_url() -> None:
    [entry] = upstream_entries([UpstreamSettings(model="acme/ocr", url="http://acme/v1")],
                               Catalog.load_default())
    decision = plan(entry, None, Host())
    assert (decision.engine, decision.device, decision.estimated_bytes, decision.fits) == (
        ENGINE, "http://acme/v1", 0, True)
    assert "http://acme/v1" in decision.reasons[0] and "never evicted" in decision.reasons[0]
    assert summary(decision) == "upstream at http://acme/v1"


def test_the_runner_spec_takes_the_url_and_timeout_configured_now() -> None:
    catalog = Catalog.load_default()
    directory = ModelDirectory(catalog, settings_with({"model": "acme/ocr", "url": "http://old/v1"}))
    entry = directory.resolve("acme/ocr")
    decision = plan(entry, None, Host())
    directory.apply_settings(settings_with({"model": "acme/ocr", "url": "http://new/v1", "timeout": 7}))
    spec = directory.runner_spec(directory.wishes(entry), decision)  # the slot's entry is the old one
    assert (spec.engine, spec.device, spec.options["url"], spec.options["timeout"]) == (
        ENGINE, "http://new/v1", "http://new/v1", 7.0)
    directory.apply_settings(settings_with())
    with pytest.raises(ModelNotFound):
        directory.resolve("acme/ocr")


def test_without_a_timeout_an_upstream_gets_the_http_request_timeout() -> None:
    directory = ModelDirectory(Catalog.load_default(), settings_with(
        {"model": "acme/ocr", "url": "http://acme/v1"}, http={"request_timeout": "90s"}))
    entry = directory.resolve("acme/ocr")
    assert directory.runner_spec(directory.wishes(entry), plan(entry, None, Host())).options["timeout"] == 90.0


# --- UpstreamRunner -------------------------------------------------------------------------------


def upstream_runner(url: str, *, served: str = "org/fake-upstream", key_env: str | None = None,
                    environ: dict[str, str] | None = None) -> UpstreamRunner:
    [entry] = upstream_entries([UpstreamSettings(model="acme/ocr", url=url, served_model_name=served,
                                                 api_key_env=key_env)], Catalog.load_default())
    spec = RunnerSpec(model=entry, engine=ENGINE, device=url, options=dict(entry.engine_options[ENGINE]))
    return UpstreamRunner(spec, environ=environ or {})


async def start(runner: UpstreamRunner) -> None:
    await runner.start(progress=lambda step: None, on_exit=lambda reason: None)


def test_the_forwarded_request_carries_the_servers_name_and_no_ocrd_field() -> None:
    runner = upstream_runner("http://acme/v1", served="ocr-large")
    body = {"model": "acme/ocr", "messages": [], "ocrd": {"preset": "x"}, "temperature": 0}
    assert runner.request_body(body) == {"model": "ocr-large", "messages": [], "temperature": 0}


async def test_a_server_that_lists_the_model_loads() -> None:
    with FakeUpstream("org/fake-upstream") as fake:
        runner = upstream_runner(fake.url)
        await start(runner)
        response = await runner.client().get("/v1/models")
        assert response.status_code == 200 and runner.pid is None and runner.memory_bytes == 0
        await runner.stop(1.0)


async def test_a_server_that_does_not_list_the_model_fails_the_load_listing_what_it_serves() -> None:
    with FakeUpstream("org/other", "org/third") as fake:
        with pytest.raises(ModelLoadFailed, match=r"does not serve 'org/fake-upstream' \(it lists: "
                                                  r"org/other, org/third\)"):
            await start(upstream_runner(fake.url))


async def test_a_refused_connection_fails_the_load_saying_it_cannot_be_reached() -> None:
    fake = FakeUpstream()
    fake.stop()
    with pytest.raises(ModelLoadFailed, match="cannot be reached .*refused"):
        await start(upstream_runner(fake.url))


async def test_an_unknown_host_fails_the_load_saying_it_cannot_be_reached() -> None:
    with pytest.raises(ModelLoadFailed, match=r"http://no-such-host\.invalid/v1 cannot be reached"):
        await start(upstream_runner("http://no-such-host.invalid/v1"))


async def test_a_wrong_key_fails_the_load_naming_the_variable() -> None:
    with FakeUpstream(api_key="right") as fake:
        runner = upstream_runner(fake.url, key_env="FAKE_KEY", environ={"FAKE_KEY": "wrong"})
        with pytest.raises(ModelLoadFailed, match=r"refused ocrd's credentials \(HTTP 401, the key "
                                                  r"in \$FAKE_KEY\)"):
            await start(runner)
        await start(upstream_runner(fake.url, key_env="FAKE_KEY", environ={"FAKE_KEY": "right"}))


async def test_an_unset_key_variable_fails_the_load_naming_it() -> None:
    with FakeUpstream(api_key="right") as fake:
        with pytest.raises(ModelLoadFailed, match=r"\$FAKE_KEY \(api_key_env\), which is not set"):
            await start(upstream_runner(fake.url, key_env="FAKE_KEY"))


async def test_a_server_that_is_not_openai_fails_the_load() -> None:
    with FakeUpstream() as fake:
        # /v1 is required, so a base URL one level off lands on a route the server lacks.
        runner = upstream_runner(fake.url.replace("/v1", "/x/v1"))
        with pytest.raises(ModelLoadFailed, match="answered GET /models with HTTP 404"):
            await start(runner)


# --- the scheduler --------------------------------------------------------------------------------


async def test_an_upstream_neither_counts_toward_nor_evicts_for_max_loaded_models() -> None:
    with FakeUpstream("acme/ocr") as fake:
        settings = settings_with({"model": "acme/ocr", "url": fake.url},
                                 scheduler={"max_loaded_models": 1})
        local = FakeRunnerFactory()
        scheduler = Scheduler(settings, ModelDirectory(Catalog.load_default(), settings),
                              lambda spec: UpstreamRunner(spec) if spec.engine == ENGINE else local(spec))
        await scheduler.load("ppocr")
        upstream = await scheduler.load("acme/ocr")
        assert (upstream.state, upstream.engine, upstream.device) == (ModelState.READY, ENGINE, fake.url)
        assert scheduler.info("ppocr").state == ModelState.READY
        await scheduler.unload("ppocr")
        await scheduler.load("ppocr")  # the upstream does not take the one place either
        assert scheduler.info("acme/ocr").state == ModelState.READY
        await scheduler.shutdown()


async def test_a_model_taken_over_after_a_reload_is_served_by_its_upstream() -> None:
    with FakeUpstream("builtin/ppocr") as fake:
        settings = settings_with()
        scheduler = Scheduler(settings, ModelDirectory(Catalog.load_default(), settings),
                              lambda spec: UpstreamRunner(spec) if spec.engine == ENGINE else None)
        assert scheduler.info("ppocr").engine == "builtin"
        scheduler.apply_settings(settings_with({"model": "ppocr", "url": fake.url,
                                                "served_model_name": "builtin/ppocr"}))
        assert scheduler.info("ppocr").engine == ENGINE
        assert (await scheduler.load("ppocr")).device == fake.url
        await scheduler.shutdown()
