"""``monitor notify``, the command release workflows call: a real process, a real
PagerDuty Events API receiver on 127.0.0.1, and the exit codes a workflow step reads."""

from __future__ import annotations

from pathlib import Path

from tests.receivers_pagerduty_slack import PD_ROUTING_KEY, FakePagerDuty, status
from tests.test_cli_config import run_monitor

CONFIG = """
[[targets]]
name = "production"
url = "http://127.0.0.1:9"

  [[targets.checks]]
  name = "health"

[[channels]]
name = "oncall"
type = "pagerduty"
url = "{url}"
secret_env = "PD_ROUTING_KEY"
"""


def _config(tmp_path: Path, pagerduty: FakePagerDuty) -> None:
    (tmp_path / "config.toml").write_text(CONFIG.format(url=pagerduty.endpoint), "utf-8")


def test_notify_sends_and_exits_0_only_when_the_service_accepted(tmp_path: Path) -> None:
    """A one-off message and a marked test reach PagerDuty (exit 0); a refusal exits 1
    naming the channel; an unknown channel exits 2; the key is never printed."""
    with FakePagerDuty() as pagerduty:
        _config(tmp_path, pagerduty)
        env = {"PD_ROUTING_KEY": PD_ROUTING_KEY}

        sent = run_monitor(
            tmp_path, "notify", "--channel", "oncall", "--title", "Deployed abc123",
            "--body", "by octocat; healthy", env=env,
        )  # fmt: skip
        test = run_monitor(tmp_path, "notify", "test", "--channel", "oncall", env=env)
        pagerduty.inject(
            status(400, {"status": "invalid event", "message": "Event object is invalid"})
        )
        refused = run_monitor(tmp_path, "notify", "test", "--channel", "oncall", env=env)
        unknown = run_monitor(tmp_path, "notify", "test", "--channel", "nobody", env=env)

        assert pagerduty.violations == []
    assert (sent.returncode, sent.stdout) == (0, "oncall: sent\n"), sent.stderr
    assert (test.returncode, test.stdout) == (0, "oncall: sent\n"), test.stderr
    assert refused.returncode == 1
    assert refused.stdout.startswith("oncall: NOT sent (rejected): 400 from PagerDuty")
    assert unknown.returncode == 2
    assert "unknown channel nobody; configured: oncall" in unknown.stderr
    for done in (sent, test, refused, unknown):
        assert PD_ROUTING_KEY not in done.stdout + done.stderr


def test_notify_without_the_key_is_a_configuration_error(tmp_path: Path) -> None:
    """The variable secret_env names is unset: exit 2, naming it, nothing sent."""
    with FakePagerDuty() as pagerduty:
        _config(tmp_path, pagerduty)
        done = run_monitor(tmp_path, "notify", "test", "--channel", "oncall")
        assert pagerduty.requests == []
    assert done.returncode == 2
    assert "the environment variable PD_ROUTING_KEY is not set" in done.stderr
