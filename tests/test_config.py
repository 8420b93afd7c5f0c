"""The configuration loader: the shipped files, durations, environment overrides, secrets
and the exact message of every problem a user can make."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from monitor.config import (
    MASK,
    ConfigError,
    Settings,
    daemon_problems,
    format_duration,
    load_settings,
    parse_duration,
    redacted,
    resolve_config_path,
)

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"

# One target, two checks: the smallest file shaped like the real one.
ONE_TARGET = """
[[targets]]
name = "staging"
url = "https://staging.example"

  [[targets.checks]]
  name = "health"
  path = "/health"
  expect_status = [200, 302]

  [[targets.checks]]
  name = "monitoring"
  path = "/api/monitoring/health"
  conditions = ["status == 'ok'"]
"""

SECOND_TARGET = """
[[targets]]
name = "production"
url = "https://production.example"

  [[targets.checks]]
  name = "health"
  path = "/health"

  [[targets.checks]]
  name = "health"
  path = "/api/monitoring/health"
"""

TOKEN = "ghp_sentinelTOKENsentinelTOKEN0123456789"
HEADER_SECRET = "hdr-sentinel-5f0c2d9e"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MONITOR_* or GITHUB_TOKEN from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("MONITOR_") or name == "GITHUB_TOKEN":
            monkeypatch.delenv(name)


def write_config(directory: Path, text: str, name: str = "config.toml") -> Path:
    """``text`` saved as a config file in ``directory``."""
    path = directory / name
    path.write_text(text, "utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    """The problems ConfigError reports for the file at ``path``."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value.problems


# --- the shipped configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    "load",
    [lambda: load_settings(REPO_CONFIG), lambda: load_settings(None)],
    ids=["repo-config.toml", "embedded-default"],
)
def test_shipped_configuration_describes_staging_and_production(
    load: Callable[[], Settings],
) -> None:
    """Both shipped configs probe staging and production with a health and a monitoring check."""
    settings = load()

    assert [t.name for t in settings.targets] == ["staging", "production"]
    staging = settings.target("staging")
    assert staging.url == "https://hotdash-staging.fly.dev"
    assert staging.slo == 0.995
    assert settings.target("production").url == "https://hotdash.fly.dev"
    for target in settings.targets:
        health, monitoring = target.checks
        assert (health.name, health.path, health.expect_status) == ("health", "/health", [200, 302])
        assert (monitoring.name, monitoring.path, monitoring.expect_status) == (
            "monitoring",
            "/api/monitoring/health",
            [200],
        )
        assert monitoring.conditions == ["status == 'healthy' || status == 'ok'"]
        assert target.check_url(health) == target.url + "/health"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("interval", 900.0),
        ("incident_interval", 60.0),
        ("timeout", 10.0),
        ("open_after", 3),
        ("close_after", 2),
        ("reopen_window", 1800.0),
        ("reminder_interval", 3600.0),
        ("listen", "0.0.0.0:9091"),
        ("jitter", 1.0),
    ],
    ids=lambda value: str(value),
)
def test_monitor_section_defaults(tmp_path: Path, key: str, expected: object) -> None:
    """A file without ``[monitor]`` gets the documented cadence and thresholds."""
    settings = load_settings(write_config(tmp_path, ONE_TARGET))

    assert getattr(settings.monitor, key) == expected


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml_value", "seconds"),
    [
        ("30", 30.0),
        ("2.5", 2.5),
        ('"45"', 45.0),
        ('"500ms"', 0.5),
        ('"30s"', 30.0),
        ('"15m"', 900.0),
        ('"1h"', 3600.0),
        ('"1h30m"', 5400.0),
        ('"1h 30m"', 5400.0),
        ('"1d"', 86400.0),
        ('" 2M "', 120.0),
        ('"1.5s"', 1.5),
    ],
    ids=[
        "int",
        "float",
        "numeric-string",
        "ms",
        "s",
        "m",
        "h",
        "h-and-m",
        "h-space-m",
        "d",
        "padded-upper-case",
        "fractional",
    ],
)
def test_durations_parse_to_seconds(tmp_path: Path, toml_value: str, seconds: float) -> None:
    """A duration is seconds as a number, or a string of unit-suffixed parts."""
    path = write_config(tmp_path, f"[monitor]\ntimeout = {toml_value}\n{ONE_TARGET}")

    assert load_settings(path).monitor.timeout == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (30, "30s"), (90, "1m30s"), (5400, "1h30m"), (90061, "1d1h1m1s")],
    ids=["ms", "s", "m-s", "h-m", "d-h-m-s"],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    """format_duration writes the shortest form, and parse_duration reads it back."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_jitter_zero_switches_it_off(tmp_path: Path) -> None:
    """``jitter = 0`` is allowed (off), unlike every other duration."""
    path = write_config(tmp_path, f"[monitor]\njitter = 0\n{ONE_TARGET}")

    assert load_settings(path).monitor.jitter == 0


@pytest.mark.parametrize(
    ("cli_path", "env_path", "cwd_file", "expected"),
    [
        ("cli.toml", "env.toml", True, Path("cli.toml")),
        (None, "env.toml", True, Path("env.toml")),
        (None, "", True, Path("config.toml")),
        (None, None, True, Path("config.toml")),
        (None, None, False, None),
    ],
    ids=["--config", "MONITOR_CONFIG", "empty-MONITOR_CONFIG", "cwd-config.toml", "embedded"],
)
def test_resolve_config_path_precedence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli_path: str | None,
    env_path: str | None,
    cwd_file: bool,
    expected: Path | None,
) -> None:
    """``--config``, else ``$MONITOR_CONFIG``, else ``./config.toml``, else None (embedded)."""
    monkeypatch.chdir(tmp_path)
    if cwd_file:
        write_config(tmp_path, ONE_TARGET)
    environ = {} if env_path is None else {"MONITOR_CONFIG": env_path}

    assert resolve_config_path(cli_path, environ) == expected


# --- environment overrides -------------------------------------------------------------

FILE_WITH_GITHUB = f"""
[monitor]
interval = "10m"
timeout = "7s"

