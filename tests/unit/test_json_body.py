"""ocrd.http.json_body: a body's values are counted on its bytes, exactly, before it is parsed.

The counting must agree with the parsed value on every body (strings full of commas, brackets,
quotes and backslashes included), so the limits refuse exactly what is over them: checked here
against a reference count of the parsed value, on hand-picked and generated bodies.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocrd.config.settings import Settings
from ocrd.errors import InvalidRequest, PayloadTooLarge
from ocrd.http.json_body import JsonLimits, parse_json_body

CHAT = b'"model": "ppocr", "messages": [{"role": "user", "content": "hi"}]'


def shape(value: Any, depth: int = 1) -> tuple[int, int, int]:
    """(most items in one container, values in all, depth) of a parsed value: the reference."""
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return 0, 0, depth - 1
    most, total, deepest = len(children), len(children), depth
    for child in children:
        child_most, child_total, child_depth = shape(child, depth + 1)
        most, total, deepest = max(most, child_most), total + child_total, max(deepest, child_depth)
    return most, total, deepest


def refusal(body: bytes, limits: JsonLimits) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_json_body(body, limits)
    return caught.value


def test_the_defaults_are_the_settings_defaults():
    assert JsonLimits.from_settings(Settings().limits) == JsonLimits()
    assert (JsonLimits().max_items, JsonLimits().max_values) == (10_000, 100_000)


def test_an_array_of_exactly_max_items_passes_and_one_more_is_refused_with_413():
    limits = JsonLimits(max_items=1000)
    fits = b"{" + CHAT + b', "x": [' + b",".join([b"{}"] * 1000) + b"]}"
    assert len(parse_json_body(fits, limits)["x"]) == 1000
    error = refusal(b"{" + CHAT + b', "x": [' + b",".join([b"{}"] * 1001) + b"]}", limits)
    assert type(error) is PayloadTooLarge and error.http_status == 413
    assert error.message == ("request body has an array or object with more than 1000 items "
                             "(limits.max_json_items)")


def test_an_object_with_100k_keys_is_refused_by_default():
    keys = b",".join(b'"k%d": 1' % number for number in range(100_000))
    error = refusal(b"{" + CHAT + b', "x": {' + keys + b"}}", JsonLimits())
    assert type(error) is PayloadTooLarge and "limits.max_json_items" in error.message


def test_values_are_counted_across_containers_each_under_the_item_limit():
    limits = JsonLimits(max_items=100, max_values=1000)
    # {"x": [[1 x 9] x 99]}: 99 + 99 * 9 + 1 ("x") = 991 values.
    inner = b"[" + b",".join([b"1"] * 9) + b"]"
    fits = b'{"x": [' + b",".join([inner] * 99) + b"]}"
    assert shape(json.loads(fits))[1] == 991
    assert parse_json_body(fits, limits)["x"][0] == [1] * 9
    too_many = b'{"x": [' + b",".join([inner] * 99) + b'], "y": [' + b",".join([b"1"] * 9) + b"]}"
    error = refusal(too_many, limits)
    assert type(error) is PayloadTooLarge
    assert error.message == "request body has more than 1000 values in all (limits.max_json_values)"


def test_commas_brackets_and_quotes_inside_strings_are_not_values():
    text = json.dumps('a, [b], {c}, "d", \\", \\\\", \\\\\\"' * 20_000)
    body = b'{"text": ' + text.encode() + b', "list": [1, 2, 3]}'
    assert parse_json_body(body, JsonLimits(max_items=3, max_values=5))["list"] == [1, 2, 3]
    error = refusal(body, JsonLimits(max_items=2, max_values=5))
    assert "limits.max_json_items" in error.message


def test_empty_arrays_and_objects_are_not_values_of_their_own():
    body = b'{"x": [[], {}, [ ], { }, [[]]]}'  # 1 + 5 + 1 values: "x", its five items, the [] in [[]]
    assert parse_json_body(body, JsonLimits(max_items=5, max_values=7))["x"][4] == [[]]
    assert type(refusal(body, JsonLimits(max_items=5, max_values=6))) is PayloadTooLarge


def test_containers_a_truncated_body_never_closes_count_too():
    # json.loads would build every item of these before finding the end missing.
    row = b"[" + b",".join([b"1"] * 50)
    error = refusal(b'{"x": ' + row * 20, JsonLimits(max_items=100, max_values=500))
    assert type(error) is PayloadTooLarge and "limits.max_json_values" in error.message


def test_deep_nesting_found_while_counting_is_refused_as_too_deep():
    body = b'{"x": ' + b"[1," * 20_000 + b"]" * 20_000 + b"}"
    error = refusal(body, JsonLimits(max_depth=64))
    assert type(error) is InvalidRequest and "more than 64 levels" in error.message


@pytest.mark.parametrize(
    ("name", "body", "status", "says"),
    [
        ("20 million empty objects", b"{" + CHAT + b', "x": [' + b"{}," * 20_000_000 + b"{}]}",
         413, "limits.max_json_items"),
        ("10 million strings", b"{" + CHAT + b', "x": [' + b'"a",' * 10_000_000 + b'"a"]}',
         413, "limits.max_json_items"),
        ("a 60 MB number", b"{" + CHAT + b', "x": ' + b"1" * 60_000_000 + b"}",
         400, "not valid JSON"),
    ],
)
def test_the_attack_bodies_of_the_hardening_issue_are_refused(name, body, status, says):
    error = refusal(body, JsonLimits())
    assert error.http_status == status, name
    assert says in error.message, name


def test_a_60_mb_image_body_with_few_values_passes():
    url = "data:image/png;base64," + "A" * 60_000_000
    body = json.dumps({"model": "ppocr", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}).encode()
    assert parse_json_body(body)["messages"][0]["content"][0]["image_url"]["url"] == url


# Strings drawn from the characters that matter to the counting, so escapes pile up.
_TRICKY_TEXT = st.text(alphabet=st.sampled_from('ab,[]{}:"\\ \n\u00e9\u4e2d'), max_size=12)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | _TRICKY_TEXT,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(_TRICKY_TEXT, children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=100, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(root=st.dictionaries(_TRICKY_TEXT, _VALUES, max_size=6), ascii_only=st.booleans(),
       indent=st.sampled_from([None, 0, 2]))
def test_the_count_on_the_bytes_agrees_with_the_parsed_value(root, ascii_only, indent):
    body = json.dumps(root, ensure_ascii=ascii_only, indent=indent).encode()
    most, total, depth = shape(root)
    exact = JsonLimits(max_depth=max(depth, 1), max_items=max(most, 1), max_values=max(total, 1))
    assert parse_json_body(body, exact) == root
    if most >= 2:
        error = refusal(body, JsonLimits(max_depth=64, max_items=most - 1, max_values=10**9))
        assert "limits.max_json_items" in error.message
    if total >= 2:
        error = refusal(body, JsonLimits(max_depth=64, max_items=10**9, max_values=total - 1))
        assert "limits.max_json_values" in error.message
    if depth >= 2:
        error = refusal(body, JsonLimits(max_depth=depth - 1, max_items=10**9, max_values=10**9))
        assert "limits.max_json_depth" in error.message
