"""Configuration: ``config.toml`` plus ``MONITOR_*`` environment overrides.

The schema below is the project's public interface: extend it, never rename.
Everything is validated once, at start-up; a problem becomes a
:class:`ConfigError` holding one message per problem, each naming its key
path (``targets[1].checks[0].expect_status: ...``).
"""

from __future__ import annotations

import contextvars
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import jmespath
import jmespath.exceptions
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

ENV_PREFIX = "MONITOR_"
CONFIG_ENV = "MONITOR_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.toml")
MASK = "***"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` holds one line per fault."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``500ms``, ``30s``, ``15m``, ``1h30m``."""
    seconds = _duration_seconds(value)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def _parse_optional_duration(value: object) -> float:
    # For settings where 0 means "off" (jitter): a duration, or zero.
    seconds = _duration_seconds(value)
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


def _duration_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 1h, or a number of seconds")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range: TOML allows it, we do not
            raise ValueError(f"duration is too large, got {value!r}") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"invalid duration {value!r}: use a number of seconds or a string "
                    "such as 500ms, 30s, 15m, 1h"
                )
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    else:
        raise ValueError("expected a duration such as 30s, 15m or 1h, or a number of seconds")
    if not math.isfinite(seconds):  # TOML's inf and nan, or digits beyond float range
        raise ValueError(f"duration must be a finite number of seconds, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable form: ``90`` -> ``1m30s``, ``0.5`` -> ``500ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(out) or "0s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
# A duration where 0 switches the feature off.  One validator rather than the union
# ``Duration | Literal[0]``: a union reports a bad value once per branch, under
# pydantic's branch names (``monitor.jitter.literal[0]: Input should be 0``).
_OptionalDuration = Annotated[float, BeforeValidator(_parse_optional_duration)]


def _check_jmespath(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        reason = _jmespath_reason(exc)
        raise ValueError(f"invalid JMESPath expression {expression!r}: {reason}") from None
    except RecursionError:
        raise ValueError(f"invalid JMESPath expression {expression!r}: nested too deeply") from None
    return expression


def _jmespath_reason(exc: jmespath.exceptions.JMESPathError) -> str:
    # jmespath's own messages span three lines (expression, caret); a problem is one line.
    if isinstance(exc, jmespath.exceptions.IncompleteExpressionError):
        return "incomplete expression"
    if isinstance(exc, jmespath.exceptions.LexerError):
        return f"{exc.message} at column {exc.lexer_position + 1}"
    if isinstance(exc, jmespath.exceptions.ParseError) and isinstance(exc.lex_position, int):
        return f"unexpected {exc.token_value!r} at column {exc.lex_position + 1}"
    return str(exc).splitlines()[0]


JmesPath = Annotated[str, AfterValidator(_check_jmespath)]


def _check_listen(value: str) -> str:
    split_listen(value)
    return value


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9091`` for IPv6) as a pair; ValueError when malformed."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]*):(\d+)", value.strip())
    if not match:
        raise ValueError(f"expected host:port, got {value!r}")
    host = match.group(1) or match.group(3) or "0.0.0.0"  # noqa: S104 - the documented default
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


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
    listen: Annotated[str, AfterValidator(_check_listen)] = "0.0.0.0:9091"
    concurrency: int = Field(100, ge=1, le=10_000)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    jitter: _OptionalDuration = 1.0
    stall_after: int = Field(3, ge=2, description="exit when no cycle completed for N intervals")
    shutdown_grace: Duration = 10.0
    raw_retention: Duration = 7 * 86400.0
    rollup_retention: Duration = 400 * 86400.0
    failure_window: Duration = 3600.0
    slo_window: Duration = 30 * 86400.0
    metrics_refresh: Duration = 60.0


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
        return _check_http_url(value)

    @property
    def active(self) -> bool:
        """True when incidents should go to GitHub rather than to the journal."""
        return self.enabled and self.token is not None and self.repository is not None


def _check_http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket: "http://[::1"
        hostname = None
    if not hostname or parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


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


class CheckConfig(_Section):
    """``[[targets.checks]]``: one HTTP request and what a healthy answer looks like."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = "/"
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    conditions: list[JmesPath] = Field(default_factory=list)
    max_response_time: Duration | None = None
    timeout: Duration | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    follow_redirects: bool = False
    version: JmesPath | None = None
    fields: list[JmesPath] = Field(default_factory=lambda: list(DEFAULT_FIELDS))

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value


class TargetConfig(_Section):
    """``[[targets]]``: one deployed service and its checks."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str
    slo: float | None = Field(None, gt=0, lt=1)
    mttr_objective: Duration | None = None
    checks: list[CheckConfig] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value)

    def check_url(self, check: CheckConfig) -> str:
        """The absolute URL a check requests."""
        return self.url + check.path


class StatusPageSection(_Section):
    """``[status_page]``: the public HTML page, JSON API and badges."""

    enabled: bool = True
    title: str = "Service status"
    targets: list[str] | None = None
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


_toml_data: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("toml_data")


class _TomlData(PydanticBaseSettingsSource):
    """The already parsed TOML document, below the environment in priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _toml_data.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_data.get({}))


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

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; KeyError when there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


def embedded_config_text() -> str:
    """The configuration shipped inside the package (the real staging/production setup)."""
    return resources.files("monitor").joinpath("default_config.toml").read_text("utf-8")


def resolve_config_path(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$MONITOR_CONFIG``, else ``./config.toml`` if present, else None."""
    if cli_path:
        return Path(cli_path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def load_settings(path: Path | None, **overrides: Any) -> Settings:
    """Read, merge and validate the configuration; raise :class:`ConfigError` on any fault.

    ``path=None`` means the embedded defaults.  ``overrides`` win over
    everything (the CLI uses them for ``demo``).
    """
    origin = str(path) if path else "embedded defaults"
    try:
        # utf-8-sig: editors on Windows prepend a BOM, which TOML rejects at line 1
        text = path.read_text("utf-8-sig") if path else embedded_config_text()
    except FileNotFoundError:
        raise ConfigError([f"config: file not found: {path}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"config: cannot read {path}: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: {origin} is not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"config: {origin} is not valid TOML: nested too deeply"]) from None
    token = os.environ.get("GITHUB_TOKEN")
    if token and not os.environ.get(f"{ENV_PREFIX}GITHUB__TOKEN"):
        github = data.setdefault("github", {})
        if isinstance(github, dict) and "token" not in github:
            github["token"] = token
    reset = _toml_data.set(data)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    except SettingsError as exc:
        # pydantic-settings decodes list and table values from the environment as JSON
        raise ConfigError([_env_json_problem(exc, os.environ)]) from None
    finally:
        _toml_data.reset(reset)
    problems = _semantic_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _env_json_problem(exc: SettingsError, environ: Mapping[str, str]) -> str:
    match = re.search(r'field "([^"]+)"', str(exc))
    if match is None:
        return f"environment: {exc}"
    field = match.group(1)
    # names only, never values: a value may be the token
    prefix = f"{ENV_PREFIX}{field}".upper()
    names = sorted(name for name in environ if name.upper().startswith(prefix))
    return (
        f"{field}: cannot read {' or '.join(names) or prefix + '*'} from the environment: "
        'lists and tables must be JSON, e.g. \'["a", "b"]\''
    )


# pydantic names the branch of a union (or the validator function) inside the error
# location: ``monitor.x.function-before[parse_duration(), float]``.  Those say nothing
# to a user, so they are dropped from the key path.
_PYDANTIC_LOC_PREFIXES = ("function-", "constrained-", "literal[", "is-instance[", "lax-or-strict[")
_PYDANTIC_LOC_NAMES = frozenset({"int", "float", "str", "bool"})


def _format_loc(loc: Sequence[int | str], *, keep_last: bool = False) -> str:
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        is_user_key = keep_last and index == len(loc) - 1
        if not is_user_key and (
            part.startswith(_PYDANTIC_LOC_PREFIXES) or part in _PYDANTIC_LOC_NAMES
        ):
            continue
        out += f".{_toml_key(part)}" if out else _toml_key(part)
    return out or "config"


def _toml_key(key: str) -> str:
    # A key as TOML would write it: bare when it can be, else quoted, so that an unknown
    # key such as "a.b", "" or one holding a newline still reads as one key on one line.
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return '"' + _printable(key.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _printable(text: str) -> str:
    # A problem is one line of plain text: escape newlines and other control characters.
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = error["msg"].removeprefix("Value error, ")
        # The last element of an unknown key's location is the user's own key, even when
        # it happens to be spelled like a pydantic branch name ("int").
        keep_last = error["type"] == "extra_forbidden"
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] in ("model_type", "dict_type"):
            message = "expected a table"  # pydantic would name our class: MonitorSection
        elif error["type"] == "too_short" and error.get("ctx", {}).get("min_length") == 1:
            message = "must not be empty"  # rather than "... after validation, not 0"
        line = f"{_format_loc(error['loc'], keep_last=keep_last)}: {_printable(message)}"
        if line not in lines:
            lines.append(line)
    return lines


def _duplicates(names: Sequence[str]) -> list[int]:
    seen: set[str] = set()
    repeats = []
    for index, name in enumerate(names):
        if name in seen:
            repeats.append(index)
        seen.add(name)
    return repeats


def _semantic_problems(settings: Settings) -> list[str]:
    problems = []
    target_names = [t.name for t in settings.targets]
    for index in _duplicates(target_names):
        problems.append(f"targets[{index}].name: duplicate target name {target_names[index]!r}")
    for t_index, target in enumerate(settings.targets):
        check_names = [c.name for c in target.checks]
        for index in _duplicates(check_names):
            problems.append(
                f"targets[{t_index}].checks[{index}].name: "
                f"duplicate check name {check_names[index]!r}"
            )
    monitor = settings.monitor
    if monitor.incident_interval > monitor.interval:
        problems.append(
            "monitor.incident_interval: must not be longer than monitor.interval "
            f"({monitor.incident_interval:g}s > {monitor.interval:g}s)"
        )
    for index, name in enumerate(settings.status_page.targets or []):
        if name not in target_names:
            problems.append(f"status_page.targets[{index}]: no target named {name!r}")
    return problems


def daemon_problems(settings: Settings) -> list[str]:
    """Problems that only matter to ``monitor run``.

    A token without a repository cannot file issues. One-shot commands (check,
    verify, report) do not file issues and must work in CI, where GITHUB_TOKEN
    is often set for other reasons, so only the daemon refuses it.
    """
    github = settings.github
    if github.enabled and github.token and not github.repository:
        return [
            "github.repository: required when a GitHub token is set"
            " (or set github.enabled = false to keep incidents in the journal)"
        ]
    return []


def secret_values(settings: Settings) -> list[str]:
    """Every secret the configuration holds: the token and each check header value."""
    values = [
        header.get_secret_value()
        for target in settings.targets
        for check in target.checks
        for header in check.headers.values()
    ]
    if settings.github.token is not None:
        values.append(settings.github.token.get_secret_value())
    return values


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every secret masked."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    # model_dump renders SecretStr as '**********' already; make the masking explicit
    # so a future pydantic change cannot leak a value through this function.
    if settings.github.token is not None:
        data["github"]["token"] = MASK
    for target in data["targets"]:
        for check in target["checks"]:
            check["headers"] = {name: MASK for name in check["headers"]}
    data["monitor"]["state_path"] = str(settings.monitor.state_path)
    return data
