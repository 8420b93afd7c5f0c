"""The configuration of several instances: the database, the region, the instance's name
and the quorum, from the file, ``MONITOR_*`` and the platform's variables (Fly's
DATABASE_URL, FLY_REGION and FLY_MACHINE_ID), and the database URL kept secret."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.config import MASK, ConfigError, Settings, load_settings, redacted, secret_values

PLATFORM = ("DATABASE_URL", "FLY_REGION", "FLY_MACHINE_ID", "GITHUB_TOKEN")
PASSWORD = "pgSentinelPW7c41"
DATABASE_URL = f"postgresql://monitor:{PASSWORD}@db.internal:5432/monitor"

ONE_TARGET = """
[[targets]]
name = "staging"
url = "https://staging.example"

  [[targets.checks]]
  name = "health"
  path = "/health"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MONITOR_* or platform variable from the developer's shell (or from Fly) leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("MONITOR_") or name in PLATFORM:
            monkeypatch.delenv(name)


def load(directory: Path, monitor: str = "") -> Settings:
    """The settings of a file with ``monitor`` as its ``[monitor]`` table and one target."""
    path = directory / "config.toml"
    path.write_text(f"[monitor]\n{monitor}\n{ONE_TARGET}", "utf-8")
    return load_settings(path)


def problems(directory: Path, monitor: str = "") -> list[str]:
    """The problems ConfigError reports for that file."""
    with pytest.raises(ConfigError) as caught:
        load(directory, monitor)
    return caught.value.problems


# ---- the region -----------------------------------------------------------------------


def test_region_defaults_to_local(tmp_path: Path) -> None:
    """A lone instance without Fly is the region "local"."""
    assert load(tmp_path).monitor.region == "local"


@pytest.mark.parametrize(
    ("file", "env", "region"),
    [
        ("", {"FLY_REGION": "ord"}, "ord"),
        ('region = "ams"', {"FLY_REGION": "ord"}, "ams"),
        ("", {"FLY_REGION": "ord", "MONITOR_MONITOR__REGION": "sin"}, "sin"),
        ('region = "ams"', {"FLY_REGION": "ord", "MONITOR_MONITOR__REGION": "sin"}, "sin"),
        ('region = "ams"', {"MONITOR_MONITOR__REGION": "sin"}, "sin"),
        ("", {"FLY_REGION": ""}, "local"),
        ("", {"FLY_REGION": "ord", "MONITOR_MONITOR__REGION": ""}, "ord"),
    ],
    ids=[
        "FLY_REGION-fills-it",
        "file-beats-FLY_REGION",
        "MONITOR-beats-FLY_REGION",
        "MONITOR-beats-file-and-FLY_REGION",
        "MONITOR-beats-file",
        "empty-FLY_REGION-is-unset",
        "empty-MONITOR-is-unset",
    ],
)
def test_region_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, env: dict[str, str], region: str
) -> None:
    """MONITOR_MONITOR__REGION, then the file, then FLY_REGION, then "local"."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert load(tmp_path, file).monitor.region == region


def test_bad_region_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A region that cannot name a row or a label is refused, whoever set it."""
    monkeypatch.setenv("FLY_REGION", "a b")

    assert [p.split(":")[0] for p in problems(tmp_path)] == ["monitor.region"]


# ---- the database ---------------------------------------------------------------------


def test_no_database_by_default(tmp_path: Path) -> None:
    """Without a URL the instance keeps its SQLite file: a lone instance, as before."""
    assert load(tmp_path).monitor.database_url is None