[github]
repository = "file/repo"
labels = ["from-file"]
{ONE_TARGET}"""


@pytest.mark.parametrize(
    ("env", "read", "expected"),
    [
        ({"MONITOR_MONITOR__INTERVAL": "5m"}, lambda s: s.monitor.interval, 300.0),
        ({"MONITOR_GITHUB__REPOSITORY": "acme/web"}, lambda s: s.github.repository, "acme/web"),
        ({}, lambda s: s.monitor.interval, 600.0),
        ({"MONITOR_MONITOR__INTERVAL": "5m"}, lambda s: s.monitor.timeout, 7.0),
        ({"MONITOR_GITHUB__REPOSITORY": "acme/web"}, lambda s: s.github.labels, ["from-file"]),
        ({"MONITOR_GITHUB__LABELS": '["a", "b"]'}, lambda s: s.github.labels, ["a", "b"]),
        ({"GITHUB_TOKEN": TOKEN}, lambda s: s.github.token.get_secret_value(), TOKEN),
        (
            {"GITHUB_TOKEN": "ghp_loser", "MONITOR_GITHUB__TOKEN": TOKEN},
            lambda s: s.github.token.get_secret_value(),
            TOKEN,
        ),
        (
            {"GITHUB_TOKEN": TOKEN, "MONITOR_GITHUB__TOKEN": ""},
            lambda s: s.github.token.get_secret_value(),
            TOKEN,
        ),
        ({"MONITOR_MONITOR__INTERVAL": ""}, lambda s: s.monitor.interval, 600.0),
        ({"GITHUB_TOKEN": TOKEN}, lambda s: s.github.active, True),
        ({"monitor_monitor__interval": "5m"}, lambda s: s.monitor.interval, 300.0),
    ],
    ids=[
        "interval",
        "repository",
        "file-value-without-env",
        "deep-merge-keeps-sibling-key",
        "deep-merge-keeps-sibling-in-github",
        "list-as-json",
        "GITHUB_TOKEN",
        "MONITOR_GITHUB__TOKEN-beats-GITHUB_TOKEN",
        "empty-MONITOR_GITHUB__TOKEN-is-unset",
        "empty-variable-keeps-file-value",
        "token-and-repository-activate-github",
        "names-are-case-insensitive",
    ],
)
def test_environment_overrides_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    read: Callable[[Settings], object],
    expected: object,
) -> None:
    """MONITOR_* variables (``__`` for nesting) win over the file, key by key."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = load_settings(write_config(tmp_path, FILE_WITH_GITHUB))

    assert read(settings) == expected


