"""``monitor config`` and the configuration side of ``monitor check``, run as the real CLI.

Every test starts ``python -m monitor`` in a fresh directory with a clean environment;
none of them probes a network host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOKEN = "ghp_sentinelCLIsentinelCLIsentinel0123456789"
HEADER_SECRET = "hdr-sentinel-cli-7d1e"

VALID = f"""
[github]
repository = "acme/web"

[[targets]]
name = "from-file"
url = "https://service.example"

  [[targets.checks]]
  name = "health"
  path = "/health"
  headers = {{ Authorization = "Bearer {HEADER_SECRET}" }}
"""

BAD = """
[monitor]
interval = "15 minutes"
colour = "blue"

[[targets]]
name = "staging"
url = "ftp://x"

  [[targets.checks]]
  name = "health"
  expect_status = [200, 999]
"""

INVALID_CONFIGURATION = "monitor: invalid configuration"


def run_monitor(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m monitor ARGS`` in ``cwd``, with no MONITOR_* or GITHUB_TOKEN but ``env``."""
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("MONITOR_") and name != "GITHUB_TOKEN"
    }
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("files", "args", "env", "stderr_lines"),
    [
        (
            {"bad.toml": BAD},
            ["config", "--config", "bad.toml"],
            {},
            [
                INVALID_CONFIGURATION,
                "  monitor.interval: invalid duration '15 minutes': use a number of seconds "
                "or a string such as 500ms, 30s, 15m, 1h",
                "  monitor.colour: unknown key",
                "  targets[0].url: expected an http:// or https:// URL, got 'ftp://x'",
                "  targets[0].checks[0].expect_status[1]: Input should be less than or equal to 599",
            ],
        ),
        (
            {},
            ["config", "--config", "missing.toml"],
            {},
            [INVALID_CONFIGURATION, "  config: file not found: missing.toml"],
        ),
        (
            {},
            ["config"],
            {"MONITOR_GITHUB__LABELS": "incident"},
            [
                INVALID_CONFIGURATION,
                "  github: cannot read MONITOR_GITHUB__LABELS from the environment: "
                'lists and tables must be JSON, e.g. \'["a", "b"]\'',
            ],
        ),
        (
            {},
            ["check", "--target", "nope"],
            {},
            ["monitor: unknown target in ['nope']; known: staging, production"],
        ),
    ],
    ids=["bad-file", "missing-file", "bad-env-json", "unknown-target"],
)
def test_bad_configuration_exits_2_with_one_line_per_problem(
    tmp_path: Path,
    files: dict[str, str],
    args: list[str],
    env: dict[str, str],
    stderr_lines: list[str],
) -> None:
    """Bad config or an unknown target: exit 2, the problems on stderr, no traceback."""
    for name, text in files.items():
        (tmp_path / name).write_text(text, "utf-8")

    result = run_monitor(tmp_path, *args, env=env)

    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == stderr_lines


def test_config_prints_json_with_secrets_masked(tmp_path: Path) -> None:
    """``monitor config`` prints the effective config as JSON; no secret reaches the output."""
    (tmp_path / "valid.toml").write_text(VALID, "utf-8")

    result = run_monitor(
        tmp_path,
        "config",
        "--config",
        "valid.toml",
        env={"GITHUB_TOKEN": TOKEN, "MONITOR_MONITOR__INTERVAL": "5m"},
    )

    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert TOKEN not in output
    assert HEADER_SECRET not in output
    config = json.loads(result.stdout)
    assert config["github"]["token"] == "***"
    assert config["github"]["repository"] == "acme/web"
    assert config["monitor"]["interval"] == 300.0
    assert config["targets"][0]["checks"][0]["headers"] == {"Authorization": "***"}


@pytest.mark.parametrize(
    ("files", "args", "env", "target_names"),
    [
        ({}, [], {}, ["staging", "production"]),
        ({"config.toml": VALID}, [], {}, ["from-file"]),
        (
            {"config.toml": VALID, "other.toml": VALID.replace("from-file", "from-env")},
            [],
            {"MONITOR_CONFIG": "other.toml"},
            ["from-env"],
        ),
    ],
    ids=[
        "embedded-defaults",
        "config.toml-in-cwd",
        "MONITOR_CONFIG-beats-cwd",
    ],
)
def test_config_file_selection(
    tmp_path: Path,
    files: dict[str, str],
    args: list[str],
    env: dict[str, str],
    target_names: list[str],
) -> None:
    """The CLI reads ``$MONITOR_CONFIG``, else ``./config.toml``, else the embedded file.

    The whole precedence order is pinned in-process by test_config.py; here it is the
    wiring through ``main`` that matters.
    """
    for name, text in files.items():
        (tmp_path / name).write_text(text, "utf-8")

    result = run_monitor(tmp_path, "config", *args, env=env)

    assert result.returncode == 0, result.stderr
    assert [t["name"] for t in json.loads(result.stdout)["targets"]] == target_names


CHANNEL_CONFIG = """
[monitor]
state_path = "state.db"
listen = "127.0.0.1:0"

[[targets]]
name = "production"
url = "http://127.0.0.1:9"

  [[targets.checks]]
  name = "health"

[[channels]]
name = "hooks"
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret_env = "HOOK_SECRET"
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {},
            "channels[0].secret_env: the environment variable HOOK_SECRET is not set",
            id="unset",
        ),
        pytest.param(
            {"HOOK_SECRET": "not-a-whsec-value-sentinel"},
            "channels[hooks].secret_env (HOOK_SECRET)",
            id="not-whsec",
        ),
    ],
)
def test_run_refuses_a_channel_that_could_not_page(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    """A channel whose secret is missing or malformed stops `monitor run` with exit 2 and
    one line naming the key; the value itself is never printed."""
    (tmp_path / "config.toml").write_text(CHANNEL_CONFIG, "utf-8")
    done = run_monitor(tmp_path, "run", env=env)
    assert done.returncode == 2, done.stderr
    assert INVALID_CONFIGURATION in done.stderr
    assert expected in done.stderr
    assert "not-a-whsec-value-sentinel" not in done.stderr + done.stdout
