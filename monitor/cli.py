"""The ``monitor`` command: run, check, config, demo, store copy (and the release-pipeline
verbs: check, verify, notify, maintenance).

Exit codes are part of the interface: 0 healthy/done, 1 a check, an SLO or a
store copy failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TextIO

from monitor import __version__
from monitor.config import (
    ConfigError,
    Settings,
    daemon_problems,
    load_settings,
    parse_duration,
    redacted,
    resolve_config_path,
    secret_values,
)
from monitor.heap import defer_import, freeze_startup_objects
from monitor.logs import configure, secrets

if TYPE_CHECKING:  # the gates' modules load only when a gate runs
    from monitor.release.check import IncidentGate

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, shared by ``main`` and the docs test."""
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Production monitor: probes, metrics, incident issues and SLO figures.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument(
        "--log-format", choices=["auto", "json", "console"], default="auto"
    )
    logging_options.add_argument("--log-level", default="INFO")
    common = argparse.ArgumentParser(add_help=False, parents=[logging_options])
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $MONITOR_CONFIG, ./config.toml, embedded)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", parents=[common], help="run the daemon")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="probe once; exit 0 if every check is up or degraded, 1 if any is down",
    )
    check.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--wait",
        type=_duration_arg,
        default=0.0,
        metavar="DURATION",
        help="retry until healthy for up to this long (e.g. 5m)",
    )
    check.add_argument(
        "--retry-every",
        type=_duration_arg,
        default=10.0,
        metavar="DURATION",
        help="pause between attempts with --wait (default 10s)",
    )
    check.add_argument(
        "--no-open-incident",
        action="store_true",
        help="also fail while an incident is open for a target (asks --monitor-url, else"
        " GitHub's open issues with the incident and target labels)",
    )
    check.add_argument(
        "--monitor-url",
        metavar="URL",
        help="the running daemon whose /api/status says which incidents are open",
    )

    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="post-deploy verification: probe for a while; exit 1 if the failure rule trips (roll back)",
    )
    verify.add_argument("--target", required=True, metavar="NAME")
    verify.add_argument(
        "--duration",
        type=_duration_arg,
        default=300.0,
        metavar="DURATION",
        help="how long to watch (default 5m)",
    )
    verify.add_argument(
        "--interval",
        type=_duration_arg,
        default=None,
        metavar="DURATION",
        help="probe cadence (default: monitor.incident_interval)",
    )
    verify.add_argument(
        "--file-incident",
        action="store_true",
        help="on failure, open the incident issue (the daemon adopts it)",
    )
    verify.add_argument("--json", action="store_true", help="print JSON instead of running lines")

    sub.add_parser(
        "config", parents=[common], help="validate and print the effective config, secrets masked"
    )

    report = sub.add_parser(
        "report",
        parents=[common],
        help="uptime, SLO, MTTR and deployment figures from stored history",
    )
    report.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    report.add_argument(
        "--window",
        default=None,
        metavar="DURATION",
        help="e.g. 7d, 30d (default: monitor.slo_window)",
    )
    report.add_argument(
        "--since", type=_parse_when, metavar="DATE", help="window start (ISO date or time, UTC)"
    )
    report.add_argument(
        "--until", type=_parse_when, metavar="DATE", help="window end (default: now)"
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument(
        "--check-slo", action="store_true", help="exit 1 when an SLO or MTTR objective is missed"
    )

    kpis = sub.add_parser(
        "kpis",
        parents=[common],
        help="the seed's KPI table (DORA and pipeline quality) from GitHub and the monitor",
    )
    kpis.add_argument(
        "--window", default=None, metavar="DURATION", help="e.g. 7d, 30d (default: kpis.window)"
    )
    kpis.add_argument(
        "--since", type=_parse_when, metavar="DATE", help="window start (ISO date or time, UTC)"
    )
    kpis.add_argument("--until", type=_parse_when, metavar="DATE", help="window end (default: now)")
    kpis.add_argument("--json", action="store_true", help="print JSON instead of a table")
    kpis.add_argument(
        "--check", action="store_true", help="exit 1 when a KPI with data misses its objective"
    )
    kpis.add_argument(
        "--offline", action="store_true", help="read only the store: no sync with GitHub first"
    )

    store = sub.add_parser(
        "store", help="the state database itself (no config file needed)"
    ).add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")
    copy = store.add_parser(
        "copy",
        parents=[logging_options],
        help="copy a whole state database into an empty one (SQLite to PostgreSQL)",
        description=(
            "Copy every table of one state database into an empty one, in one"
            " transaction: a refusal or a failure leaves the destination as it was. Both are"
            " first brought to this monitor's schema, so a SQLite file of an older release"
            " (schema version 1 or 2) is upgraded in place before it is read. Every row"
            " keeps its id; the leadership row is not copied (the new cluster elects its"
            " own leader). Stop every monitor using either database first."
        ),
    )
    copy.add_argument(
        "--from",
        dest="source",
        required=True,
        type=_store_url_arg,
        metavar="URL",
        help="sqlite:///PATH (a relative path; sqlite:////PATH for an absolute one; an older"
        " file is upgraded in place first) or postgresql://USER@HOST/DB",
    )
    copy.add_argument(
        "--to",
        dest="dest",
        required=True,
        type=_store_url_arg,
        metavar="URL",
        help="an empty database: postgresql://USER@HOST/DB (or sqlite:///PATH for a backup)",
    )

    notify = sub.add_parser(
        "notify",
        parents=[common],
        help="send a one-off message to configured channels (exit 0 only if all accepted)",
    )
    notify.add_argument(
        "action", nargs="?", choices=["test"], help="test: send a clearly marked test message"
    )
    notify.add_argument(
        "--channel", action="append", required=True, metavar="NAME", help="repeatable"
    )
    notify.add_argument("--title", help="the message's title (required unless test)")
    notify.add_argument("--body", help="the message's text (required unless test)")
    notify.add_argument(
        "--severity", choices=["info", "warning", "error", "critical"], default="info"
    )

    maintenance = sub.add_parser(
        "maintenance",
        parents=[common],
        help="open or end a maintenance window on the running daemon (MONITOR_API_TOKEN)",
    )
    maintenance.add_argument("action", choices=["start", "end"])
    maintenance.add_argument("--target", required=True, metavar="NAME")
    maintenance.add_argument(
        "--for",
        dest="duration",
        type=_duration_arg,
        metavar="DURATION",
        help="how long (start; e.g. 15m): the window ends by itself even if nobody ends it",
    )
    maintenance.add_argument("--reason", default="maintenance", help="shown on the status page")
    maintenance.add_argument(
        "--monitor-url",
        metavar="URL",
        help="the daemon (default: $MONITOR_URL, else the local monitor.listen)",
    )

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run against an embedded sample service that breaks and heals",
    )
    demo.add_argument("--listen", default="127.0.0.1:9091", help="address of /metrics and /status")
    demo.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `monitor config | head`: the reader left; that is not our failure
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The daemon logs to stdout (Fly collects it); one-shot commands keep stdout for
    # their answer and log to stderr.
    log_stream = sys.stdout if args.command in ("run", "demo") else sys.stderr
    configure(args.log_format, args.log_level, stream=log_stream)
    if args.command == "demo":
        from monitor.demo import run_demo  # imported late: only the demo needs it

        return run_demo(listen=args.listen, duration_s=args.duration)
    if args.command == "store":  # no configuration: the URLs say everything
        return _store_copy(args.source, args.dest, sys.stdout, sys.stderr)
    try:
        settings = load_settings(resolve_config_path(args.config, os.environ))
    except ConfigError as exc:
        return _config_failure(exc, sys.stderr)
    secrets.add(secret_values(settings))  # every command's logs and output are redacted
    if args.command == "run":
        problems = daemon_problems(settings)
        if problems:
            return _config_failure(ConfigError(problems), sys.stderr)
        return _run(settings)
    if args.command == "check":
        from monitor.release.check import run_check  # httpx and the probe load only for the gates

        narrowed = select_targets(settings, args.target)
        if narrowed is None:
            return _unknown_target(settings, args.target)
        if args.monitor_url and not args.no_open_incident:
            sys.stderr.write("monitor: --monitor-url only serves --no-open-incident\n")
            return EXIT_CONFIG
        freeze_startup_objects()
        return run_check(
            narrowed,
            as_json=args.json,
            wait_s=args.wait,
            retry_every_s=args.retry_every,
            out=sys.stdout,
            progress=sys.stderr,
            incidents=_incident_gate(narrowed, args.monitor_url) if args.no_open_incident else None,
        )
    if args.command == "verify":
        from monitor.release.verify import run_verify

        narrowed = select_targets(settings, [args.target])
        if narrowed is None:
            return _unknown_target(settings, [args.target])
        return run_verify(
            settings,
            narrowed.targets[0],
            duration_s=args.duration,
            interval_s=args.interval or settings.monitor.incident_interval,
            file_incident=args.file_incident,
            as_json=args.json,
            out=sys.stdout,
        )
    if args.command == "report":
        return _report(settings, args, sys.stdout)
    if args.command == "kpis":
        return _kpis(settings, args)
    if args.command == "notify":
        return _notify(settings, args)
    if args.command == "maintenance":
        return _maintenance(settings, args)
    if args.command == "config":
        json.dump(redacted(settings), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")


def _kpis(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.kpis.command import run_kpis  # PyGithub and the store load only here

    now = datetime.now(UTC)
    span = _window(args, settings.kpis.window, now)
    if span is None:
        return EXIT_CONFIG
    return run_kpis(
        settings,
        span,
        now,
        as_json=args.json,
        check=args.check,
        offline=args.offline,
        out=sys.stdout,
        err=sys.stderr,
    )


def _window(
    args: argparse.Namespace, default_s: float, now: datetime
) -> tuple[datetime, datetime] | None:
    """The [start, end) of ``--window``/``--since``/``--until``; None (and a message on
    stderr) when they make no window."""
    from monitor.figures.slo import parse_window

    end = args.until or now
    try:
        length = parse_window(args.window) if args.window else default_s
    except ValueError as exc:
        sys.stderr.write(f"monitor: --window: {exc}\n")
        return None
    start = args.since or end - timedelta(seconds=length)
    if start >= end:
        sys.stderr.write("monitor: --since must be before --until\n")
        return None
    return start, end


def _notify(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.release.notify import run_notify  # the channels load only to notify

    test = args.action == "test"
    if not test and (not args.title or not args.body):
        sys.stderr.write("monitor: notify: --title and --body are required (or: notify test)\n")
        return EXIT_CONFIG
    return run_notify(
        settings,
        args.channel,
        title=args.title,
        body=args.body,
        severity=args.severity,
        test=test,
        out=sys.stdout,
        err=sys.stderr,
    )


def _maintenance(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.release.maintenance import monitor_url, run_maintenance

    if args.target not in {t.name for t in settings.targets}:
        return _unknown_target(settings, [args.target])
    if args.action == "start" and args.duration is None:
        sys.stderr.write("monitor: maintenance start: --for is required (e.g. --for 15m)\n")
        return EXIT_CONFIG
    # MONITOR_API_TOKEN, the daemon's own token (masked like every configured secret)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    return run_maintenance(
        args.action,
        monitor_url(args.monitor_url, settings, os.environ),
        target=args.target,
        duration_s=args.duration,
        reason=args.reason,
        token=token,
        out=sys.stdout,
        err=sys.stderr,
    )


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _store_url_arg(text: str) -> str:
    from monitor.store.copy import CopyError, parse_store_url

    try:
        parse_store_url(text)
    except CopyError as exc:  # the message never repeats the URL: it may hold a password
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _store_copy(source: str, dest: str, out: TextIO, err: TextIO) -> int:
    """``monitor store copy``: one line per table, then the total; 1 with one line if not."""
    from monitor.store.base import StoreError
    from monitor.store.copy import SKIPPED, CopyError, copy_store, masked_url, url_secrets

    secrets.add([*url_secrets(source), *url_secrets(dest)])  # logs and errors alike
    shown = f"{masked_url(source)} to {masked_url(dest)}"
    live = err.isatty()  # a terminal sees each table's rows go by, on one line
    clear = "\r\x1b[K" if live else ""

    def progress(table: str, rows: int) -> None:
        if live:
            err.write(f"{clear}copying {table}: {rows:,} rows")
            err.flush()

    started = time.monotonic()
    try:
        copied = copy_store(source, dest, progress=progress)
    except (CopyError, StoreError) as exc:
        message = " ".join(str(exc).split())  # one line
        err.write(f"{clear}monitor: store copy: {secrets.redact(message)}\n")
        return EXIT_FAILED
    err.write(clear)
    for table, rows in copied.items():
        out.write(f"{table}: {_count(rows)}\n")
    total = sum(copied.values())
    skipped = "; ".join(f"{table} not copied: {why}" for table, why in SKIPPED.items())
    out.write(
        f"copied {_count(total)} in {len(copied)} tables from {shown}"
        f" in {time.monotonic() - started:.1f} s ({skipped})\n"
    )
    return EXIT_OK


def _count(rows: int) -> str:
    return f"{rows:,} row" if rows == 1 else f"{rows:,} rows"


def _incident_gate(settings: Settings, monitor_url: str | None) -> Callable[[], IncidentGate]:
    """The ``--no-open-incident`` look-up: the daemon when its URL is given, else GitHub."""
    from monitor.release.check import gate_incidents
    from monitor.release.incidents import from_github, from_monitor

    names = [t.name for t in settings.targets]
    if monitor_url:
        return lambda: gate_incidents(
            "monitor", lambda: from_monitor(monitor_url, names, settings.monitor.timeout)
        )
    return lambda: gate_incidents("github", lambda: from_github(settings.github, names))


def _unknown_target(settings: Settings, names: Sequence[str] | None) -> int:
    known = ", ".join(t.name for t in settings.targets)
    sys.stderr.write(f"monitor: unknown target in {list(names or [])}; known: {known}\n")
    return EXIT_CONFIG


def _parse_when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _report(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from monitor.figures.history import History
    from monitor.figures.report import render_report
    from monitor.figures.slo import Span
    from monitor.figures.target import target_figures
    from monitor.store.base import StoreError
    from monitor.store.factory import open_store

    narrowed = select_targets(settings, args.target)
    if narrowed is None:
        return _unknown_target(settings, args.target)
    path = settings.monitor.state_path
    if not path.exists():
        sys.stderr.write(
            f"monitor: no state database at {path} (monitor.state_path); has the daemon run?\n"
        )
        return EXIT_CONFIG
    now = datetime.now(UTC)
    span = _window(args, settings.monitor.slo_window, now)
    if span is None:
        return EXIT_CONFIG
    start, end = span
    try:
        store = open_store(settings)
        try:
            history = History(store, settings)
            figures = [target_figures(history, t, Span(start, end), now) for t in narrowed.targets]
        finally:
            store.close()
    except StoreError as exc:
        sys.stderr.write(f"monitor: cannot read {path}: {exc}\n")
        return EXIT_FAILED
    if args.json:
        json.dump(
            {"generated_at": now.isoformat(), "targets": [f.as_dict() for f in figures]},
            out,
            indent=2,
        )
        out.write("\n")
    else:
        out.write(render_report(figures))
    missed = [f for f in figures if f.slo_met is False or f.mttr_met is False]
    return EXIT_FAILED if args.check_slo and missed else EXIT_OK


def _config_failure(exc: ConfigError, stream: TextIO) -> int:
    stream.write("monitor: invalid configuration\n")
    for problem in exc.problems:
        stream.write(f"  {secrets.redact(problem)}\n")
    return EXIT_CONFIG


EXIT_STORE = 74  # EX_IOERR: the state database cannot be opened at all


def _run(settings: Settings) -> int:
    from monitor.daemon.daemon import Daemon  # the scheduler and server load only for `run`
    from monitor.incidents.channels.factory import configured_channels
    from monitor.store.base import StoreError

    try:
        channels = configured_channels(settings)
    except ValueError as exc:  # a channel's secret or setting its service would refuse
        return _config_failure(ConfigError([str(exc)]), sys.stderr)
    # PyGithub's import of PyJWT (and cryptography), for App authentication only
    defer_import("jwt")

    async def go() -> int:
        daemon = Daemon(settings, channels=channels)
        freeze_startup_objects()
        return await daemon.run()

    try:
        return asyncio.run(go())
    except StoreError as exc:
        sys.stderr.write(f"monitor: {secrets.redact(str(exc))} (monitor.state_path)\n")
        return EXIT_STORE


def select_targets(settings: Settings, names: Sequence[str] | None) -> Settings | None:
    """Settings narrowed to ``names``; None when a name is unknown."""
    if not names:
        return settings
    known = {t.name for t in settings.targets}
    if any(name not in known for name in names):
        return None
    return settings.model_copy(update={"targets": [t for t in settings.targets if t.name in names]})