def test_without_token_github_is_inactive(tmp_path: Path) -> None:
    """No token anywhere: incidents go to the journal, and the token stays None."""
    settings = load_settings(write_config(tmp_path, FILE_WITH_GITHUB))

    assert settings.github.token is None
    assert not settings.github.active


@pytest.mark.parametrize(
    "render",
    [str, repr, lambda s: json.dumps(redacted(s)), lambda s: s.model_dump_json()],
    ids=["str", "repr", "redacted", "model_dump_json"],
)
def test_secrets_are_never_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, render: Callable[[Settings], str]
) -> None:
    """Neither the GitHub token nor a check's header value shows in any rendering."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    text = FILE_WITH_GITHUB + f'  headers = {{ Authorization = "Bearer {HEADER_SECRET}" }}\n'
    settings = load_settings(write_config(tmp_path, text))
    assert settings.github.token is not None
    assert settings.github.token.get_secret_value() == TOKEN
    assert settings.targets[0].checks[1].headers["Authorization"].get_secret_value() == (
        f"Bearer {HEADER_SECRET}"
    )

    rendered = render(settings)

    assert TOKEN not in rendered
    assert HEADER_SECRET not in rendered


def test_redacted_masks_token_and_header_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redacted() keeps the header names and replaces every secret value with the mask."""
    monkeypatch.setenv("MONITOR_GITHUB__TOKEN", TOKEN)
    text = FILE_WITH_GITHUB + f'  headers = {{ Authorization = "{HEADER_SECRET}" }}\n'

    data = redacted(load_settings(write_config(tmp_path, text)))

    assert data["github"]["token"] == MASK
    assert data["targets"][0]["checks"][1]["headers"] == {"Authorization": MASK}
    assert data["monitor"]["state_path"] == "monitor.db"
    json.dumps(data)  # plain data: the CLI prints it as JSON


# --- problems and their messages -------------------------------------------------------

DURATION_HINT = "use a number of seconds or a string such as 500ms, 30s, 15m, 1h"


def _with_monitor(lines: str) -> str:
    return f"[monitor]\n{lines}\n{ONE_TARGET}"


