"""The configuration schema: one model per section, validated once, at start-up.

The keys here are the project's public interface: extend them, never rename.
Unknown keys are rejected (a typo is not a default).
"""

from __future__ import annotations

import contextvars
import os
import re
import socket
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.config.durations import Duration, OptionalDuration
from monitor.config.schedule import Timing, parse_timing
from monitor.config.values import (
    AlertMatcher,
    JmesPath,
    check_ca_file,
    check_http_url,
    check_listen,
)

ENV_PREFIX = "MONITOR_"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MonitorSection(_Section):
    """``[monitor]``: cadence, thresholds, state and the HTTP listener."""

    interval: Duration = 900.0
    incident_interval: Duration = 60.0
    timeout: Duration = 10.0
    open_after: int = Field(3, ge=1, le=100)
    close_after: int = Field(2, ge=1, le=100)
    reopen_window: Duration = 1800.0
    reminder_interval: Duration = 3600.0
    state_path: Path = Path("monitor.db")
    listen: Annotated[str, AfterValidator(check_listen)] = "0.0.0.0:9091"
    concurrency: int = Field(100, ge=1, le=10_000)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    jitter: OptionalDuration = 1.0
    stall_after: int = Field(3, ge=2, description="exit when no cycle completed for N intervals")
    shutdown_grace: Duration = 10.0
    raw_retention: Duration = 7 * 86400.0
    rollup_retention: Duration = 400 * 86400.0
    failure_window: Duration = 3600.0
    slo_window: Duration = 30 * 86400.0
    metrics_refresh: Duration = 60.0
    # several instances: PostgreSQL (DATABASE_URL when unset), regions, the quorum
    database_url: SecretStr | None = None
    region: str = Field("local", pattern=r"^[A-Za-z0-9_.-]{1,32}$")  # else FLY_REGION
    instance: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # else FLY_MACHINE_ID
    quorum: Literal["majority"] | Annotated[int, Field(ge=1, le=100)] = "majority"
    min_regions: int = Field(1, ge=1, le=100)
    leader_check: Duration = 2.0  # how often followers try the lock and the leader proves it

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        # never echo the value: it may hold a password
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return value

    @property
    def instance_id(self) -> str:
        """This instance's stable name (sessions and leadership name it)."""
        return self.instance or f"{socket.gethostname()}-{self.region}"


class GithubSection(_Section):
    """``[github]``: where incident issues go; without a token the journal stands in."""

    enabled: bool = True
    repository: str | None = None
    api_url: str = "https://api.github.com"
    token: SecretStr | None = None
    labels: list[str] = Field(default_factory=lambda: ["incident", "monitor"])
    assignees: list[str] = Field(default_factory=list)
    runbook_url: str | None = None
    timeout: Duration = 15.0
    # a person's label on an open incident issue: reminders stop, the figures count it
    ack_label: str = Field("acknowledged", min_length=1, max_length=50)

    @field_validator("token")
    @classmethod
    def _blank_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would make ``active`` true and every GitHub call a 401.
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("repository")
    @classmethod
    def _owner_slash_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", value):
            raise ValueError(f"expected 'owner/name', got {value!r}")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)

    @property
    def active(self) -> bool:
        """True when incidents should go to GitHub rather than to the journal."""
        return self.enabled and self.token is not None and self.repository is not None


DEFAULT_FIELDS = [
    "status",
    "version",
    "errorRate",
    "error_rate",
    "errorRates",
    "error_rates",
    "activeAlerts",
    "active_alerts",
    "alerts",
]


CheckType = Literal["http", "prometheus", "alertmanager"]
# the keys each type reads beyond the common ones (name, type, timeout, headers,
# ca_file): any other key given for a type is a mistake
_TYPE_KEYS: dict[str, frozenset[str]] = {
    "http": frozenset(
        {
            "max_response_time",
            "path",
            "method",
            "expect_status",
            "conditions",
            "follow_redirects",
            "version",
            "fields",
            "cert_warn",
        }
    ),
    "prometheus": frozenset(
        {
            "url",
            "token_env",
            "token",
            "query",
            "max",
            "min",
            "degraded_max",
            "degraded_min",
            "on_empty",
            "on_error",
            "unit",
        }
    ),
    "alertmanager": frozenset({"url", "token_env", "token", "matchers", "on_error"}),
}
_TYPED_KEYS = frozenset().union(*_TYPE_KEYS.values())
Threshold = Annotated[float, Field(allow_inf_nan=False)]


def foreign_keys(check_type: str) -> frozenset[str]:
    """The keys a check of ``check_type`` does not read (those of the other types)."""
    return _TYPED_KEYS - _TYPE_KEYS[check_type]