@pytest.mark.parametrize(
    ("file", "env", "expected"),
    [
        ("", {"DATABASE_URL": DATABASE_URL}, DATABASE_URL),
        (
            'database_url = "postgres://file@h/db"',
            {"DATABASE_URL": DATABASE_URL},
            "postgres://file@h/db",
        ),
        (
            "",
            {
                "DATABASE_URL": DATABASE_URL,
                "MONITOR_MONITOR__DATABASE_URL": "postgresql://env@h/db",
            },
            "postgresql://env@h/db",
        ),
        ('database_url = ""', {}, None),
        ("", {"DATABASE_URL": ""}, None),
    ],
    ids=[
        "DATABASE_URL-fills-it",
        "file-beats-DATABASE_URL",
        "MONITOR-beats-DATABASE_URL",
        "blank-in-file-is-none",
        "empty-DATABASE_URL-is-unset",
    ],
)
def test_database_url_sources(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file: str,
    env: dict[str, str],
    expected: str | None,
) -> None:
    """DATABASE_URL (Fly's attached Postgres) fills monitor.database_url when nothing else
    sets it."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    url = load(tmp_path, file).monitor.database_url

    assert (None if url is None else url.get_secret_value()) == expected


BAD_URL = f"mysql://monitor:{PASSWORD}@db.internal/monitor"


@pytest.mark.parametrize("source", ["file", "DATABASE_URL", "MONITOR"])
def test_non_postgres_url_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """A URL that is not postgresql:// is one problem naming monitor.database_url; neither
    the URL nor its password is in the message."""
    file = ""
    if source == "file":
        file = f'database_url = "{BAD_URL}"'
    elif source == "DATABASE_URL":
        monkeypatch.setenv("DATABASE_URL", BAD_URL)
    else:
        monkeypatch.setenv("MONITOR_MONITOR__DATABASE_URL", BAD_URL)

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, file)

    assert caught.value.problems == ["monitor.database_url: expected a postgresql:// URL"]
    message = str(caught.value) + repr(caught.value)
    assert PASSWORD not in message
    assert "mysql" not in message


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_schemes_are_accepted(tmp_path: Path, scheme: str) -> None:
    """Both spellings libpq (and Fly) use."""
    url = f"{scheme}://u:p@h:5432/db"

    settings = load(tmp_path, f'database_url = "{url}"')

    assert settings.monitor.database_url is not None
    assert settings.monitor.database_url.get_secret_value() == url


# ---- the quorum -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "quorum"),
    [("", "majority"), ('quorum = "majority"', "majority"), ("quorum = 1", 1), ("quorum = 5", 5)],
    ids=["default", "majority", "one", "five"],
)
def test_quorum_accepts_majority_and_counts(tmp_path: Path, file: str, quorum: object) -> None:
    """ "majority" by default; any count of at least one."""
    assert load(tmp_path, file).monitor.quorum == quorum


@pytest.mark.parametrize(
    ("value", "quorum"), [("3", 3), ("majority", "majority")], ids=["count", "majority"]
)
def test_quorum_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, quorum: object
) -> None:
    """MONITOR_MONITOR__QUORUM is a string: a count becomes a number."""
    monkeypatch.setenv("MONITOR_MONITOR__QUORUM", value)

    assert load(tmp_path, 'quorum = "majority"').monitor.quorum == quorum


@pytest.mark.parametrize(
    "value", ["0", "-1", '"most"', '""', "101"], ids=["zero", "negative", "most", "empty", "101"]
)
def test_bad_quorum_names_the_key(tmp_path: Path, value: str) -> None:
    """Every problem of a bad quorum names monitor.quorum."""
    found = problems(tmp_path, f"quorum = {value}")

    assert found
    assert all(p.startswith("monitor.quorum: ") for p in found), found


def test_min_regions_defaults_to_one_and_refuses_zero(tmp_path: Path) -> None:
    """One fresh region is enough unless told otherwise; zero would decide on nothing."""
    assert load(tmp_path).monitor.min_regions == 1
    assert load(tmp_path, "min_regions = 2").monitor.min_regions == 2
    assert [p.split(":")[0] for p in problems(tmp_path, "min_regions = 0")] == [
        "monitor.min_regions"
    ]


# ---- the instance ---------------------------------------------------------------------


def test_instance_id_is_the_fly_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Fly the instance is its machine."""
    monkeypatch.setenv("FLY_MACHINE_ID", "148e21ea7e1289")
    monkeypatch.setenv("FLY_REGION", "ams")

    monitor = load(tmp_path).monitor

    assert (monitor.instance, monitor.instance_id) == ("148e21ea7e1289", "148e21ea7e1289")


