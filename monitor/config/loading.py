"""Reading the configuration: the file (or the embedded defaults), the environment, and
one clear line per problem, each naming its key path (``targets[1].checks[0].expect_status``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from monitor.config.schema import ENV_PREFIX, SECRET_REQUIRED, Settings, toml_data

CONFIG_ENV = "MONITOR_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.toml")


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` holds one line per fault."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


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
    _environment_defaults(data)
    problems = _channel_secrets(data) + _check_tokens(data)
    if problems:
        raise ConfigError(problems)
    reset = toml_data.set(data)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    except SettingsError as exc:
        # pydantic-settings decodes list and table values from the environment as JSON
        raise ConfigError([_env_json_problem(exc, os.environ)]) from None
    finally:
        toml_data.reset(reset)
    problems = _semantic_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


# Variables other tools set, each standing in for a key the file and MONITOR_* leave unset:
# GitHub Actions' token, Fly's attached Postgres, Fly's region and machine.
PLATFORM_VARIABLES = {
    "GITHUB_TOKEN": ("github", "token"),
    "DATABASE_URL": ("monitor", "database_url"),
    "FLY_REGION": ("monitor", "region"),
    "FLY_MACHINE_ID": ("monitor", "instance"),
}


def _environment_defaults(data: dict[str, Any]) -> None:
    for variable, (section, key) in PLATFORM_VARIABLES.items():
        value = os.environ.get(variable)
        if not value or os.environ.get(f"{ENV_PREFIX}{section.upper()}__{key.upper()}"):
            continue
        table = data.setdefault(section, {})
        if isinstance(table, dict) and key not in table:
            table[key] = value


def _channel_secrets(data: dict[str, Any]) -> list[str]:
    """Read each channel's secret from the variable its ``secret_env`` names.

    A secret written into the file itself is refused: files get committed.
    """
    channels = data.get("channels")
    if not isinstance(channels, list):
        return []
    problems = []
    for index, table in enumerate(channels):
        if not isinstance(table, dict):
            continue
        if "secret" in table:
            problems.append(
                f"channels[{index}].secret: never in the file; put it in an environment"
                " variable and name that variable in secret_env"
            )
            continue
        name = table.get("secret_env")
        if isinstance(name, str) and os.environ.get(name, "").strip():
            table["secret"] = os.environ[name].strip()
    return problems


def _check_tokens(data: dict[str, Any]) -> list[str]:
    """Refuse a check's token written in the file (the schema reads ``token_env``)."""
    targets = data.get("targets")
    if not isinstance(targets, list):
        return []
    problems = []
    for t_index, target in enumerate(targets):
        checks = target.get("checks") if isinstance(target, dict) else None
        for index, table in enumerate(checks if isinstance(checks, list) else []):
            if not isinstance(table, dict):
                continue
            if "token" in table:
                problems.append(
                    f"targets[{t_index}].checks[{index}].token: never in the file; put it in"
                    " an environment variable and name that variable in token_env"
                )
    return problems


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


_NAMED_KEY = re.compile(r"^([a-z_]+): ")


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
        where = _format_loc(error["loc"], keep_last=keep_last)
        named = _NAMED_KEY.match(message) if error["type"] == "value_error" else None
        if named and _names_its_key(error["loc"]):
            # a window's or a check's rules span keys (start with every, max with
            # degraded_max): the message names the key
            where, message = f"{where}.{named[1]}", message[named.end() :]
        line = f"{where}: {_printable(message)}"
        if line not in lines:
            lines.append(line)
    return lines