INVALID = [
    (
        "unknown-top-level-key",
        f"colour = 'blue'\n{ONE_TARGET}",
        ["colour: unknown key"],
    ),
    (
        "unknown-monitor-key",
        _with_monitor('intervall = "5m"'),
        ["monitor.intervall: unknown key"],
    ),
    (
        "unknown-key-spelled-like-a-type",
        _with_monitor("int = 5"),
        ["monitor.int: unknown key"],
    ),
    (
        "unknown-dotted-key",
        f'"a.b" = 1\n{ONE_TARGET}',
        ['"a.b": unknown key'],
    ),
    (
        "unknown-empty-key",
        f'"" = 1\n{ONE_TARGET}',
        ['"": unknown key'],
    ),
    (
        "unknown-key-with-newline",
        _with_monitor(r'"x\ny" = 1'),
        [r'monitor."x\ny": unknown key'],
    ),
    (
        "unknown-check-key",
        ONE_TARGET + "  retries = 3\n",
        ["targets[0].checks[1].retries: unknown key"],
    ),
    (
        "wrong-type",
        _with_monitor('open_after = "three"'),
        [
            "monitor.open_after: Input should be a valid integer, unable to parse string as an integer"
        ],
    ),
    (
        "section-not-a-table",
        f"monitor = 3\n{ONE_TARGET}",
        ["monitor: expected a table"],
    ),
    (
        "duration-in-words",
        _with_monitor('interval = "15 minutes"'),
        [f"monitor.interval: invalid duration '15 minutes': {DURATION_HINT}"],
    ),
    (
        "negative-duration",
        _with_monitor("interval = -5"),
        ["monitor.interval: duration must be positive, got -5"],
    ),
    (
        "zero-duration",
        _with_monitor('timeout = "0s"'),
        ["monitor.timeout: duration must be positive, got '0s'"],
    ),
    (
        "infinite-duration",
        _with_monitor("timeout = inf"),
        ["monitor.timeout: duration must be a finite number of seconds, got inf"],
    ),
    (
        "nan-duration",
        _with_monitor("timeout = nan"),
        ["monitor.timeout: duration must be a finite number of seconds, got nan"],
    ),
    (
        "huge-integer-duration",
        _with_monitor("timeout = 1" + "0" * 400),
        [f"monitor.timeout: duration is too large, got 1{'0' * 400}"],
    ),
    (
        "boolean-duration",
        _with_monitor("timeout = true"),
        ["monitor.timeout: expected a duration such as 30s, 15m or 1h, or a number of seconds"],
    ),
    (
        "negative-jitter",
        _with_monitor("jitter = -1"),
        ["monitor.jitter: duration must not be negative, got -1"],
    ),
    (
        "jitter-in-words",
        _with_monitor('jitter = "a bit"'),
        [f"monitor.jitter: invalid duration 'a bit': {DURATION_HINT}"],
    ),
    (
        "ftp-url",
        ONE_TARGET.replace("https://staging.example", "ftp://x"),
        ["targets[0].url: expected an http:// or https:// URL, got 'ftp://x'"],
    ),
    (
        "not-a-url",
        ONE_TARGET.replace("https://staging.example", "not a url"),
        ["targets[0].url: expected an http:// or https:// URL, got 'not a url'"],
    ),
    (
        "unclosed-ipv6-url",
        ONE_TARGET.replace("https://staging.example", "http://[::1"),
        ["targets[0].url: expected an http:// or https:// URL, got 'http://[::1'"],
    ),
    (
        "incomplete-jmespath",
        ONE_TARGET.replace("status == 'ok'", "status =="),
        [
            "targets[0].checks[1].conditions[0]: "
            "invalid JMESPath expression 'status ==': incomplete expression"
        ],
    ),
    (
        "jmespath-unexpected-token",
        ONE_TARGET.replace("status == 'ok'", "a..b"),
        [
            "targets[0].checks[1].conditions[0]: "
            "invalid JMESPath expression 'a..b': unexpected '.' at column 3"
        ],
    ),
    (
        "jmespath-unknown-character",
        ONE_TARGET.replace("status == 'ok'", "a ~ b"),
        [
            "targets[0].checks[1].conditions[0]: "
            "invalid JMESPath expression 'a ~ b': Unknown token ~ at column 3"
        ],
    ),
    (
        "jmespath-control-character",
        ONE_TARGET.replace("status == 'ok'", r"a \u0001"),
        [
            "targets[0].checks[1].conditions[0]: "
            r"invalid JMESPath expression 'a \x01': Unknown token \x01 at column 3"
        ],
    ),
    (
        "header-value-not-a-string",
        ONE_TARGET + '  headers = { "Content Type" = 1 }\n',
        ['targets[0].checks[1].headers."Content Type": Input should be a valid string'],
    ),
    (
        "jmespath-version",
        ONE_TARGET + '  version = "a["\n',
        ["targets[0].checks[1].version: invalid JMESPath expression 'a[': incomplete expression"],
    ),
    (
        "duplicate-target-name",
        ONE_TARGET + ONE_TARGET,
        ["targets[1].name: duplicate target name 'staging'"],
    ),
    (
        "duplicate-check-name",
        ONE_TARGET + SECOND_TARGET,
        ["targets[1].checks[1].name: duplicate check name 'health'"],
    ),
    (
        "expect-status-out-of-range",
        ONE_TARGET.replace("[200, 302]", "[200, 999]"),
        ["targets[0].checks[0].expect_status[1]: Input should be less than or equal to 599"],
    ),
    (
        "expect-status-empty",
        ONE_TARGET.replace("[200, 302]", "[]"),
        ["targets[0].checks[0].expect_status: must not be empty"],
    ),
    (
        "empty-targets",
        "targets = []\n",
        ["targets: must not be empty"],
    ),
    (
        "no-targets",
        '[monitor]\ninterval = "5m"\n',
        ["targets: required key is missing"],
    ),
    (
        "target-without-checks",
        '[[targets]]\nname = "a"\nurl = "https://a.example"\nchecks = []\n',
        ["targets[0].checks: must not be empty"],
    ),
    (
        "target-without-url",
        '[[targets]]\nname = "a"\n[[targets.checks]]\nname = "h"\n',
        ["targets[0].url: required key is missing"],
    ),
    (
        "listen-without-port",
        _with_monitor('listen = "localhost"'),
        ["monitor.listen: expected host:port, got 'localhost'"],
    ),
    (
        "listen-port-out-of-range",
        _with_monitor('listen = "0.0.0.0:99999"'),
        ["monitor.listen: port out of range in '0.0.0.0:99999'"],
    ),
    (
        "incident-interval-longer-than-interval",
        _with_monitor('interval = "1m"\nincident_interval = "5m"'),
        ["monitor.incident_interval: must not be longer than monitor.interval (300s > 60s)"],
    ),
    (
        "check-path-not-absolute",
        ONE_TARGET.replace('path = "/health"', 'path = "health"'),
        ["targets[0].checks[0].path: must start with '/', got 'health'"],
    ),
    (
        "repository-shape",
        f'[github]\nrepository = "acme"\n{ONE_TARGET}',
        ["github.repository: expected 'owner/name', got 'acme'"],
    ),
    (
        "status-page-unknown-target",
        f'[status_page]\ntargets = ["nope"]\n{ONE_TARGET}',
        ["status_page.targets[0]: no target named 'nope'"],
    ),
    (
        "several-schema-problems",
        '[monitor]\ninterval = "soon"\nbogus = 1\n'
        + ONE_TARGET.replace("https://staging.example", "ftp://x").replace("[200, 302]", "[99]"),
        [
            f"monitor.interval: invalid duration 'soon': {DURATION_HINT}",
            "monitor.bogus: unknown key",
            "targets[0].url: expected an http:// or https:// URL, got 'ftp://x'",
            "targets[0].checks[0].expect_status[0]: Input should be greater than or equal to 100",
        ],
    ),
    (
        "several-semantic-problems",
        _with_monitor('interval = "1m"\nincident_interval = "2m"') + ONE_TARGET,
        [
            "targets[1].name: duplicate target name 'staging'",
            "monitor.incident_interval: must not be longer than monitor.interval (120s > 60s)",
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in INVALID],
    ids=[case_id for case_id, _, _ in INVALID],
)
def test_invalid_configuration_is_reported_exactly(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    """Each problem is one line: the key path, a colon, what is wrong."""
    assert problems_of(write_config(tmp_path, text)) == expected


def test_token_without_repository_is_a_problem_for_the_daemon_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token alone cannot file issues: `run` refuses it, one-shot gates in CI do not care."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)

    settings = load_settings(write_config(tmp_path, ONE_TARGET))

    assert not settings.github.active
    assert daemon_problems(settings) == [
        "github.repository: required when a GitHub token is set"
        " (or set github.enabled = false to keep incidents in the journal)"
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MONITOR_GITHUB__LABELS": "incident"},
            "github: cannot read MONITOR_GITHUB__LABELS from the environment: "
            'lists and tables must be JSON, e.g. \'["a", "b"]\'',
        ),
        (
            {"MONITOR_TARGETS": "staging"},
            "targets: cannot read MONITOR_TARGETS from the environment: "
            'lists and tables must be JSON, e.g. \'["a", "b"]\'',
        ),
        (
            {"MONITOR_MONITOR__INTERVAL": "soon"},
            f"monitor.interval: invalid duration 'soon': {DURATION_HINT}",
        ),
        ({"MONITOR_MONITOR__NOPE": "1"}, "monitor.nope: unknown key"),
    ],
    ids=["list-not-json", "targets-not-json", "bad-duration", "unknown-nested-key"],
)
def test_bad_environment_override_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """A bad MONITOR_* variable is reported like a bad key, never as a crash."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert problems_of(write_config(tmp_path, ONE_TARGET)) == [expected]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "config: file not found: {path}"),
        (
            b"[monitor\n",
            "config: {path} is not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)",
        ),
        (
            b'interval = "5m\n',
            "config: {path} is not valid TOML: Illegal character '\\n' (at line 1, column 15)",
        ),
        (b"a = " + b"[" * 5000, "config: {path} is not valid TOML: nested too deeply"),
        (
            b"\xff\xfe[monitor]",
            "config: cannot read {path}: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
    ],
    ids=["missing-file", "syntax-error", "unterminated-string", "nested-too-deeply", "not-utf-8"],
)
def test_unreadable_file_is_one_problem(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    """A file that is missing, unreadable or not TOML is one problem naming the file."""
    path = tmp_path / "config.toml"
    if content is not None:
        path.write_bytes(content)

    assert problems_of(path) == [expected.format(path=path)]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A file saved with a UTF-8 BOM (Windows editors) loads like one without."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf" + ONE_TARGET.encode())

    assert load_settings(path).targets[0].name == "staging"


def test_a_url_pasted_with_spaces_around_it_is_taken_without_them(tmp_path: Path) -> None:
    """``" https://staging.example/ "`` is the URL without its spaces (and its trailing
    slash): httpx would read a leading space as a relative URL and fail every probe,
    though ``urlsplit``, which the check of the field uses, ignores it."""
    text = ONE_TARGET.replace('"https://staging.example"', '" https://staging.example/ "')
    settings = load_settings(write_config(tmp_path, text))

    assert settings.targets[0].url == "https://staging.example"


def test_config_error_message_is_every_problem() -> None:
    """str(ConfigError) is its problems, one per line, for logs and tracebacks alike."""
    error = ConfigError(["a: one", "b: two"])

    assert str(error) == "a: one\nb: two"
    assert error.problems == ["a: one", "b: two"]


# --- fuzz ------------------------------------------------------------------------------

_FUZZ_FILE = "fuzz.toml"


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for every generated file (hypothesis reruns the test body)."""
    return tmp_path_factory.mktemp("fuzz")


