"""JMESPath conditions, field selection and JSON parsing over hostile health payloads."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.probing.conditions import (
    InvalidJSON,
    failed_conditions,
    parse_json,
    search,
    select_fields,
)


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        pytest.param(None, False, id="null"),
        pytest.param(False, False, id="false"),
        pytest.param("", False, id="empty-string"),
        pytest.param([], False, id="empty-list"),
        pytest.param({}, False, id="empty-object"),
        pytest.param(True, True, id="true"),
        pytest.param(0, True, id="zero"),
        pytest.param(0.0, True, id="zero-float"),
        pytest.param(1, True, id="one"),
        pytest.param("false", True, id="string-false"),
        pytest.param([None], True, id="list-of-null"),
        pytest.param({"a": None}, True, id="object-with-null"),
    ],
)
def test_truthiness(value: Any, truthy: bool) -> None:
    """A bare field is true unless JMESPath calls it false: null, false, or empty (0 is true)."""
    assert failed_conditions(["v"], {"v": value}) == ([] if truthy else ["v"])


DOCUMENT = {"status": "ok", "errorRate": 0.2, "alerts": [], "latency": float("inf")}


@pytest.mark.parametrize(
    ("conditions", "failed"),
    [
        pytest.param([], [], id="none"),
        pytest.param(["status == 'ok'"], [], id="true"),
        pytest.param(
            ["status == 'ok'", "errorRate < `0.05`", "length(alerts) == `0`", "missing"],
            ["errorRate < `0.05`", "missing"],
            id="only-false-ones-in-order",
        ),
        pytest.param(["length(errorRate) > `0`"], ["length(errorRate) > `0`"], id="type-error"),
        pytest.param(["ceil(latency) < `5`"], ["ceil(latency) < `5`"], id="ceil-of-infinity"),
    ],
)
def test_failed_conditions(conditions: list[str], failed: list[str]) -> None:
    """The false conditions, in config order; one that cannot evaluate counts as false."""
    assert failed_conditions(conditions, DOCUMENT) == failed


@pytest.mark.parametrize(
    ("expression", "document", "found"),
    [
        pytest.param("a.b", {"a": {"b": 1}}, 1, id="path"),
        pytest.param("a.b", {"a": "text"}, None, id="path-through-scalar"),
        pytest.param("length(a)", {"a": 5}, None, id="type-error"),
        pytest.param("floor(a)", {"a": float("nan")}, None, id="floor-of-nan"),
        pytest.param("ceil(a)", {"a": float("-inf")}, None, id="ceil-of-infinity"),
        pytest.param("sort(a)", {"a": [1, "x"]}, None, id="mixed-sort"),
    ],
)
def test_search_returns_none_when_evaluation_fails(
    expression: str, document: Any, found: Any
) -> None:
    """Evaluation faults on odd data give None, never an exception."""
    assert search(expression, document) == found


@pytest.mark.parametrize(
    ("expressions", "document", "selected"),
    [
        pytest.param(
            ["status", "version", "missing"],
            {"status": "ok", "version": "1.2"},
            {"status": "ok", "version": "1.2"},
            id="found-ones-only",
        ),
        pytest.param(
            ["errorRate", "degraded", "note"],
            {"errorRate": 0, "degraded": False, "note": ""},
            {"errorRate": 0, "degraded": False, "note": ""},
            id="falsy-values-kept",
        ),
        pytest.param(["[0].status"], [{"status": "ok"}], {"[0].status": "ok"}, id="list-document"),
        pytest.param(["status"], "status", {}, id="string-document"),
        pytest.param(["status"], 5, {}, id="number-document"),
        pytest.param(["status"], None, {}, id="null-document"),
    ],
)
def test_select_fields(expressions: list[str], document: Any, selected: dict[str, Any]) -> None:
    """Fields are the expressions that found something, keyed by expression."""
    assert select_fields(expressions, document) == selected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 100_000, id="long-string"),
        pytest.param(list(range(10_000)), id="long-list"),
        pytest.param({f"k{i}": i for i in range(5_000)}, id="wide-object"),
        pytest.param([[[["deep"] * 200]]], id="nested"),
    ],
)
def test_select_fields_bounds_huge_values(value: Any) -> None:
    """A huge selected value becomes a JSON text cut to 500 characters."""
    (bounded,) = select_fields(["alerts"], {"alerts": value}).values()

    assert isinstance(bounded, str)
    assert len(bounded) == 500
    assert bounded.endswith("...")


@pytest.mark.parametrize(
    ("body", "document"),
    [
        pytest.param(b'{"status": "ok"}', {"status": "ok"}, id="object"),
        pytest.param(b"[1, 2]", [1, 2], id="array"),
        pytest.param(b'"text"', "text", id="string"),
        pytest.param(b"\xef\xbb\xbf{}", {}, id="utf8-bom"),
        pytest.param('{"a": "é"}'.encode("utf-16"), {"a": "é"}, id="utf16"),
    ],
)
def test_parse_json(body: bytes, document: Any) -> None:
    """JSON bodies decode in any encoding json.loads detects."""
    assert parse_json(body) == document


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"<html>down</html>", id="html"),
        pytest.param(b'{"a": 1', id="truncated"),
        pytest.param(b'{"a": "\xff"}', id="invalid-utf8"),
        pytest.param(b"[" * 100_000, id="deep-arrays"),
        pytest.param(b'{"a":' * 100_000, id="deep-objects"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-but-closed"),
        pytest.param(b"1" * 5_000, id="integer-beyond-str-digits-limit"),
    ],
)
def test_parse_json_rejects_with_invalid_json(body: bytes) -> None:
    """Anything but JSON, hostile depth included, is InvalidJSON with a one-line message."""
    with pytest.raises(InvalidJSON) as caught:
        parse_json(body)

    message = str(caught.value)
    assert message.startswith("body is not JSON: ")
    assert "\n" not in message
    assert len(message) < 200


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_names = st.sampled_from(["status", "version", "errorRate", "alerts", "a", "x"]) | st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True
)


@given(name=_names, document=_json | st.dictionaries(_names, _json, max_size=4))
def test_a_bare_name_finds_what_jmespath_finds(name: str, document: Any) -> None:
    """The lookup a bare name takes (no interpreter built per call) is JMESPath's own
    answer, on objects that have the member, objects that lack it, and non-objects;
    quoted, the name is the same field."""
    expected = jmespath.search(name, document)
    assert search(name, document) == expected
    assert search(f'"{name}"', document) == expected
    assert search(f"{name}.x", document) == jmespath.search(f"{name}.x", document)
