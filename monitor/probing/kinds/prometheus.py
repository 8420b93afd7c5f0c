"""``type = "prometheus"``: an instant query, its value against the check's bounds.

The query runs through Prometheus's HTTP API (``GET /api/v1/query``), so the
same check works against a self-hosted server and against Fly's managed
Prometheus (``url`` = ``https://api.fly.io/prometheus/<org>``, a bearer token
from ``token_env``). The answer must be a scalar or an instant vector; every
sample of a vector is judged and the worst one decides, so "any instance above
5 %" needs no ``max()`` in the query.

A sample whose value is NaN (an error rate of 0/0: no traffic) has no value;
when no sample has one, ``on_empty`` decides: ``up``, ``down`` (reason
``empty``) or ``unknown`` (the result neither fails nor recovers the target).
When Prometheus cannot answer (unreachable, a refused query, a broken answer)
the result is unknown with the fault's reason, or down with ``on_error = "down"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.config import CheckConfig, TargetConfig, format_duration
from monitor.probing.conditions import InvalidJSON, parse_json
from monitor.probing.judge import EXCERPT_CHARS, excerpt, one_line
from monitor.probing.kinds.base import (
    TRANSPORT_REASONS,
    Answer,
    Request,
    bearer,
    fault_outcome,
)
from monitor.probing.results import CheckResult, Outcome, Reason

QUERY_PATH = "/api/v1/query"
QUERY_CHARS = 120  # of the query in a detail line (the fields keep it whole)
_BOUND_WORDS = {"max": "above", "degraded_max": "above", "min": "below", "degraded_min": "below"}
_EMPTY = {"up": Outcome.UP, "down": Outcome.DOWN, "unknown": Outcome.UNKNOWN}


class PrometheusError(ValueError):
    """An answer that is not what Prometheus's API promises, or a refusal."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' value at the query's time."""

    labels: Mapping[str, str]
    value: float


class PrometheusKind:
    """An instant query compared with ``max``, ``min``, ``degraded_max``, ``degraded_min``."""

    reasons = TRANSPORT_REASONS | {
        Reason.STATUS,
        Reason.INVALID_JSON,
        Reason.QUERY,
        Reason.EMPTY,
        Reason.THRESHOLD,
    }

    def request(self, target: TargetConfig, check: CheckConfig, timeout_s: float) -> Request:
        """``GET <url>/api/v1/query?query=...``; Prometheus gives up when we do."""
        assert check.url is not None  # the schema requires both
        assert check.query is not None
        # whole milliseconds: Prometheus's durations have no fractions ("1.5s" is a 400)
        params = [("query", check.query), ("timeout", f"{max(1, round(timeout_s * 1000))}ms")]
        return Request(
            method="GET", url=check.url + QUERY_PATH, params=params, headers=bearer(check)
        )

    def judge(self, check: CheckConfig, answer: Answer) -> CheckResult:
        """The worst sample against the bounds; a refusal, a broken answer or no sample
        classified (``query``, ``status``, ``invalid_json``, ``empty``)."""
        query = check.query or ""
        if answer.truncated:
            return answer.result(
                check, fault_outcome(check), Reason.TOO_LARGE, "answer larger than the read cap"
            )
        try:
            samples = parse_answer(answer.status, answer.body, answer.masked)
        except PrometheusError as exc:
            return answer.result(
                check,
                fault_outcome(check),
                exc.reason,
                one_line(f"{exc.detail}; query: {query}"),
                body_excerpt=answer.excerpt(),
                fields={"query": query},
            )
        known = [s for s in samples if not math.isnan(s.value)]
        if not known:
            outcome = _EMPTY[check.on_empty]
            what = "no sample" if not samples else "no value (NaN)"
            return answer.result(
                check,
                outcome,
                Reason.OK if outcome is Outcome.UP else Reason.EMPTY,
                one_line(f"{what}, on_empty = {check.on_empty}; query: {query}"),
                fields={"query": query},
            )
        graded = [(grade(check, s.value), s) for s in known]
        (outcome, bound), worst = max(graded, key=lambda g: _badness(check, g[0][0], g[1].value))
        value = format_value(worst.value, check.unit)
        limits = ", ".join(
            f"{key} {format_value(v, check.unit)}" for key, v in check.thresholds.items()
        )
        if bound is None:
            said = f"{value} ({limits})"
        else:
            bound_value = format_value(check.thresholds[bound], check.unit)
            said = f"{value}, {_BOUND_WORDS[bound]} {bound} {bound_value}"
        if len(known) > 1:
            said += f" (worst of {len(known)} series: {_labels(worst.labels)})"
        fields: dict[str, Any] = {
            "value": worst.value,
            "threshold": limits,
            "query": query,
        }
        if worst.labels:
            fields["labels"] = _labels(worst.labels)
        return answer.result(
            check,
            outcome,
            Reason.OK if outcome is Outcome.UP else Reason.THRESHOLD,
            one_line(f"{said}; query: {_short(query)}"),
            fields=fields,
        )