class CheckConfig(_Section):
    """``[[targets.checks]]``: one probe and what a healthy answer looks like.

    ``type`` says what is asked: ``http`` (the default) requests the target's
    ``url`` + ``path``; ``prometheus`` runs an instant ``query`` against the
    Prometheus at ``url`` and compares the value with ``max``/``min`` (and the
    ``degraded_*`` bounds); ``alertmanager`` lists the alerts matching
    ``matchers`` that fire, unsilenced and uninhibited, in the Alertmanager at
    ``url``. Keys of another type are refused, so a typo is not a silent no-op.
    When Prometheus or Alertmanager itself fails (unreachable, a refused query),
    the result is unknown unless ``on_error = "down"``.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: CheckType = "http"
    timeout: Duration | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    ca_file: Annotated[Path, AfterValidator(check_ca_file)] | None = None  # a private CA
    # http
    max_response_time: Duration | None = None  # degraded when slower
    path: str = "/"
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    conditions: list[JmesPath] = Field(default_factory=list)
    follow_redirects: bool = False
    version: JmesPath | None = None
    fields: list[JmesPath] = Field(default_factory=lambda: list(DEFAULT_FIELDS))
    cert_warn: Duration = 14 * 86400.0  # degraded when the certificate expires sooner
    # prometheus and alertmanager: the service's base URL and its bearer token
    url: str | None = None
    token_env: str | None = Field(None, pattern=ENV_NAME)
    token: SecretStr | None = None  # the value of token_env, filled at load time
    # prometheus
    query: str | None = Field(None, min_length=1, max_length=8192)
    max: Threshold | None = None  # down above this
    min: Threshold | None = None  # down below this
    degraded_max: Threshold | None = None  # degraded above this
    degraded_min: Threshold | None = None  # degraded below this
    on_empty: Literal["up", "down", "unknown"] = "unknown"  # a result with no sample
    # what it means when the service does not answer (down, refused, a broken answer):
    # unknown by default, since an outage of Prometheus is not an outage of the target
    on_error: Literal["down", "unknown"] = "unknown"
    unit: Literal["", "ratio", "seconds"] = ""  # how values are written: 7.2 %, 350 ms
    # alertmanager
    matchers: list[AlertMatcher] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _token_from_its_variable(cls, data: Any) -> Any:
        # here rather than in the loader, so a check given in MONITOR_TARGETS gets it too
        if isinstance(data, dict) and isinstance(data.get("token_env"), str):
            value = os.environ.get(data["token_env"], "").strip()
            if value and data.get("token") is None:
                data = {**data, "token": value}
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @model_validator(mode="after")
    def _keys_fit_the_type(self) -> CheckConfig:
        # "token" is filled from token_env by the loader, never written in the file
        foreign = sorted((self.model_fields_set & _TYPED_KEYS) - _TYPE_KEYS[self.type])
        if foreign:
            owners = [t for t, keys in _TYPE_KEYS.items() if foreign[0] in keys]
            kinds = " or ".join(f'"{t}"' for t in owners)
            raise ValueError(f"{foreign[0]}: only for type = {kinds}, not {self.type!r}")
        if self.type != "http" and self.url is None:
            raise ValueError(f"url: required for a {self.type} check (the service's base URL)")
        if self.type == "prometheus":
            self._check_thresholds()
        if self.type == "alertmanager" and not self.matchers:
            raise ValueError('matchers: required, e.g. ["app=\\"hotdash\\""]')
        return self

    def _check_thresholds(self) -> None:
        if self.query is None:
            raise ValueError("query: required for a prometheus check")
        if not self.thresholds:
            raise ValueError("max: a prometheus check needs max, min, degraded_max or degraded_min")
        if self.max is not None and self.degraded_max is not None and self.degraded_max >= self.max:
            raise ValueError("degraded_max: must be below max")
        if self.min is not None and self.degraded_min is not None and self.degraded_min <= self.min:
            raise ValueError("degraded_min: must be above min")
        lowest = max((v for v in (self.min, self.degraded_min) if v is not None), default=None)
        highest = min((v for v in (self.max, self.degraded_max) if v is not None), default=None)
        if lowest is not None and highest is not None and lowest >= highest:
            raise ValueError("min: the lower bounds must be below the upper bounds")

    @property
    def thresholds(self) -> dict[str, float]:
        """The prometheus bounds that are set, by key."""
        bounds = {
            "max": self.max,
            "degraded_max": self.degraded_max,
            "degraded_min": self.degraded_min,
            "min": self.min,
        }
        return {key: value for key, value in bounds.items() if value is not None}


class TargetConfig(_Section):
    """``[[targets]]``: one deployed service and its checks."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str
    slo: float | None = Field(None, gt=0, lt=1)
    mttr_objective: Duration | None = None
    severity: Severity = "critical"  # what paging channels say (PagerDuty's enum)
    checks: list[CheckConfig] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_http_url(value)

    def check_url(self, check: CheckConfig) -> str:
        """The absolute URL a check requests."""
        return self.url + check.path


