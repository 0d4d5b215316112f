"""Settings, read once from the environment (``PICLOUD_*``) with explicit overrides."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any

import msgspec


class Settings(msgspec.Struct, frozen=True):
    """Everything a PiCloud process needs to know about where it runs."""

    home: Path
    """``PICLOUD_HOME``: the embedded database, the admin token file (default ``./.picloud``)."""
    database_url: str | None
    """``PICLOUD_DATABASE_URL``; ``None`` starts an embedded PostgreSQL under ``home``."""
    admin_token: str | None
    """``PICLOUD_ADMIN_TOKEN``; ``None`` lets ``picloud up`` generate and store one."""
    node: str
    """``PICLOUD_NODE``: this node's name (its own work queue), default the host name."""
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1 << 20
    invoke_timeout_s: float = 30.0
    trusted_proxies: str = "127.0.0.1,::1"
    """``PICLOUD_TRUSTED_PROXIES``: addresses or networks (comma-separated; empty: none) whose
    ``X-Forwarded-*``/``Forwarded``/``X-Real-IP`` headers reach scripts; from anyone else they
    are dropped (a caller could otherwise claim any address)."""

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return parse_networks(self.trusted_proxies)


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the environment variable."""


def parse_networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise SettingsError(f"PICLOUD_TRUSTED_PROXIES: {item!r} is not an IP address or "
                                "network (e.g. 10.0.0.5 or 10.0.0.0/24)") from exc
    return tuple(out)


_ENV = {
    "home": "PICLOUD_HOME",
    "database_url": "PICLOUD_DATABASE_URL",
    "admin_token": "PICLOUD_ADMIN_TOKEN",
    "node": "PICLOUD_NODE",
    "host": "PICLOUD_HOST",
    "port": "PICLOUD_PORT",
    "max_body_bytes": "PICLOUD_MAX_BODY_BYTES",
    "invoke_timeout_s": "PICLOUD_INVOKE_TIMEOUT_S",
    "trusted_proxies": "PICLOUD_TRUSTED_PROXIES",
}


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; keyword arguments that are not ``None`` win.

    Unknown keywords are an error (a typo must not be silently ignored); a value that cannot
    be used is a :class:`SettingsError` naming its variable.
    """
    unknown = set(overrides) - set(_ENV)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    raw: dict[str, Any] = {}
    for field, var in _ENV.items():
        value = os.environ.get(var)
        if value not in (None, "") or (field == "trusted_proxies" and value == ""):
            raw[field] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw.setdefault("home", "./.picloud")
    raw.setdefault("node", socket.gethostname() or "node")
    raw.setdefault("database_url", None)
    raw.setdefault("admin_token", None)
    raw["home"] = Path(raw["home"]).expanduser().absolute()
    # strict=False converts "8000" -> 8000 and "1.5" -> 1.5 for values read from the environment.
    try:
        settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _settings_error(exc, raw) from exc
    settings.trusted_networks()  # fails now, naming the variable, rather than at a request
    return settings


def _settings_error(exc: msgspec.ValidationError, raw: dict[str, Any]) -> SettingsError:
    message = str(exc)
    where = re.search(r"at `\$\.(\w+)`", message)
    field = where.group(1) if where else None
    if field not in _ENV:
        return SettingsError(message)
    reason = message.split(" - at ")[0]
    return SettingsError(f"{_ENV[field]}={raw.get(field)!r}: {reason}")


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Path:
        return Path(obj)
    raise NotImplementedError(type_)
