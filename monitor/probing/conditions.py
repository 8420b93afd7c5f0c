"""JMESPath conditions and field selection over a JSON health payload."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.parser


class InvalidJSON(ValueError):
    """The body is not JSON (or is nested too deeply to parse safely)."""


def parse_json(body: bytes) -> Any:
    """The decoded JSON document; :class:`InvalidJSON` for anything else."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting depth
        raise InvalidJSON(f"body is not JSON: {_first_line(exc)}") from None


@functools.lru_cache(maxsize=1024)
def compiled(expression: str) -> Callable[[Any], Any]:
    """An expression's search; config validation has already proven it compiles.

    A bare name (``status``, ``version``: most of the fields a result keeps) is the
    lookup JMESPath's interpreter makes for it, without building an interpreter per
    call, which made the fields a tenth of a probe's time.
    """
    parsed = jmespath.compile(expression)
    if parsed.parsed["type"] == "field":
        return functools.partial(_field, parsed.parsed["value"])
    return parsed.search


def _field(name: str, document: Any) -> Any:
    # JMESPath's field: the object's member, or null on anything that is not an object
    return document.get(name) if isinstance(document, dict) else None


def search(expression: str, document: Any) -> Any:
    """The value of ``expression`` on ``document``, or None when evaluation fails."""
    try:
        return compiled(expression)(document)
    except (
        jmespath.exceptions.JMESPathError,
        RecursionError,
        TypeError,
        # ceil()/floor() of the 1e999 (inf) or NaN that json.loads accepts: a hostile
        # body must make a condition false, not escape the probe as an exception.
        ValueError,
        ArithmeticError,
    ):
        return None


def failed_conditions(conditions: Iterable[str], document: Any) -> list[str]:
    """The conditions that are not truthy on ``document`` (JMESPath truthiness)."""
    return [c for c in conditions if not _truthy(search(c, document))]


def _truthy(value: Any) -> bool:
    # JMESPath's notion of false: null, false, empty string/list/object. Numbers are
    # all true, 0 included: an ``in`` test would wrongly match 0 == False.
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def select_fields(expressions: Iterable[str], document: Any) -> dict[str, Any]:
    """The expressions that found something, with small JSON-safe values."""
    if not isinstance(document, Mapping | list):
        return {}
    selected: dict[str, Any] = {}
    for expression in expressions:
        value = search(expression, document)
        if value is not None:
            selected[expression] = _bounded(value)
    return selected


def _bounded(value: Any, limit: int = 500) -> Any:
    """Keep a selected value small: a response must not blow up an issue or the store."""
    text = json.dumps(value, default=str)
    if len(text) <= limit:
        return value
    return text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
