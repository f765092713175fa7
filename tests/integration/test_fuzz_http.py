"""Schemathesis fuzzes a real ``ocrd serve`` against ocrd's own OpenAPI document.

The document is the daemon's ``GET /openapi.json`` (``ocrd.http.openapi``). For every operation,
schemathesis generates requests that fit the document (positive) and requests that break it
(negative: wrong types, missing fields, out-of-range numbers); every answer must be no 5xx, a
status the document lists, with its content type, and a body that matches the documented schema
(OpenAI's error envelope for every 4xx), and every negative request must be refused with a 4xx.

Bounded and reproducible: a fixed number of examples per operation, ``derandomize=True`` (the
same requests on every run, so CI failures reproduce), no example database, no deadline (a
shared CI machine is slow at times; run time is bounded by the example count, not by the clock).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.daemon import running_daemon

EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
TAKING_A_BODY = [("/v1/chat/completions", "POST"), ("/v1/ocr", "POST"), ("/models/load", "POST"),
                 ("/models/unload", "POST"), ("/v1/files", "POST"), ("/v1/batches", "POST")]
OPERATIONS = [*TAKING_A_BODY, ("/v1/models/{model_id}", "GET"), ("/v1/models", "GET"),
              ("/health", "GET"), ("/health/ready", "GET"), ("/metrics", "GET"), ("/v1/files", "GET"),
              ("/v1/files/{file_id}", "GET"), ("/v1/files/{file_id}", "DELETE"),
              ("/v1/files/{file_id}/content", "GET"), ("/v1/batches", "GET"),
              ("/v1/batches/{batch_id}", "GET"), ("/v1/batches/{batch_id}/cancel", "POST")]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Negative cases need a body to break: operations without one have none, and schemathesis finds
# no URL-safe string that breaks the model_id pattern (positive cases still send "a..b", "-x"...;
# test_daemon_hostile sends the hostile ids).
CASES = [(*op, POSITIVE) for op in OPERATIONS] + [(*op, NEGATIVE) for op in TAKING_A_BODY]


@pytest.fixture(scope="module")
def daemon():
    # Small limits so that generated bodies can reach them; no model is loaded by a fuzzed request
    # unless schemathesis happens on a real name, which is then loaded for real.
    limits = {"max_body_bytes": 200_000, "max_images_per_request": 2}
    with running_daemon({"limits": limits}) as running:
        yield running


@pytest.fixture(scope="module")
def schema(daemon):
    return schemathesis.openapi.from_url(daemon.base_url + "/openapi.json")


def test_the_document_describes_every_route_ocrd_serves(schema):
    documented = {(path, method.upper()) for path, item in schema.raw_schema["paths"].items()
                  for method in item}
    assert documented == set(OPERATIONS)
    # Bodies are documented from the models the routes validate with.
    body = schema.raw_schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    for operation in schema.raw_schema["paths"].values():
        for answers in operation.values():
            assert "422" not in answers["responses"]  # ocrd answers validation errors with 400


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(daemon, schema, path, method, mode):
    strategy = schema[path][method].as_strategy(generation_mode=mode)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data):
        case = data.draw(strategy)
        response = case.call(base_url=daemon.base_url, timeout=120)
        case.validate_response(response, checks=CHECKS)

    fuzz()
    assert daemon.process.poll() is None  # still running