def _names_its_key(loc: Sequence[int | str]) -> bool:
    """True for the models whose cross-key errors begin with the key they blame."""
    return bool(loc) and (loc[0] == "maintenance" or (len(loc) == 4 and loc[2] == "checks"))


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
    problems += _channel_problems(settings, target_names)
    for key in ("target", "staging_target"):
        name = getattr(settings.kpis, key)
        if name is not None and name not in target_names:
            problems.append(f"kpis.{key}: no target named {name!r}")
    for index, window in enumerate(settings.maintenance):
        for t_index, name in enumerate(window.targets or []):
            if name not in target_names:
                problems.append(
                    f"maintenance[{index}].targets[{t_index}]: no target named {name!r}"
                )
    return problems


_CHANNEL_NEEDS = {
    "email": ("host", "from_", "to"),
    "webhook": ("url",),
}


def _channel_problems(settings: Settings, target_names: Sequence[str]) -> list[str]:
    problems = []
    names = [c.name for c in settings.channels]
    for index in _duplicates(names):
        problems.append(f"channels[{index}].name: duplicate channel name {names[index]!r}")
    for index, channel in enumerate(settings.channels):
        where = f"channels[{index}]"
        if channel.name in ("github", "journal"):
            problems.append(f"{where}.name: {channel.name!r} is the incident issues' own channel")
        for t_index, name in enumerate(channel.targets or []):
            if name not in target_names:
                problems.append(f"{where}.targets[{t_index}]: no target named {name!r}")
        for key in _CHANNEL_NEEDS.get(channel.type, ()):
            if not getattr(channel, key):
                problems.append(f"{where}.{key.rstrip('_')}: required for a {channel.type} channel")
        if channel.type == "alertmanager" and not channel.endpoints:
            problems.append(f"{where}.urls: required for an alertmanager channel")
        if channel.type == "slack" and channel.channel is None and not _is_url(channel.secret):
            problems.append(
                f"{where}.channel: required with a bot token (an incoming-webhook URL in"
                " secret_env needs none)"
            )
        if channel.urls and channel.type != "alertmanager":
            problems.append(f"{where}.urls: only alertmanager channels take several URLs")
    return problems


def _is_url(secret: SecretStr | None) -> bool:
    return secret is not None and secret.get_secret_value().startswith(("https://", "http://"))


def channel_secret_problems(settings: Settings, names: Sequence[str] | None = None) -> list[str]:
    """Channels (all, or those called ``names``) whose secret is missing: the daemon and
    ``monitor notify`` refuse them (a channel that cannot page is worse than none: nobody
    knows)."""
    problems = []
    for index, channel in enumerate(settings.channels):
        if names is not None and channel.name not in names:
            continue
        if channel.secret is not None or channel.type not in SECRET_REQUIRED:
            continue
        if channel.secret_env is None:
            problems.append(
                f"channels[{index}].secret_env: required for a {channel.type} channel (the"
                " name of the environment variable holding its key, token or secret)"
            )
        else:
            problems.append(
                f"channels[{index}].secret_env: the environment variable"
                f" {channel.secret_env} is not set"
            )
    return problems


def check_token_problems(settings: Settings) -> list[str]:
    """Checks whose ``token_env`` names a variable that is not set: the daemon refuses
    them (every probe would be a 401, a failure of the monitor, not of the target)."""
    problems = []
    for t_index, target in enumerate(settings.targets):
        for index, check in enumerate(target.checks):
            if check.token_env is not None and check.token is None:
                problems.append(
                    f"targets[{t_index}].checks[{index}].token_env: the environment variable"
                    f" {check.token_env} is not set"
                )
    return problems


def daemon_problems(settings: Settings) -> list[str]:
    """Problems that only matter to ``monitor run``.

    A token without a repository cannot file issues. One-shot commands (check,
    verify, report) do not file issues and must work in CI, where GITHUB_TOKEN
    is often set for other reasons, so only the daemon refuses it.
    """
    problems = channel_secret_problems(settings) + check_token_problems(settings)
    github = settings.github
    if github.enabled and github.token and not github.repository:
        problems.append(
            "github.repository: required when a GitHub token is set"
            " (or set github.enabled = false to keep incidents in the journal)"
        )
    return problems