def _load_or_config_error(path: Path) -> None:
    try:
        result = load_settings(path)
    except ConfigError as exc:
        problems = exc.problems
    else:
        assert isinstance(result, Settings)
        return
    assert problems
    for problem in problems:
        assert ": " in problem  # "key.path: what is wrong"
        assert "\n" not in problem  # one line each: the CLI indents them


def _toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _toml_value(value: Any) -> str:
    """An inline TOML rendering of ``value`` (tomllib has no writer)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(type(value))


def to_toml(document: dict[str, Any]) -> str:
    """A TOML document whose top-level keys are ``document``'s, every value inline."""
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in document.items())


# A document using every section and most keys, for the mutation strategy below.
FULL = tomllib.loads(
    """
[monitor]
interval = "15m"
incident_interval = "1m"
timeout = "10s"
open_after = 3
listen = "0.0.0.0:9091"
jitter = 0
state_path = "monitor.db"
[github]
repository = "acme/web"
labels = ["incident"]
api_url = "https://api.github.com"
[status_page]
targets = ["staging"]
[[targets]]
name = "staging"
url = "https://staging.example"
slo = 0.995
  [[targets.checks]]
  name = "health"
  path = "/health"
  method = "GET"
  expect_status = [200, 302]
  conditions = ["status == 'ok'"]
  headers = { Authorization = "Bearer x" }
  version = "version"
  max_response_time = "2s"
"""
)

