"""ocrd.core.engines: one table of what differs between engines, and the names users may write.

The names the configuration, HTTP and gRPC accept are checked against the table here, so that an
engine added to (or removed from) the table cannot leave one of them behind. Every engine of the
table is planned, probed and given a runner by the real code: a new engine without its planner
attempts, probe or runner builder fails here.
"""

from __future__ import annotations

from typing import get_args

import pytest

from ocrd.catalog import CatalogEntry
from ocrd.catalog.catalog import ENGINES as CATALOG_ENGINES
from ocrd.config.settings import Engine, ModelSettings, PlannerSettings, Quantization, Settings
from ocrd.config.upstreams import ENGINE as UPSTREAM
from ocrd.core.engines import (
    ENGINES,
    QUANTIZATIONS,
    SELECTABLE,
    engine_kind,
    engine_wish,
    quantization_wish,
    runner_factory,
)
from ocrd.errors import InvalidRequest
from ocrd.http.admin import LoadModelRequest
from ocrd.planning.availability import Availability, engine_availability
from ocrd.planning.planner import Host, plan
from ocrd.runners.base import RunnerSpec
from ocrd.runners.vllm.docker_host import DockerStatus
from tests.support.fake_runner import FakeRunner, StartPlan

DOCKER = DockerStatus(True, version="20.10.24", runtimes=("runc",))


def literal_choices(annotation: object) -> tuple[str, ...]:
    """The strings of a ``Literal[...]`` (inside ``X | None`` too)."""
    choices: list[str] = []
    for arg in get_args(annotation):
        choices += [arg] if isinstance(arg, str) else list(literal_choices(arg))
    return tuple(choices)


def test_the_engines_users_name_are_the_tables_selectable_ones_everywhere():
    assert SELECTABLE == ("builtin", "transformers", "vllm")
    assert literal_choices(Engine) == SELECTABLE
    assert literal_choices(ModelSettings.model_fields["engine"].annotation) == SELECTABLE
    assert literal_choices(PlannerSettings.model_fields["engine"].annotation) == ("auto", *SELECTABLE)
    assert literal_choices(LoadModelRequest.model_fields["engine"].annotation) == SELECTABLE
    assert CATALOG_ENGINES == SELECTABLE


def test_the_quantizations_users_name_are_the_tables():
    assert literal_choices(Quantization) == ("auto", *QUANTIZATIONS)
    assert literal_choices(LoadModelRequest.model_fields["quantization"].annotation) == ("auto", *QUANTIZATIONS)


def test_an_upstream_is_an_engine_of_the_table_that_no_user_names():
    assert UPSTREAM in ENGINES and UPSTREAM not in SELECTABLE
    kind = engine_kind(UPSTREAM)
    assert not kind.runs_here and not kind.uses_gpu and not kind.hf_cache


@pytest.mark.parametrize("no_wish", ["auto", "", None])
def test_auto_empty_and_none_are_no_wish(no_wish):
    assert engine_wish(no_wish) is None
    assert quantization_wish(no_wish) is None


def test_a_named_engine_or_quantization_is_the_wish():
    assert [engine_wish(name) for name in SELECTABLE] == list(SELECTABLE)
    assert quantization_wish("none") == "none" and quantization_wish("4bit") == "4bit"


@pytest.mark.parametrize("name", ["onnx", "upstream", "VLLM"])
def test_an_engine_users_cannot_name_is_a_400_listing_the_choices(name):
    with pytest.raises(InvalidRequest) as caught:
        engine_wish(name)
    assert caught.value.message == f"unknown engine {name!r}; use one of: builtin, transformers, vllm"
    assert caught.value.param == "engine"


def test_an_unknown_quantization_is_a_400_listing_the_choices():
    with pytest.raises(InvalidRequest) as caught:
        quantization_wish("2bit")
    assert caught.value.message == "unknown quantization '2bit'; use one of: auto, none, 8bit, 4bit"
    assert caught.value.param == "quantization"


def test_runners_of_builtin_and_transformers_serve_one_request_at_a_time_vllm_and_upstreams_many():
    settings = Settings(vllm={"max_concurrent_requests": 12})
    assert {name: kind.concurrency(settings) for name, kind in ENGINES.items()} == {
        "builtin": 1, "transformers": 1, "vllm": 12, "upstream": 64}


def test_only_vllm_servers_are_restarted_after_a_crash_as_its_settings_say():
    settings = Settings(vllm={"restart_attempts": 3, "restart_backoff": "5s"})
    policies = {name: kind.restarts(settings) for name, kind in ENGINES.items()}
    assert (policies["vllm"].attempts, policies["vllm"].backoff) == (3, 5.0)
    assert policies["vllm"].setting == "vllm.restart_attempts"
    assert all(policy.attempts == 0 for name, policy in policies.items() if name != "vllm")


def test_only_transformers_quantizes_and_the_hf_cache_engines_are_those_that_may_use_a_gpu():
    assert [name for name, kind in ENGINES.items() if kind.quantizes] == ["transformers"]
    assert [name for name, kind in ENGINES.items() if kind.hf_cache] == ["transformers", "vllm"]
    assert [name for name, kind in ENGINES.items() if kind.uses_gpu] == ["transformers", "vllm"]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_of_the_table_is_planned(engine):
    entry = CatalogEntry(f"org/{engine}-model", engines=(engine,),
                         engine_options={"upstream": {"url": "http://up/v1"}} if engine == UPSTREAM else {})
    host = Host(transformers=Availability(True), vllm=Availability(True), vllm_device="cpu")
    decision = plan(entry, None, host)
    assert decision.fits and decision.engine == engine, decision.reasons


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_engine_of_the_table_has_an_availability_answer(engine):
    availability = engine_availability(engine, Settings(vllm={"device": "cpu"}), lambda: DOCKER)
    assert availability.available or availability.reason
    if not engine_kind(engine).optional:
        assert availability.available


def test_the_runner_factory_builds_each_engines_runner_with_its_kinds_builder():
    built: list[tuple[str, str]] = []

    def builder(kind: str):
        def build(spec: RunnerSpec) -> FakeRunner:
            built.append((kind, spec.engine))
            return FakeRunner(spec, StartPlan(), fake_pid=1)
        return build

    make = runner_factory({kind: builder(kind) for kind in ("process", "vllm", "upstream")})
    for engine in ENGINES:
        make(RunnerSpec(model=CatalogEntry("org/m", engines=(engine,)), engine=engine))
    assert built == [("process", "builtin"), ("process", "transformers"), ("vllm", "vllm"),
                     ("upstream", "upstream")]


def test_a_runner_factory_missing_a_kinds_builder_is_refused_at_once():
    with pytest.raises(ValueError, match="no runner builder for \\['upstream'\\]"):
        runner_factory({"process": print, "vllm": print})
