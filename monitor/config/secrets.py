"""The secrets a configuration holds, and the configuration with them masked."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from monitor.config.schema import Settings, foreign_keys

MASK = "***"


def secret_values(settings: Settings) -> list[str]:
    """Every secret the configuration holds: the tokens, the database URL (and its
    password on its own) and each check header value."""
    values = [
        header.get_secret_value()
        for target in settings.targets
        for check in target.checks
        for header in check.headers.values()
    ]
    for target in settings.targets:
        for check in target.checks:
            if check.token is not None:
                values.append(check.token.get_secret_value())
            # basic auth in a Prometheus or Alertmanager URL (https://user:pass@host)
            if check.url is not None:
                values += _secret_parts(check.url)
    if settings.github.token is not None:
        values.append(settings.github.token.get_secret_value())
    if settings.api_token is not None:
        values.append(settings.api_token.get_secret_value())
    for channel in settings.channels:
        if channel.secret is not None:
            values.append(channel.secret.get_secret_value())
            # a whsec_ signing secret is also used as the base64 key after its prefix
            values += _secret_parts(channel.secret.get_secret_value())
    if settings.monitor.database_url is not None:
        url = settings.monitor.database_url.get_secret_value()
        values.append(url)
        password = urlsplit(url).password
        if password:  # as written in the URL, and as the server sees it (p%40ss is p@ss)
            values += [password, unquote(password)]
    return values


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, every secret masked."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    # model_dump renders SecretStr as '**********' already; make the masking explicit
    # so a future pydantic change cannot leak a value through this function.
    if settings.github.token is not None:
        data["github"]["token"] = MASK
    for target in data["targets"]:
        for check in target["checks"]:
            for key in foreign_keys(check["type"]):  # another type's defaults: noise
                check.pop(key, None)
            check["headers"] = {name: MASK for name in check["headers"]}
            if check.get("token") is not None:
                check["token"] = MASK
    data["monitor"]["state_path"] = str(settings.monitor.state_path)
    for channel in data["channels"]:
        if channel.get("secret") is not None:
            channel["secret"] = MASK
    if settings.api_token is not None:
        data["api_token"] = MASK
    if settings.monitor.database_url is not None:
        data["monitor"]["database_url"] = MASK
    return data


def _secret_parts(secret: str) -> list[str]:
    """Forms of a secret other than itself that would still give it away."""
    parts = []
    if secret.startswith("whsec_") and len(secret) > len("whsec_") + 8:
        parts.append(secret.removeprefix("whsec_"))
    password = urlsplit(secret).password if secret.startswith(("http", "smtp")) else None
    if password:
        parts += [password, unquote(password)]
    return parts
