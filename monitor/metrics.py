"""Prometheus metrics: the names here are the project's interface.

All names start with ``monitor_``, use base units, and carry only low-cardinality
labels (target, check, reason, window, operation). Each daemon owns a
:class:`Metrics` with its own ``CollectorRegistry`` so tests never share state.

prometheus-client is imported by the first :class:`Metrics`, not by this module:
``monitor report`` reads the bucket bounds below (through the history) and exports
nothing, and the import is ~15 ms of its start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from monitor import __version__
from monitor.probing.results import CheckResult, Outcome, Reason, TargetResult

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from monitor.config import TargetConfig

PROBE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INCIDENT_BUCKETS_S = (60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
UPTIME_WINDOWS = ("1h", "24h", "7d", "30d", "90d")
BURN_WINDOWS = ("1h", "6h")
GITHUB_OPERATIONS = ("open", "comment", "edit", "close", "reopen", "lookup", "label", "reconcile")


class Metrics:
    """Every metric the daemon exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        # No ``_created`` series beside each counter and histogram (prometheus-client's
        # default): every series here is declared at start-up, so rate() and increase()
        # already see the first event, and in the text format Prometheus stores each
        # ``_created`` as a gauge of its own: one more series per counter for nothing.
        # blackbox_exporter exports none. (A global switch, read as each metric is made.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry()
        self._series: dict[tuple[str, str], _CheckSeries] = {}
        self._target_series: dict[str, _TargetSeries] = {}
        r = self.registry
        tc = ("target", "check")
        # --- probes
        self.probe_success = Gauge(
            "monitor_probe_success",
            "1 if the last probe was up or degraded, 0 if down; absent while unknown",
            tc,
            registry=r,
        )
        self.probe_duration = Histogram(
            "monitor_probe_duration_seconds",
            "Time from request to end of body (or failure)",
            tc,
            buckets=PROBE_BUCKETS_S,
            registry=r,
        )
        self.probe_status_code = Gauge(
            "monitor_probe_status_code", "HTTP status of the last probe, 0 if none", tc, registry=r
        )
        self.probes = Counter("monitor_probes", "Probes performed", tc, registry=r)
        self.probe_failures = Counter(
            "monitor_probe_failures",
            "Probes that were down, by reason",
            (*tc, "reason"),
            registry=r,
        )
        self.last_probe = Gauge(
            "monitor_last_probe_timestamp_seconds",
            "Unix time the last probe of this check started",
            tc,
            registry=r,
        )
        self.probe_degraded = Gauge(
            "monitor_probe_degraded",
            "1 if the last probe exceeded its latency budget",
            tc,
            registry=r,
        )
        self.probe_unknown = Gauge(
            "monitor_probe_unknown",
            "1 if the last probe could not tell (a query with no samples, on_empty = unknown)",
            tc,
            registry=r,
        )
        self.tls_cert_expiry = Gauge(
            "monitor_tls_cert_expiry_timestamp_seconds",
            "When the certificate an https check was last served expires (Unix time)",
            tc,
            registry=r,
        )
        self.target_up = Gauge(
            "monitor_target_up",
            "1 if no check of the target is down or unknown, 0 if one is down; absent while"
            " unknown",
            ("target",),
            registry=r,
        )
        self.build_info = Gauge(
            "monitor_build_info", "Always 1; the version as a label", ("version",), registry=r
        )
        self.probe_interval = Gauge(
            "monitor_probe_interval_seconds",
            "The cadence the target is probed at now (interval, or incident_interval)",
            ("target",),
            registry=r,
        )
        self.cycle_completed = Gauge(
            "monitor_cycle_last_completed_timestamp_seconds",
            "Unix time a probe cycle of this target last completed",
            ("target",),
            registry=r,
        )
        # --- incidents and the GitHub sink
        self.incident_open = Gauge(
            "monitor_incident_open", "1 while an incident is open", ("target",), registry=r
        )
        self.incident_started = Gauge(
            "monitor_incident_started_timestamp_seconds",
            "Unix time of the open incident's first failed probe, 0 if none",
            ("target",),
            registry=r,
        )
        self.leader = Gauge(
            "monitor_leader",
            "1 on the instance that decides incidents (the leader), 0 on followers",
            registry=r,
        )
        self.regions_failing = Gauge(
            "monitor_regions_failing",
            "Fresh regions whose latest probe of the target failed (same on every instance)",
            ("target",),
            registry=r,
        )
        self.regions_fresh = Gauge(
            "monitor_regions_fresh",
            "Regions with a recent enough result of the target to vote (same on every instance)",
            ("target",),
            registry=r,
        )
        self.incidents = Counter(
            "monitor_incidents", "Incidents opened (reopens not counted)", ("target",), registry=r
        )
        self.incident_duration = Histogram(
            "monitor_incident_duration_seconds",
            "Measured incident durations, observed at resolve",
            ("target",),
            buckets=INCIDENT_BUCKETS_S,
            registry=r,
        )
        self.outbox_pending = Gauge(
            "monitor_outbox_pending", "GitHub actions written but not yet performed", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "monitor_outbox_oldest_age_seconds",
            "Age of the oldest pending GitHub action, 0 if none",
            registry=r,
        )
        self.github_requests = Counter(
            "monitor_github_requests", "GitHub actions attempted", ("operation",), registry=r
        )
        self.github_errors = Counter(
            "monitor_github_errors",
            "GitHub actions that failed, by reason",
            ("operation", "reason"),
            registry=r,
        )
        # --- every channel (GitHub's requests keep their own series above)
        self.channel_requests = Counter(
            "monitor_channel_requests",
            "Channel steps attempted, by channel and step kind",
            ("channel", "kind"),
            registry=r,
        )
        self.channel_errors = Counter(
            "monitor_channel_errors",
            "Channel steps that failed, by channel and reason",
            ("channel", "reason"),
            registry=r,
        )
        self.channel_pending = Gauge(
            "monitor_channel_pending",
            "Channel steps written but not yet performed",
            ("channel",),
            registry=r,
        )
        self.channel_stopped = Gauge(
            "monitor_channel_stopped",
            "1 while a channel's queue is stopped by a permanent refusal (or disabled)",
            ("channel",),
            registry=r,
        )
        self.maintenance = Gauge(
            "monitor_maintenance",
            "1 while the target is in a maintenance window (nobody is paged)",
            ("target",),
            registry=r,
        )
        # --- history and SLOs
        tw = ("target", "window")
        self.uptime = Gauge(
            "monitor_uptime_ratio", "Up (incl. degraded) time over known time", tw, registry=r
        )
        self.coverage = Gauge(
            "monitor_coverage_ratio", "Known time over the window", tw, registry=r
        )
        self.slo_objective = Gauge(
            "monitor_slo_objective_ratio",
            "The target's availability objective",
            ("target",),
            registry=r,
        )
        self.budget_remaining = Gauge(
            "monitor_error_budget_remaining_ratio",
            "Share of the SLO window's error budget left (negative when overspent)",
            ("target",),
            registry=r,
        )
        self.burn_rate = Gauge(
            "monitor_error_budget_burn_rate",
            "Down share of known time divided by the allowed share",
            tw,
            registry=r,
        )
        self.mttr = Gauge(
            "monitor_mttr_seconds",
            "Mean duration of incidents resolved in the window",
            tw,
            registry=r,
        )
        self.deployments = Gauge(
            "monitor_deployments_total",
            "Version changes seen on the target (from stored history)",
            ("target",),
            registry=r,
        )
        self.change_failure = Gauge(
            "monitor_change_failure_ratio",
            "Share of deployments followed by an incident within failure_window",
            tw,
            registry=r,
        )
        # --- the seed's KPI table (monitor kpis), over kpis.window
        self.kpi_value = Gauge(
            "monitor_kpi_value",
            "A KPI over kpis.window in its own unit (per week, seconds, ratio, score); NaN"
            " without data",
            ("kpi",),
            registry=r,
        )
        self.kpi_objective = Gauge(
            "monitor_kpi_objective", "A KPI's objective ([kpis.objectives])", ("kpi",), registry=r
        )
        self.kpi_met = Gauge(
            "monitor_kpi_objective_met",
            "1 when the KPI meets its objective, 0 when it misses it, NaN without data",
            ("kpi",),
            registry=r,
        )
        self.kpi_data_age = Gauge(
            "monitor_kpi_data_age_seconds",
            "Age of the GitHub data behind the KPIs (since the last complete sync); +Inf when"
            " no sync ever completed, NaN without GitHub",
            registry=r,
        )
        self.kpi_requests = Counter(
            "monitor_kpi_sync_requests",
            "Requests the KPI sync made to GitHub, by answer (not_modified costs no rate limit)",
            ("answer",),
            registry=r,
        )
        self.kpi_sync_errors = Counter(
            "monitor_kpi_sync_errors", "KPI syncs GitHub interrupted", registry=r
        )
        # --- the monitor itself
        self.store_errors = Counter(
            "monitor_store_errors",
            "Failed writes to the state database",
            ("operation",),
            registry=r,
        )
        self.build_info.labels(__version__).set(1)

    def declare(self, targets: Sequence[TargetConfig]) -> None:
        """Create every series at start-up so dashboards and alerts see zeros, not gaps."""
        from monitor.probing.kinds import failure_reasons  # the check kinds: not for the CLI

        for target in targets:
            self.target_up.labels(target.name)
            self.incident_open.labels(target.name).set(0)
            self.incident_started.labels(target.name).set(0)
            self.incidents.labels(target.name)
            self.incident_duration.labels(target.name)
            self.cycle_completed.labels(target.name)
            if target.slo is not None:
                self.slo_objective.labels(target.name).set(target.slo)
            for check in target.checks:
                labels = (target.name, check.name)
                self.probe_success.labels(*labels)
                self.probe_duration.labels(*labels)
                self.probe_status_code.labels(*labels)
                self.probes.labels(*labels)
                self.last_probe.labels(*labels)
                self.probe_degraded.labels(*labels)
                self.probe_unknown.labels(*labels).set(0)
                for reason in failure_reasons(check):
                    self.probe_failures.labels(*labels, reason.value)
            self.maintenance.labels(target.name).set(0)
        for operation in GITHUB_OPERATIONS:
            self.github_requests.labels(operation)
            # the errors an alert watches exist from start-up, so increase() sees the first
            for sink_reason in ("auth", "forbidden", "not_found"):
                self.github_errors.labels(operation, sink_reason)

    def declare_channels(self, names: Sequence[str]) -> None:
        """The channel series, zero from start-up (an alert's increase() sees the first)."""
        for name in names:
            self.channel_pending.labels(name).set(0)
            self.channel_stopped.labels(name).set(0)
            for reason in ("rejected", "auth", "disabled"):
                self.channel_errors.labels(name, reason)

    def observe(self, result: TargetResult, completed_at: float) -> None:
        """Record one target's probe cycle."""
        for check in result.checks:
            self.observe_check(check)
        if result.outcome.is_known:
            self.target_up.labels(result.target).set(0 if result.down else 1)
        else:  # neither up nor down: a 0 would page through a rule on target_up == 0
            _forget(self.target_up, result.target)
        self._target(result.target).cycle_completed.set(completed_at)

    def incident_state(self, target: str, open_now: bool, started_at: float) -> None:
        """Whether ``target`` has an open incident, and since when (0 when none)."""
        series = self._target(target)
        series.incident_open.set(1 if open_now else 0)
        series.incident_started.set(started_at)

    def _target(self, target: str) -> _TargetSeries:
        """A target's never-removed series, looked up once (as :meth:`_check_series`)."""
        series = self._target_series.get(target)
        if series is None:
            series = self._target_series[target] = _TargetSeries(
                cycle_completed=self.cycle_completed.labels(target),
                incident_open=self.incident_open.labels(target),
                incident_started=self.incident_started.labels(target),
            )
        return series

    def _check_series(self, labels: tuple[str, str]) -> _CheckSeries:
        """A check's series, each looked up once: ``labels()`` validates and locks on
        every call, six times a result. (``probe_success`` is not among them: it is
        removed while a check is unknown, and a kept child would stay removed.)"""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _CheckSeries(
                probes=self.probes.labels(*labels),
                unknown=self.probe_unknown.labels(*labels),
                degraded=self.probe_degraded.labels(*labels),
                duration=self.probe_duration.labels(*labels),
                status_code=self.probe_status_code.labels(*labels),
                last_probe=self.last_probe.labels(*labels),
            )
        return series

    def observe_check(self, check: CheckResult) -> None:
        """Record one check result."""
        labels = (check.target, check.check)
        series = self._check_series(labels)
        series.probes.inc()
        if check.outcome.is_known:
            self.probe_success.labels(*labels).set(1 if check.ok else 0)
        else:
            _forget(self.probe_success, *labels)
        series.unknown.set(0 if check.outcome.is_known else 1)
        # the latency budget only: a certificate near expiry has its own series and
        # alert, and a degraded_max is the user's own Prometheus's to alert on
        slow = check.outcome is Outcome.DEGRADED and check.reason is Reason.SLOW
        series.degraded.set(1 if slow else 0)
        series.duration.observe(check.duration_s)
        series.status_code.set(check.status_code or 0)
        series.last_probe.set(check.started_at.timestamp())
        if check.cert_expires_at is not None:
            self.tls_cert_expiry.labels(*labels).set(check.cert_expires_at.timestamp())
        if check.outcome is Outcome.DOWN:
            self.probe_failures.labels(*labels, check.reason.value).inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in Prometheus text (or OpenMetrics when asked), with its content type."""
        from prometheus_client import generate_latest
        from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
        from prometheus_client.openmetrics.exposition import (
            generate_latest as generate_openmetrics,
        )

        if "application/openmetrics-text" in accept:
            # prometheus-client ships this function without annotations
            body: bytes = generate_openmetrics(self.registry)  # type: ignore[no-untyped-call]
            return body, OPENMETRICS_TYPE
        return generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8"


class _TargetSeries(NamedTuple):
    """The labelled series of one target that are never removed."""

    cycle_completed: Gauge
    incident_open: Gauge
    incident_started: Gauge


class _CheckSeries(NamedTuple):
    """The labelled series of one (target, check) that are never removed."""

    probes: Counter
    unknown: Gauge
    degraded: Gauge
    duration: Histogram
    status_code: Gauge
    last_probe: Gauge


def _forget(gauge: Gauge, *labels: str) -> None:
    """Drop a series while its value is unknown (prometheus-client before 0.21.1 raises
    KeyError for one that is already gone)."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
