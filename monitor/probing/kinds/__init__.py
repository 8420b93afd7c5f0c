"""The kinds of check, by ``type``: ``http`` (the default), ``prometheus``, ``alertmanager``.

Each kind implements :class:`~monitor.probing.kinds.base.CheckKind`; adding one
is a module here, a name in :data:`KINDS` and its keys in the config schema.
"""

from __future__ import annotations

from monitor.config import CheckConfig
from monitor.probing.kinds.alertmanager import AlertmanagerKind
from monitor.probing.kinds.base import Answer, CheckKind, Request, fault_outcome
from monitor.probing.kinds.http import HttpKind
from monitor.probing.kinds.prometheus import PrometheusKind
from monitor.probing.results import Reason

KINDS: dict[str, CheckKind] = {
    "http": HttpKind(),
    "prometheus": PrometheusKind(),
    "alertmanager": AlertmanagerKind(),
}


def kind_of(check: CheckConfig) -> CheckKind:
    """The kind that probes ``check``."""
    return KINDS[check.type]


def failure_reasons(check: CheckConfig) -> list[Reason]:
    """The reasons a down result of ``check`` can carry, in the enum's order."""
    reasons = kind_of(check).reasons
    return [reason for reason in Reason if reason in reasons]


__all__ = ["KINDS", "Answer", "CheckKind", "Request", "failure_reasons", "fault_outcome", "kind_of"]