_KEYS = sorted(
    {"monitor", "github", "status_page", "targets", "checks", "token"}
    | set(FULL["monitor"])
    | set(FULL["github"])
    | set(FULL["targets"][0])
    | set(FULL["targets"][0]["checks"][0])
)
_keys = st.sampled_from(_KEYS) | st.text(max_size=10)
_scalars = (
    st.text(max_size=20)
    | st.sampled_from(["15m", "1h30m", "500ms", "0s", "-1s", "https://x.example", "a[", "x:1"])
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.booleans()
    | st.datetimes()
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.dates()
    | st.times()
)
_toml_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=20,
)
# Replacements inside a mutated document stay small: there are thirty places to put one.
_small_toml_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(_keys, children, max_size=2),
    max_leaves=4,
)


Location = tuple[str | int, ...]


def _containers(value: Any, location: Location = ()) -> Iterator[Location]:
    """Where the tables and arrays of ``value`` are."""
    if isinstance(value, dict):
        yield location
        for key, child in value.items():
            yield from _containers(child, (*location, key))
    elif isinstance(value, list):
        yield location
        for index, child in enumerate(value):
            yield from _containers(child, (*location, index))


def _mutated(mutations: list[tuple[Location, str | int, Any]]) -> dict[str, Any]:
    """FULL with each ``(container, key, value)`` set, adding or replacing that key."""
    document = copy.deepcopy(FULL)
    for location, key, value in mutations:
        container: Any = document
        try:
            for step in location:
                container = container[step]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this part of the document
        if isinstance(container, dict) and isinstance(key, str):
            container[key] = value
        elif isinstance(container, list) and isinstance(key, int):
            if key < len(container):
                container[key] = value
            else:
                container.append(value)
    return document


