"""Deployments as the monitor sees them: a version change in a probe's JSON."""

from __future__ import annotations

from datetime import timedelta

from monitor.figures.slo import Deployment, deployment_before
from monitor.incidents.tracker import Incident
from monitor.logs import get_logger
from monitor.metrics import Metrics
from monitor.probing.results import TargetResult
from monitor.store.base import Store, StoreError

log = get_logger("monitor.daemon")


class DeploymentWatch:
    """Remembers the last version per check; a change on any check is one deployment."""

    def __init__(self, store: Store, metrics: Metrics, failure_window_s: float) -> None:
        self._store = store
        self._metrics = metrics
        self._failure_window_s = failure_window_s
        self._versions: dict[str, dict[str, str]] = {}  # target -> check -> version

    def restore(self, target: str) -> None:
        """Load a target's last versions, so a restart does not see a deployment."""
        self._versions[target] = self._store.last_versions(target)

    def observe(self, result: TargetResult) -> Deployment | None:
        """The deployment this result shows, if its version changed."""
        versions = self._versions.setdefault(result.target, {})
        deployment = None
        for check in result.checks:
            if check.version is None:
                continue
            previous = versions.get(check.check)
            if previous is not None and previous != check.version and deployment is None:
                deployment = Deployment(result.target, previous, check.version, check.started_at)
                log.info(
                    "deployment seen",
                    target=result.target,
                    from_version=previous,
                    to_version=check.version,
                )
            versions[check.check] = check.version
        return deployment

    def followed_by(self, incident: Incident, new: Deployment | None) -> Deployment | None:
        """The version change first seen within failure_window before the first failure."""
        window = self._failure_window_s
        try:
            deployments = self._store.deployments(
                incident.target, since=incident.started_at - timedelta(seconds=window)
            )
        except StoreError as exc:
            self._metrics.store_errors.labels("read").inc()
            log.error("state database read failed; deployments unknown", error=str(exc))
            deployments = []
        if new is not None:
            deployments.append(new)
        return deployment_before(incident.started_at, deployments, window, target=incident.target)
