"""Configuration: ``config.toml`` plus ``MONITOR_*`` environment overrides.

Everything is validated once, at start-up; a problem becomes a
:class:`ConfigError` holding one message per problem, each naming its key
path. The modules: ``schema`` (the sections and their keys), ``durations`` and
``values`` (what a key may hold), ``loading`` (file, environment, errors) and
``secrets`` (what must never be shown).
"""

from monitor.config.durations import Duration, format_duration, parse_duration
from monitor.config.loading import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    daemon_problems,
    embedded_config_text,
    load_settings,
    resolve_config_path,
)
from monitor.config.schema import (
    DEFAULT_FIELDS,
    ENV_PREFIX,
    CheckConfig,
    GithubSection,
    MonitorSection,
    Settings,
    StatusPageSection,
    TargetConfig,
)
from monitor.config.secrets import MASK, redacted, secret_values
from monitor.config.values import JmesPath, split_listen

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_FIELDS",
    "ENV_PREFIX",
    "MASK",
    "CheckConfig",
    "ConfigError",
    "Duration",
    "GithubSection",
    "JmesPath",
    "MonitorSection",
    "Settings",
    "StatusPageSection",
    "TargetConfig",
    "daemon_problems",
    "embedded_config_text",
    "format_duration",
    "load_settings",
    "parse_duration",
    "redacted",
    "resolve_config_path",
    "secret_values",
    "split_listen",
]