def parse_answer(status: int, body: bytes, masked: Callable[[str], str] = str) -> list[Sample]:
    """The samples of an instant query's answer; :class:`PrometheusError` otherwise, its
    detail quoting the answer through ``masked`` (before it is cut to length)."""
    try:
        document = parse_json(body)
    except InvalidJSON:
        document = None
    if status != 200 or not isinstance(document, dict) or document.get("status") != "success":
        raise _refusal(status, document, body, masked)
    data = document.get("data")
    if not isinstance(data, dict):
        raise PrometheusError(Reason.INVALID_JSON, "not a Prometheus answer: no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [Sample({}, _value(result))]
    if kind == "vector" and isinstance(result, list):
        return [_sample(item) for item in result]
    if kind in ("matrix", "string"):
        raise PrometheusError(
            Reason.QUERY,
            f"the query returns a {kind}: it must return an instant vector or a scalar",
        )
    raise PrometheusError(Reason.INVALID_JSON, f"not a Prometheus answer: result type {kind!r}")


def _refusal(
    status: int, document: Any, body: bytes, masked: Callable[[str], str]
) -> PrometheusError:
    if isinstance(document, dict) and document.get("status") == "error":
        said = masked(f"{document.get('errorType', 'error')}: {document.get('error', '')}")
    else:
        said = masked(excerpt(body, chars=EXCERPT_CHARS * 4))[:200] or "no body"
    if 400 <= status < 500:  # bad PromQL (400), cannot execute (422), token refused (401)
        return PrometheusError(Reason.QUERY, f"Prometheus refused the query ({status}): {said}")
    if status == 200:
        return PrometheusError(Reason.INVALID_JSON, f"not a Prometheus answer: {said}")
    return PrometheusError(Reason.STATUS, f"Prometheus answered {status}: {said}")


def _sample(item: Any) -> Sample:
    if not isinstance(item, dict):
        raise PrometheusError(
            Reason.INVALID_JSON, "not a Prometheus answer: a sample is not an object"
        )
    labels = item.get("metric")
    if not isinstance(labels, dict):
        labels = {}
    return Sample({str(k): str(v) for k, v in labels.items()}, _value(item.get("value")))


def _value(pair: Any) -> float:
    # [<unix time>, "<value>"]: the value is a string, "NaN" and "+Inf" included
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise PrometheusError(Reason.INVALID_JSON, "not a Prometheus answer: a malformed value")
    try:
        return float(pair[1])
    except ValueError:
        raise PrometheusError(
            Reason.INVALID_JSON, f"not a Prometheus answer: value {pair[1][:40]!r}"
        ) from None


def grade(check: CheckConfig, value: float) -> tuple[Outcome, str | None]:
    """The outcome of one value, and the bound it passed (None when within all)."""
    if check.max is not None and value > check.max:
        return Outcome.DOWN, "max"
    if check.min is not None and value < check.min:
        return Outcome.DOWN, "min"
    if check.degraded_max is not None and value > check.degraded_max:
        return Outcome.DEGRADED, "degraded_max"
    if check.degraded_min is not None and value < check.degraded_min:
        return Outcome.DEGRADED, "degraded_min"
    return Outcome.UP, None


def _badness(check: CheckConfig, outcome: Outcome, value: float) -> tuple[int, float]:
    """Orders samples: the worse outcome first, then the value furthest past (or
    nearest to) the tightest bound, so the sample shown is the one to look at."""
    upper = min((v for v in (check.max, check.degraded_max) if v is not None), default=None)
    lower = max((v for v in (check.min, check.degraded_min) if v is not None), default=None)
    distances = []
    if upper is not None:
        distances.append(value - upper)
    if lower is not None:
        distances.append(lower - value)
    return outcome.severity, max(distances)


def format_value(value: float, unit: str) -> str:
    """``0.072`` as ``7.2 %`` (unit ratio), ``0.35`` as ``350 ms`` (seconds), else ``0.072``."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "ratio":
        return f"{value * 100:.3g} %"
    if unit == "seconds":
        if abs(value) >= 60:  # the age of a backup reads as 1h, not 3.6e+03 s
            return ("-" if value < 0 else "") + format_duration(abs(value))
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    return f"{value:.6g}"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _short(query: str) -> str:
    query = " ".join(query.split())
    return query if len(query) <= QUERY_CHARS else query[: QUERY_CHARS - 3] + "..."
