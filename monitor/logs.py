"""Logging: one JSON object per line on stdout, secrets redacted, stdlib routed in.

structlog and the stdlib loggers of our dependencies (httpx, apscheduler,
github, uvicorn) share one handler and one processor chain, so every line has
the same shape and passes the same redaction.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

REDACTED = "[REDACTED]"

# Shapes of credentials worth masking even if nobody registered them: GitHub tokens
# of every kind, and Authorization-style "token X" / "Bearer X" phrases.
_TOKEN_PATTERNS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|(?<=[Tt]oken )[A-Za-z0-9_\-.]{16,}|(?<=Bearer )[A-Za-z0-9_\-.=]{16,})"
)
# No shorter text holds one ("token " and 16 characters): most values of a line are
# shorter, and spare the regular expression
_SHORTEST_TOKEN_TEXT = len("token ") + 16


class SecretRegistry:
    """Known secret values (the token, check header values) to mask in every line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        """Remember more secrets; values shorter than 4 characters are ignored as noise."""
        with self._lock:
            merged = set(self._values) | {v for v in values if len(v) >= 4}
            # longest first, so a secret containing another is masked whole
            self._values = tuple(sorted(merged, key=len, reverse=True))

    def clear(self) -> None:
        """Forget every registered secret (tests)."""
        with self._lock:
            self._values = ()

    def redact(self, text: str) -> str:
        """``text`` with every known secret and token-like string masked."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        if len(text) < _SHORTEST_TOKEN_TEXT:
            return text
        return _TOKEN_PATTERNS.sub(REDACTED, text)


secrets = SecretRegistry()


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask secrets in every value of the event, exception text included."""
    return {key: _redact_value(value) for key, value in event_dict.items()}


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours in an extra field
    event_dict.pop("color_message", None)
    return event_dict


def configure(fmt: LogFormat = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger; safe to call more than once."""
    stream = stream or sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _drop_color_message,
    ]
    renderer: Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        # the traceback becomes text before redaction, so it is redacted too
        exc: list[Processor] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        # plain tracebacks: never the local variables, which may hold the token
        plain = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        exc = [structlog.processors.ExceptionRenderer(plain)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc,
            redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # What no line shows, and every record would gather (the Logging HOWTO's
    # "Optimization"): the caller's frame, thread, process and multiprocessing names.
    # A cycle logs a line per check: this is a fifth of a line's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # chatty dependencies: their INFO lines are per request
    for name in ("httpx", "httpcore", "apscheduler", "urllib3", "github", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def detach_handlers(name: str) -> None:
    """Remove the handlers a library attached to its own logger when imported (PyGithub
    adds a stderr one): its records then reach only the root logger's handler, in our
    format and redacted. Called right after such a library's (late) import."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def get_logger(name: str = "monitor", **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger with bound context (``target=``, ``check=``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger
