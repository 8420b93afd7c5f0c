"""The real daemon as a subprocess, for end-to-end tests: start, wait, scrape, stop.

A :class:`DaemonProcess` runs ``python -m monitor run --config PATH`` with its
stdout and stderr in files (read back for assertion messages), waits for
``/healthz``, scrapes ``/metrics`` and parses it with prometheus-client's own
parser. :func:`wait_for` polls a condition against a deadline; nothing here
sleeps for a fixed long time. Every process is killed by :meth:`close`, which
the ``daemons`` fixture of the test module calls at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

T = TypeVar("T")
HOST = "127.0.0.1"
POLL_S = 0.05
TAIL_CHARS = 6000  # how much of each log an assertion message carries
DOCKERFILE = Path(__file__).resolve().parents[1] / "deploy" / "Dockerfile"


def image_python_flags() -> tuple[str, ...]:
    """The interpreter flags of the image's CMD (``python -OO -m monitor run``), so that
    an e2e test and bench/footprint.py can start the daemon as the image does."""
    (line,) = [
        line for line in DOCKERFILE.read_text("utf-8").splitlines() if line.startswith("CMD ")
    ]
    command = json.loads(line.removeprefix("CMD "))
    if command[:1] != ["python"] or command[-3:] != ["-m", "monitor", "run"]:
        raise ValueError(f"the image's CMD is not `python [flags] -m monitor run`: {command}")
    return tuple(command[1:-3])


def toml_value(value: object) -> str:
    """One TOML value from a Python value (str, bool, int, float, list)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def write_config(
    path: Path,
    *,
    target_url: str,
    listen_port: int,
    state_path: Path,
    github_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    target: str = "web",
    **monitor: object,
) -> Path:
    """The e2e config: one target with a ``health`` check, fast cadence, local GitHub."""
    settings: dict[str, object] = {
        "interval": 1,
        "incident_interval": 0.5,
        "timeout": 1,
        "open_after": 3,
        "close_after": 2,
        "reopen_window": "30s",
        "reminder_interval": "1h",
        "jitter": 0,
        "listen": f"{HOST}:{listen_port}",
        "state_path": state_path,
        "metrics_refresh": 1,
        "shutdown_grace": 2,
    }
    settings.update(monitor)
    lines = ["[monitor]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    if github_url is not None:
        lines += [
            "",
            "[github]",
            'repository = "acme/web"',
            f"api_url = {toml_value(github_url)}",
            "timeout = 5",
        ]
    lines += [
        "",
        "[[targets]]",
        f"name = {toml_value(target)}",
        f"url = {toml_value(target_url)}",
        "",
        "[[targets.checks]]",
        'name = "health"',
        'path = "/health"',
    ]
    if headers:
        lines += ["", "[targets.checks.headers]"]
        lines += [f"{toml_value(name)} = {toml_value(value)}" for name, value in headers.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MONITOR_* or GITHUB_TOKEN, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MONITOR_") and k != "GITHUB_TOKEN"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_monitor(*args: str, timeout_s: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m monitor ARGS`` to completion, in :func:`clean_env` plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=clean_env(**env),
        check=False,
    )


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8")


class DaemonProcess:
    """One run of ``monitor run``; its logs live in ``workdir/<name>.stdout|.stderr``."""

    def __init__(
        self,
        config: Path,
        workdir: Path,
        env: Mapping[str, str],
        name: str = "daemon",
        python_flags: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.python_flags = tuple(python_flags)  # e.g. image_python_flags()
        self.workdir = workdir
        self.env = dict(env)
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.port = int(_listen_port(config.read_text("utf-8")))
        self.base_url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    # -- lifecycle

    def start(self) -> DaemonProcess:
        """Spawn the daemon (does not wait for it)."""
        out = self.stdout_path.open("wb")
        err = self.stderr_path.open("wb")
        self._files = [out, err]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *self.python_flags,
                "-m",
                "monitor",
                "run",
                "--config",
                str(self.config),
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.workdir,
        )
        return self

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM: the graceful stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap: no chance to clean up, like a power cut."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._close_files()

    def wait(self, timeout_s: float) -> int:
        """The exit code; AssertionError with the logs if it does not exit in time."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout_s} s\n{self.logs()}"
            ) from None
        self._close_files()
        return code

    def close(self) -> None:
        """Kill if still running and release the log files (fixture teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._close_files()

    def _close_files(self) -> None:
        for handle in self._files:
            handle.close()
        self._files = []

    # -- what it says

    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return self.stdout_path.read_text("utf-8", errors="replace")

    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return self.stderr_path.read_text("utf-8", errors="replace")

    def logs(self) -> str:
        """The tails of stdout and stderr, for assertion messages."""
        exit_note = ""
        if self.proc is not None and self.proc.poll() is not None:
            exit_note = f" (exited {self.proc.returncode})"
        return (
            f"--- {self.name}{exit_note} stdout ({self.stdout_path}) ---\n"
            f"{self.stdout()[-TAIL_CHARS:]}\n"
            f"--- {self.name} stderr ({self.stderr_path}) ---\n{self.stderr()[-TAIL_CHARS:]}"
        )

    def log_records(self) -> list[dict[str, Any]]:
        """stdout parsed as one JSON object per line; AssertionError on any other line."""
        records = []
        for number, line in enumerate(self.stdout().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(
                    f"{self.name} stdout line {number} is not JSON: {line!r}\n{self.logs()}"
                ) from None
            assert isinstance(record, dict), f"line {number} is not an object: {line!r}"
            records.append(record)
        return records

    def events(self, event: str) -> list[dict[str, Any]]:
        """The log records whose ``event`` is exactly ``event``."""
        return [r for r in self.log_records() if r.get("event") == event]

    # -- its HTTP side

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of ``/healthz``."""
        code, body = http_get(self.base_url + "/healthz")
        return code, json.loads(body)

    def wait_healthy(self, timeout_s: float = 15.0) -> dict[str, Any]:
        """Wait until ``/healthz`` answers 200; its JSON body."""

        def ready() -> dict[str, Any] | None:
            if not self.running:
                raise AssertionError(f"{self.name} exited during start-up\n{self.logs()}")
            try:
                code, body = self.healthz()
            except (OSError, ValueError):
                return None
            return body if code == 200 else None

        return wait_for(ready, timeout_s, f"{self.name}: /healthz 200", self.logs)

    def api_status(self) -> dict[str, Any]:
        """The JSON of ``/api/status`` (asserting a 200)."""
        code, body = http_get(self.base_url + "/api/status")
        assert code == 200, f"/api/status answered {code}: {body[:500]}"
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics_text(self) -> str:
        """The raw ``/metrics`` exposition."""
        code, body = http_get(self.base_url + "/metrics")
        assert code == 200, f"/metrics answered {code}: {body[:500]}"
        return body

    def samples(self) -> list[Sample]:
        """Every sample of ``/metrics``, parsed by prometheus-client."""
        text = self.metrics_text()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def families(self) -> dict[str, str]:
        """Metric family name -> type (``counter``, ``histogram``, ``gauge`` ...)."""
        return {f.name: f.type for f in text_string_to_metric_families(self.metrics_text())}

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the sample ``name`` whose labels include ``labels``; None if absent."""
        return sample_value(self.samples(), name, **labels)


def sample_value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The first sample called ``name`` with at least ``labels``; None when there is none."""
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def _listen_port(config_text: str) -> str:
    for line in config_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "listen":
            return value.strip().strip('"').rpartition(":")[2]
    raise ValueError("the config has no monitor.listen")


def wait_for(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}{extra}")
        time.sleep(POLL_S)


class Daemons:
    """Starts daemons for one test and kills every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[DaemonProcess] = []

    def start(
        self, config: Path, env: Mapping[str, str], python_flags: Sequence[str] = ()
    ) -> DaemonProcess:
        """Start a daemon on ``config``; its logs are numbered by start order."""
        name = f"daemon-{len(self.started) + 1}"
        daemon = DaemonProcess(config, self.workdir, env, name, python_flags)
        self.started.append(daemon)
        return daemon.start()

    def logs(self) -> str:
        """The logs of every daemon started so far, oldest first."""
        return "\n".join(d.logs() for d in self.started)

    def close(self) -> None:
        """Kill whatever still runs."""
        for daemon in self.started:
            daemon.close()

    @classmethod
    @contextlib.contextmanager
    def session(cls, workdir: Path) -> Iterator[Daemons]:
        """``with Daemons.session(tmp_path) as daemons:`` kills them all on the way out."""
        daemons = cls(workdir)
        try:
            yield daemons
        finally:
            daemons.close()