Severity = Literal["critical", "error", "warning", "info"]
ChannelType = Literal["pagerduty", "slack", "webhook", "email", "alertmanager"]
EventName = Literal[
    "opened", "updated", "reminder", "resolved", "reopened", "acknowledged", "maintenance"
]
# what each type gets when ``events`` is not given: pages for what needs a person, chat
# for everything a person follows, mail for the beginning and the end
DEFAULT_EVENTS: dict[str, tuple[str, ...]] = {
    "pagerduty": ("opened", "reopened", "updated", "resolved", "acknowledged"),
    "slack": ("opened", "reopened", "updated", "reminder", "resolved", "acknowledged"),
    "webhook": ("opened", "reopened", "updated", "reminder", "resolved", "acknowledged"),
    "email": ("opened", "reopened", "resolved"),
    "alertmanager": ("opened", "reopened", "updated", "resolved"),
}
# the public endpoint of the services that have one
DEFAULT_URLS = {
    "pagerduty": "https://events.pagerduty.com/v2/enqueue",
    "slack": "https://slack.com/api",
}
# the types that cannot work without a secret (the key, token, signing secret or URL)
SECRET_REQUIRED = frozenset({"pagerduty", "slack", "webhook"})


class ChannelConfig(_Section):
    """``[[channels]]``: one place on-call hears about incidents, beside the issues.

    The secret is never written here: ``secret_env`` names the environment variable
    that holds it, read at start-up into :attr:`secret`.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: ChannelType
    url: str | None = None
    urls: list[str] = Field(default_factory=list)  # alertmanager: every member of an HA set
    secret_env: str | None = Field(None, pattern=ENV_NAME)
    targets: list[str] | None = None  # default: all
    events: list[EventName] | None = None  # default: the type's natural set
    timeout: Duration = 10.0
    # slack (bot token): the channel to post in
    channel: str | None = None
    # email
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    from_: str | None = Field(None, alias="from")
    to: list[str] = Field(default_factory=list)
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None  # SMTP login; its password comes from secret_env
    # alertmanager: how often an open incident's alert is sent again, and how far ahead
    # its endsAt is set (Prometheus: every minute, four resend intervals ahead)
    resend_interval: Duration = 60.0
    # the value of the variable secret_env names; filled at load time, never from a file
    secret: SecretStr | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        return [check_http_url(url) for url in value]

    @property
    def endpoint(self) -> str | None:
        """``url``, else the service's public endpoint."""
        return self.url or DEFAULT_URLS.get(self.type)

    @property
    def endpoints(self) -> list[str]:
        """Every URL to send to: ``urls`` (Alertmanager's HA set), else ``url``."""
        if self.urls:
            return list(self.urls)
        return [self.endpoint] if self.endpoint else []

    @property
    def subscribed(self) -> frozenset[str]:
        """The event kinds this channel gets."""
        return frozenset(self.events if self.events is not None else DEFAULT_EVENTS[self.type])

    def wants(self, target: str, event: str) -> bool:
        """True when an ``event`` about ``target`` goes to this channel."""
        in_scope = self.targets is None or target in self.targets
        return in_scope and event in self.subscribed


class MaintenanceConfig(_Section):
    """``[[maintenance]]``: a window, once or recurring, in which nobody is paged.

    * once: ``start`` is a date and time (``2026-12-05T02:00``), no ``every``;
    * on weekdays: ``every = "sat,sun"`` (or ``"daily"``), ``start`` a time of day;
    * by cron: ``every = "0 3 * * 2"`` (five fields), ``start`` unused or a date
      before which it does not apply.
    """

    targets: list[str] | None = None  # default: all
    start: str | None = None
    duration: Duration
    every: str | None = None
    timezone: str = "UTC"
    reason: str = Field("scheduled maintenance", min_length=1, max_length=200)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (an IANA name, e.g. Europe/Paris)"
            ) from None
        return value

    @model_validator(mode="after")
    def _timing_parses(self) -> MaintenanceConfig:
        self.timing  # noqa: B018 - raises ValueError naming start or every
        if self.duration <= 0:
            raise ValueError("duration: must be longer than zero")
        return self

    @property
    def timing(self) -> Timing:
        """When its windows start."""
        return parse_timing(self.start, self.every, zoneinfo.ZoneInfo(self.timezone))


class StatusPageSection(_Section):
    """``[status_page]``: the public HTML page, JSON API and badges."""

    enabled: bool = True
    title: str = "Service status"
    targets: list[str] | None = None
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)


