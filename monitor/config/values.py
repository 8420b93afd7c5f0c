"""The value types settings are made of besides durations: JMESPath, listen addresses,
URLs, Alertmanager matchers, CA bundles."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import jmespath
import jmespath.exceptions
from pydantic import AfterValidator


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


def check_listen(value: str) -> str:
    """``value`` unchanged once :func:`split_listen` accepts it."""
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


def check_http_url(value: str) -> str:
    """``value`` without surrounding spaces or a trailing slash; ValueError unless it is
    an http(s) URL. (``urlsplit`` ignores a leading space that httpx would not: it would
    read the URL as a relative one and fail every probe.)"""
    value = value.strip()
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket: "http://[::1"
        hostname = None
    if not hostname or parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


# Alertmanager's matcher syntax: a label name, an operator, a value (quoted, or a bare
# word); the API takes each as one ``filter`` parameter. Quoted label names are left
# out: Alertmanager before 0.27 refuses them, and a refused matcher fails every probe.
_MATCHER = re.compile(
    r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^"\s{},=!~]*)\s*'
)


_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]")


def _check_matcher(value: str) -> str:
    match = _MATCHER.fullmatch(value)
    if not match:
        raise ValueError(
            f'expected an Alertmanager matcher such as severity=~"critical|page", got {value!r}'
        )
    if match[2] in ("=~", "!~"):
        quoted = match[3].startswith('"')
        pattern = match[3][1:-1].replace('\\"', '"') if quoted else match[3]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression in {value!r}: {exc}") from None
        if _NOT_RE2.search(pattern):  # Python takes them; Alertmanager (Go, RE2) refuses
            raise ValueError(
                f"Alertmanager's regular expressions have no lookaround or backreference: {value!r}"
            )
    return value.strip()


AlertMatcher = Annotated[str, AfterValidator(_check_matcher)]


def check_ca_file(path: Path) -> Path:
    """``path`` once it loads as a PEM bundle of CA certificates; ValueError naming it."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"not a PEM bundle of CA certificates: {path} ({exc})") from None
    return path