# A real-looking document with up to three keys added or replaced: mostly valid, so the
# mutations reach every validator and the cross-key checks behind them.
_mutated_documents = st.lists(
    st.tuples(
        st.sampled_from(list(_containers(FULL))),
        _keys | st.integers(min_value=0, max_value=2),
        _small_toml_values,
    ),
    max_size=3,
).map(_mutated)


_fuzz_settings = hypothesis.settings(
    max_examples=100,
    deadline=None,
    # the autouse environment fixture is idempotent, so sharing it across examples is fine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_fuzz_settings
@given(text=st.text())
def test_fuzz_arbitrary_text(fuzz_dir: Path, text: str) -> None:
    """Any text at all is either a configuration or a ConfigError, never a crash."""
    _load_or_config_error(write_config(fuzz_dir, text, _FUZZ_FILE))


@_fuzz_settings
@given(content=st.binary())
def test_fuzz_arbitrary_bytes(fuzz_dir: Path, content: bytes) -> None:
    """Any bytes at all (not UTF-8, NUL, BOM) are either a configuration or a ConfigError."""
    path = fuzz_dir / _FUZZ_FILE
    path.write_bytes(content)
    _load_or_config_error(path)


@_fuzz_settings
@given(document=st.dictionaries(_keys, _toml_values, max_size=6))
def test_fuzz_arbitrary_toml_documents(fuzz_dir: Path, document: dict[str, Any]) -> None:
    """Any valid TOML document is either a configuration or a ConfigError."""
    text = to_toml(document)
    tomllib.loads(text)  # the generator itself writes valid TOML
    _load_or_config_error(write_config(fuzz_dir, text, _FUZZ_FILE))


@_fuzz_settings
@given(document=_mutated_documents)
def test_fuzz_mutated_real_documents(fuzz_dir: Path, document: dict[str, Any]) -> None:
    """A real-looking document with any key replaced by any value never crashes the loader."""
    text = to_toml(document)
    tomllib.loads(text)
    _load_or_config_error(write_config(fuzz_dir, text, _FUZZ_FILE))


def test_mutation_base_document_is_valid(tmp_path: Path) -> None:
    """The fuzz base is itself a valid configuration, so mutations reach every validator."""
    settings = load_settings(write_config(tmp_path, to_toml(FULL)))

    assert settings.targets[0].checks[0].headers["Authorization"].get_secret_value() == "Bearer x"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[kpis]\nreport_every = "1d"', "kpis.report_every: "),
        ('[kpis]\ntest_workflows = ["ci"]', "kpis.test_workflows[0]: "),
        ('[kpis]\ntarget = "production"', "kpis.target: no target named 'production'"),
        ('[kpis]\nstaging_target = "stage"', "kpis.staging_target: no target named 'stage'"),
        ("[kpis.objectives]\nchange_failure_rate = 2", "kpis.objectives.change_failure_rate: "),
        ('[kpis.objectives]\nmttr_s = "soon"', "kpis.objectives.mttr_s: invalid duration"),
        ('[kpis]\nwindow = "30d"\nlookback = "7d"', "kpis: "),
        ('[kpis]\nrepository = "a/b"', "kpis.repository: "),
    ],
    ids=[
        "report-not-weekly",
        "workflow-not-a-file",
        "unknown-target",
        "unknown-staging",
        "ratio-over-1",
        "bad-duration",
        "lookback-short",
        "unknown-key",
    ],
)
def test_a_bad_kpis_section_is_named(tmp_path: Path, section: str, expected: str) -> None:
    """Each [kpis] mistake is one problem line naming its key."""
    problems = problems_of(write_config(tmp_path, section + "\n" + ONE_TARGET))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_kpi_workflows_are_file_names_whatever_the_path_given(tmp_path: Path) -> None:
    """`.github/workflows/ci.yml` and `ci.yml` name the same workflow file."""
    text = '[kpis]\ntest_workflows = [".github/workflows/ci.yml", "e2e.yaml"]\n' + ONE_TARGET
    settings = load_settings(write_config(tmp_path, text))
    assert settings.kpis.test_workflows == ["ci.yml", "e2e.yaml"]
    assert settings.kpis.staging(["staging"]) == "staging"
    assert settings.kpis.environment_target(["staging"]) is None
