"""Logging: one JSON object per line, stdlib routed in, secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from monitor.incidents.channels.github import _import_pygithub
from monitor.logs import REDACTED, configure, get_logger, secrets

SECRET = "s3cr3t-header-value-0123456789"
TOKEN = "ghp_" + "A" * 36


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """Register the sentinel secret for one test."""
    secrets.add([SECRET])
    yield
    secrets.clear()


def capture(fmt: str) -> io.StringIO:
    """Configure logging into a buffer."""
    buffer = io.StringIO()
    configure(fmt, stream=buffer)  # type: ignore[arg-type]
    return buffer


def emit_everything() -> None:
    """A structlog line, a stdlib line and a traceback, each carrying secrets."""
    get_logger("monitor.test", target="production").info("probe", detail=f"echoed {SECRET}")
    logging.getLogger("github.Requester").warning("Authorization: token %s", TOKEN)
    try:
        raise RuntimeError(f"failed with {SECRET} and Bearer {TOKEN}")
    except RuntimeError:
        get_logger("monitor.test").exception("crash")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_the_output(fmt: str, capfd: pytest.CaptureFixture[str]) -> None:
    """Registered secrets and token-shaped strings are masked in events, stdlib lines and tracebacks."""
    buffer = capture(fmt)
    emit_everything()
    out = buffer.getvalue()
    assert SECRET not in out
    assert TOKEN not in out
    assert REDACTED in out
    assert "RuntimeError" in out  # the traceback is there, redacted
    stray = capfd.readouterr()  # nothing may bypass the pipeline to the real stdout/stderr
    assert TOKEN not in stray.out + stray.err
    assert SECRET not in stray.out + stray.err


def test_json_lines_are_one_object_each_and_cannot_be_forged() -> None:
    """Each line parses as one JSON object; a newline in a value cannot start a fake line."""
    buffer = capture("json")
    emit_everything()
    get_logger("monitor.test").warning(
        "probe", detail='x"}\n{"event": "forged", "level": "critical"'
    )
    lines = buffer.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    assert not any(r.get("event") == "forged" for r in records)
    probe = records[0]
    assert probe["target"] == "production"
    assert probe["ts"].endswith("Z")
    assert probe["level"] == "info"
    stdlib = records[1]
    assert stdlib["logger"] == "github.Requester"


def test_tracebacks_carry_no_local_variables() -> None:
    """A traceback lists frames, never the values of local variables (which may hold secrets)."""
    buffer = capture("json")

    def fail(unregistered_password: str) -> None:
        raise ValueError("bad")

    try:
        fail("hunter2-not-registered")
    except ValueError:
        get_logger("monitor.test").exception("crash")
    assert "hunter2-not-registered" not in buffer.getvalue()


def test_pygithub_records_go_through_our_pipeline_only() -> None:
    """PyGithub's own stderr handler, attached as it is imported, is detached by the
    sink's import of it (lazy, on first use): its lines are ours, JSON and redacted."""
    _import_pygithub()
    assert logging.getLogger("github").handlers == []
    buffer = capture("json")
    logging.getLogger("github.Requester").warning("Authorization: token %s", TOKEN)
    [record] = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert record["event"] == f"Authorization: token {REDACTED}"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("token " + "a" * 16, f"token {REDACTED}"),  # the shortest text that holds one
        ("Bearer " + "b" * 16, f"Bearer {REDACTED}"),
        ("token " + "a" * 15, "token " + "a" * 15),  # one short: not a token
        ("ab" + SECRET[:20], "ab" + SECRET[:20]),  # a part of a secret is not the secret
        ("x" + SECRET, f"x{REDACTED}"),
    ],
)
def test_redaction_at_the_shortest_token(text: str, redacted: str) -> None:
    """Texts too short to hold a token skip the token patterns, and only those."""
    assert secrets.redact(text) == redacted