class KpiObjectives(_Section):
    """``[kpis.objectives]``: the seed's table of target SLOs, each KPI's bar.

    Rates, frequencies and scores are met at or above their bar; times and the
    change failure rate are met below theirs.
    """

    deployment_frequency_per_week: float = Field(2.0, ge=0)  # at least
    lead_time_median_s: Duration = 7200.0  # below
    change_failure_rate: float = Field(0.05, ge=0, le=1)  # below
    mttr_s: Duration = 1800.0  # below
    test_pass_rate: float = Field(1.0, ge=0, le=1)  # at least
    security_scan_pass_rate: float = Field(1.0, ge=0, le=1)  # at least
    performance_score: float = Field(85.0, ge=0, le=100)  # at least
    staging_health: float = Field(0.995, gt=0, le=1)  # at least


WEEK_S = 7 * 86400.0


def _workflow_file(value: str) -> str:
    # runs name their workflow by path (.github/workflows/ci.yml): the file is what stays
    name = value.rsplit("/", 1)[-1]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+\.ya?ml", name):
        raise ValueError(f"expected a workflow file name such as ci.yml, got {value!r}")
    return name


WorkflowFile = Annotated[str, AfterValidator(_workflow_file)]


class KpiSection(_Section):
    """``[kpis]``: the seed's KPI table from GitHub (deployments, runs, statuses) and
    the monitor's own figures."""

    enabled: bool = True  # sync from GitHub whenever the GitHub sink is configured
    environment: str = Field("production", min_length=1, max_length=255)
    # the environment's target (incidents: change failure rate, MTTR); default: the
    # target named like the environment
    target: str | None = None
    staging_target: str | None = None  # default: the target named "staging"
    test_workflows: list[WorkflowFile] = Field(default_factory=list)
    security_workflows: list[WorkflowFile] = Field(default_factory=list)
    rollback_workflows: list[WorkflowFile] = Field(default_factory=list)
    objectives: KpiObjectives = Field(default_factory=KpiObjectives)
    sync_interval: Duration = 900.0
    report_every: OptionalDuration = 0.0  # 0: no report; 7d: one issue per ISO week
    window: Duration = 30 * 86400.0  # the gauges' window and the command's default
    lookback: Duration = 90 * 86400.0  # how far back the first sync reads

    @field_validator("report_every")
    @classmethod
    def _weekly_or_off(cls, value: float) -> float:
        # a report per ISO week is what a review meets over; other periods would need
        # their own titles and boundaries, and nobody has asked
        if value not in (0.0, WEEK_S):
            raise ValueError("only 7d (one report per ISO week) or 0 (off) is supported")
        return value

    @model_validator(mode="after")
    def _lookback_covers_window(self) -> KpiSection:
        if self.lookback < self.window:
            raise ValueError("lookback: must be at least as long as window")
        return self

    def environment_target(self, names: list[str]) -> str | None:
        """The target whose incidents count against the environment's deployments."""
        if self.target is not None:
            return self.target
        return self.environment if self.environment in names else None

    def staging(self, names: list[str]) -> str | None:
        """The target whose uptime is the staging-health KPI."""
        if self.staging_target is not None:
            return self.staging_target
        return "staging" if "staging" in names else None


# the parsed TOML document while Settings validates it (load_settings sets it)
toml_data: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("toml_data")


class _TomlData(PydanticBaseSettingsSource):
    """The already parsed TOML document, below the environment in priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return toml_data.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(toml_data.get({}))


class Settings(BaseSettings):
    """The whole, validated configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # An empty variable means "not set": CI expands a missing secret to "", which
        # must not blank a key from the file or hide GITHUB_TOKEN.
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    monitor: MonitorSection = Field(default_factory=MonitorSection)
    github: GithubSection = Field(default_factory=GithubSection)
    status_page: StatusPageSection = Field(default_factory=StatusPageSection)
    targets: list[TargetConfig] = Field(min_length=1)
    channels: list[ChannelConfig] = Field(default_factory=list)
    maintenance: list[MaintenanceConfig] = Field(default_factory=list)
    kpis: KpiSection = Field(default_factory=KpiSection)
    # MONITOR_API_TOKEN: the bearer token of POST/DELETE /api/maintenance (absent: no API)
    api_token: SecretStr | None = None

    @field_validator("api_token")
    @classmethod
    def _blank_api_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Priority: explicit arguments, then ``MONITOR_*`` variables, then the file."""
        return init_settings, env_settings, _TomlData(settings_cls)

    def channel(self, name: str) -> ChannelConfig:
        """The channel called ``name``; KeyError when there is none."""
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; KeyError when there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)