def test_instance_id_is_host_and_region_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off Fly: the host name and the region."""
    monkeypatch.setenv("FLY_REGION", "ord")

    monitor = load(tmp_path).monitor

    assert monitor.instance is None
    assert monitor.instance_id == f"{socket.gethostname()}-ord"
    assert load(tmp_path, 'region = "ams"').monitor.instance_id == f"{socket.gethostname()}-ams"


def test_instance_in_the_file_beats_fly_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit name wins, like every other platform default."""
    monkeypatch.setenv("FLY_MACHINE_ID", "148e21ea7e1289")

    assert load(tmp_path, 'instance = "blue"').monitor.instance_id == "blue"


# ---- secrets --------------------------------------------------------------------------


def test_secret_values_hold_the_url_and_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log redactor learns the whole URL and the password on its own (a driver may
    print either)."""
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)

    values = secret_values(load(tmp_path))

    assert DATABASE_URL in values
    assert PASSWORD in values


def test_secret_values_hold_an_encoded_password_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password with URL-encoded characters is masked as written and as decoded."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://monitor:p%40ss%2Fw0rd@db.internal/monitor")

    values = secret_values(load(tmp_path))

    assert "p%40ss%2Fw0rd" in values
    assert "p@ss/w0rd" in values


def test_secret_values_without_a_password(tmp_path: Path) -> None:
    """A URL without a password (peer or certificate auth) is still secret; nothing empty is."""
    url = "postgresql://monitor@db.internal/monitor"

    values = secret_values(load(tmp_path, f'database_url = "{url}"'))

    assert values == [url]


def test_without_a_database_nothing_secret(tmp_path: Path) -> None:
    """No token, headers or URL: no secret values."""
    assert secret_values(load(tmp_path)) == []


@pytest.mark.parametrize(
    "render",
    [lambda s: json.dumps(redacted(s)), str, repr, lambda s: s.model_dump_json()],
    ids=["redacted", "str", "repr", "model_dump_json"],
)
def test_database_url_is_never_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, render: Callable[[Settings], str]
) -> None:
    """Neither the URL nor its password shows in any rendering of the settings."""
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    settings = load(tmp_path)

    rendered = render(settings)

    assert PASSWORD not in rendered
    assert "db.internal" not in rendered


def test_redacted_masks_the_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """redacted() shows that a database is set, not which."""
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    monkeypatch.setenv("FLY_REGION", "ams")

    data = redacted(load(tmp_path))

    assert data["monitor"]["database_url"] == MASK
    assert (data["monitor"]["region"], data["monitor"]["quorum"]) == ("ams", "majority")


def test_redacted_without_a_database(tmp_path: Path) -> None:
    """No database: the key is there, and null."""
    assert redacted(load(tmp_path))["monitor"]["database_url"] is None


# ---- the CLI --------------------------------------------------------------------------


def run_config(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m monitor config`` in ``cwd`` with no MONITOR_* or platform variable but
    ``env``."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("MONITOR_") and name not in PLATFORM
    }
    return subprocess.run(
        [sys.executable, "-m", "monitor", "config"],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_config_never_shows_the_database_password(tmp_path: Path) -> None:
    """``monitor config`` on Fly: the region and the machine show, the database URL is
    masked, and its password is nowhere in the output."""
    (tmp_path / "config.toml").write_text(ONE_TARGET, "utf-8")

    result = run_config(
        tmp_path,
        {"DATABASE_URL": DATABASE_URL, "FLY_REGION": "ams", "FLY_MACHINE_ID": "148e21ea7e1289"},
    )

    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert DATABASE_URL not in output
    monitor = json.loads(result.stdout)["monitor"]
    assert monitor["database_url"] == MASK
    assert (monitor["region"], monitor["instance"]) == ("ams", "148e21ea7e1289")


def test_cli_config_refuses_a_bad_url_without_echoing_it(tmp_path: Path) -> None:
    """A bad DATABASE_URL: exit 2, the key named, the value (and password) nowhere."""
    (tmp_path / "config.toml").write_text(ONE_TARGET, "utf-8")

    result = run_config(tmp_path, {"DATABASE_URL": BAD_URL})

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "monitor: invalid configuration",
        "  monitor.database_url: expected a postgresql:// URL",
    ]
    assert PASSWORD not in result.stdout + result.stderr
