"""Settings, read once from the environment (``PICLOUD_*``) with explicit overrides."""

from __future__ import annotations

import os
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


_ENV = {
    "home": "PICLOUD_HOME",
    "database_url": "PICLOUD_DATABASE_URL",
    "admin_token": "PICLOUD_ADMIN_TOKEN",
    "node": "PICLOUD_NODE",
    "host": "PICLOUD_HOST",
    "port": "PICLOUD_PORT",
    "max_body_bytes": "PICLOUD_MAX_BODY_BYTES",
    "invoke_timeout_s": "PICLOUD_INVOKE_TIMEOUT_S",
}


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; keyword arguments that are not ``None`` win.

    Unknown keywords are an error (a typo must not be silently ignored).
    """
    unknown = set(overrides) - set(_ENV)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    raw: dict[str, Any] = {}
    for field, var in _ENV.items():
        value = os.environ.get(var)
        if value not in (None, ""):
            raw[field] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw.setdefault("home", "./.picloud")
    raw.setdefault("node", socket.gethostname() or "node")
    raw.setdefault("database_url", None)
    raw.setdefault("admin_token", None)
    raw["home"] = Path(raw["home"]).expanduser().absolute()
    # strict=False converts "8000" -> 8000 and "1.5" -> 1.5 for values read from the environment.
    return msgspec.convert(raw, Settings, strict=False, dec_hook=_dec_hook)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Path:
        return Path(obj)
    raise NotImplementedError(type_)
