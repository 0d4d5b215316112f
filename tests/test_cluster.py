"""A cluster: separate ``picloud up`` processes (nodes) on one database, one of which dies.

None of the survivors restarts: a dead node is noticed by the elected warden of
:mod:`picloud.workers.peers`, which PostgreSQL wakes when the dead node's session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from picloud.workers.peers import LIVENESS_CLASS, WARDEN_LOCK
from tests.runtime_fixtures import ADMIN_TOKEN, engine_ready, wait_healthy  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")

ROOT = Path(__file__).resolve().parent.parent
N = 30_000_000  # about 3 s of compute on a 2-core box
SLOW = f"let s = 0; for i in 0..{N} {{ s += i; }} s"
SLOW_ANSWER = str(N * (N - 1) // 2)
ENV = {"PICLOUD_SCRIPT_FUEL": str(500_000_000_000), "PICLOUD_SCRIPT_TIMEOUT_S": "120",
       "PICLOUD_INVOKE_TIMEOUT_S": "120", "PICLOUD_ADMIN_TOKEN": ADMIN_TOKEN}
FULL = "ingress,worker,scheduler,projector"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``picloud up`` processes on one database; their logs go to files under ``tmp``."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, roles: str = FULL, concurrency: int = 4) -> None:
        port = _free_port()
        env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT),
               "PICLOUD_HOME": str(self.tmp / f"home-{name}")}
        cmd = [sys.executable, "-m", "picloud", "up", "--node", name, "--roles", roles,
               "--port", str(port), "--concurrency", str(concurrency),
               "--database-url", self.url]
        with open(self.log_path(name), "wb") as log:
            self.procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log,
                                                stderr=subprocess.STDOUT)
        if "ingress" in roles:
            self.ports[name] = port

    def wait_http(self) -> None:
        for port in self.ports.values():
            wait_healthy(port, timeout=60)

    def log_path(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def base(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _tree(self, name: str) -> list[psutil.Process]:
        """The node's processes: `picloud up` and the worker processes it runs (which may be
        in sessions of their own), children first."""
        try:
            parent = psutil.Process(self.procs[name].pid)
            return [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            return []

    @staticmethod
    def _kill(processes: list[psutil.Process]) -> None:
        for process in processes:  # psutil refuses a pid that now names another process
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def kill(self, name: str) -> None:
        """The whole node dies at once (SIGKILL to each of its processes), as in a crash."""
        self._kill(self._tree(name))
        self.procs[name].wait(10)

    def stop(self) -> None:
        trees = {name: self._tree(name) for name in self.procs}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            self._kill(trees[name])  # a worker process left behind


async def _rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall())


async def _until(what: str, predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Seconds until ``predicate()`` (a coroutine function) is true; fails after ``timeout``."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not in {timeout} s: {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - start


WORKERS_SQL = """
SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid::bigint = %s AND l.objsubid = 2 AND l.granted
"""

JOB_SQL = """
SELECT j.id, j.status::text, j.queue_name, j.attempts,
       (SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.classid::bigint = %s AND l.objsubid = 2
          AND l.objid::bigint = j.worker_id AND l.granted LIMIT 1)
FROM procrastinate_jobs j WHERE j.args->>'invocation_id' = %s
"""


async def _live_workers(url: str) -> list[str]:
    return sorted(r[0] for r in await _rows(url, WORKERS_SQL, LIVENESS_CLASS))


async def _job(url: str, inv_id: str) -> tuple[int, str, str, int, str | None]:
    rows = await _rows(url, JOB_SQL, LIVENESS_CLASS, inv_id)
    assert len(rows) == 1, rows
    job_id, status, queue, attempts, holder = rows[0]
    return job_id, status, queue, attempts, holder


def _node_of(holder: str | None) -> str | None:
    """``picloud worker-b 12`` (the application_name of a worker's listener) -> ``b``."""
    if not holder:
        return None
    return holder.split()[1].removeprefix("worker-")


async def _wait_cluster(url: str, workers: int) -> None:
    """Until every worker holds its lock and the warden watches the others."""
    async def ready() -> bool:
        if len(await _live_workers(url)) != workers:
            return False
        rows = await _rows(url, "SELECT count(*) FILTER (WHERE classid::bigint = %s AND granted), "
                           "count(*) FILTER (WHERE classid::bigint = %s AND NOT granted) "
                           "FROM pg_locks WHERE locktype = 'advisory'",
                           WARDEN_LOCK[0], LIVENESS_CLASS)
        return rows[0] == (1, workers - 1)
    await _until("the cluster is formed", ready, 60)


async def _result_events(url: str, inv_id: str) -> list[tuple[str, Any]]:
    return [(t, d) for t, d in await _rows(
        url, "SELECT type, data FROM events WHERE stream = %s ORDER BY version",
        f"invocation-{inv_id}")]


@pytest.fixture
async def cluster(make_database: Callable[[], str], tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster on a fresh database of its own (``cluster.url``)."""
    c = Cluster(make_database(), tmp_path)
    try:
        yield c
    finally:
        c.stop()


async def _deploy(c: Cluster, via: str, name: str, source: str) -> None:
    async with httpx.AsyncClient(base_url=c.base(via), headers=AUTH, timeout=30) as http:
        r = await http.put(f"/api/scripts/{name}", content=source)
        assert r.status_code in (200, 201), r.text


async def _warden(url: str) -> str | None:
    """The node whose warden is elected."""
    rows = await _rows(url, "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                       " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                       " AND l.classid::bigint = %s AND l.objid::bigint = %s",
                       WARDEN_LOCK[0], WARDEN_LOCK[1])
    return str(rows[0][0]).split()[2] if rows else None


@pytest.mark.parametrize("b_is_warden", [False, True], ids=["peer-dies", "warden-dies"])
async def test_a_killed_node_s_jobs_run_on_live_nodes_once(cluster: Cluster,
                                                           b_is_warden: bool) -> None:
    """B runs one slow invocation and has a second waiting in its own queue (concurrency 1)
    when it is SIGKILLed; A and C keep running and both invocations complete on them, each
    recorded once. B is a watched peer (A is the warden), or the warden itself (then A or C
    is elected and reaps B first)."""
    url = cluster.url
    first, *others = ("b", "a", "c") if b_is_warden else ("a", "b", "c")
    for name in (first, *others):
        cluster.start(name, concurrency=1 if name == "b" else 4)
        if name == first:
            async def elected() -> bool:
                return await _warden(url) == first
            await _until(f"{first}'s warden is elected", elected, 60)
    cluster.wait_http()
    await _wait_cluster(url, 3)
    assert await _warden(url) == first
    await _deploy(cluster, "a", "slow", SLOW)
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=cluster.base("b"), timeout=30) as http:
        async def known() -> bool:  # B reads the read model, projected by the elected node
            r = await http.get("/api/scripts/slow", headers=AUTH)
            return r.status_code == 200
        await _until("B knows the script", known, 10)
        for _ in range(2):
            r = await http.post("/fn/slow", headers={"prefer": "respond-async"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["invocation_id"])

    async def running_on_b() -> bool:
        _, status, _, _, holder = await _job(url, ids[0])
        return status == "doing" and _node_of(holder) == "b"
    await _until("B runs the first invocation", running_on_b, 30)
    _, status, queue, _, _ = await _job(url, ids[1])
    assert (status, queue) == ("todo", "node-b")
    await asyncio.sleep(0.3)
    cluster.kill("b")

    async def retried() -> bool:
        _, status, _, _, holder = await _job(url, ids[0])
        return status == "succeeded" or (status == "doing" and _node_of(holder) in ("a", "c"))
    requeue_s = await _until("the first invocation is retried on A or C", retried, 10, 0.01)
    assert requeue_s < 3.0
    print(f"\nre-queued on a live node {requeue_s * 1000:.0f} ms after the kill")

    async with httpx.AsyncClient(base_url=cluster.base("a"), headers=AUTH, timeout=30) as http:
        for inv_id in ids:
            async def done(inv_id: str = inv_id) -> bool:
                r = await http.get(f"/api/invocations/{inv_id}")
                return r.status_code == 200 and r.json().get("status") == "succeeded"
            await _until(f"invocation {inv_id} succeeds (seen through A's API)", done, 60, 0.2)
    for inv_id in ids:
        events = await _result_events(url, inv_id)
        assert [t for t, _ in events] == ["invocation.requested", "invocation.succeeded"]
        assert events[1][1]["node"] in ("a", "c")
        _, status, queue, _, _ = await _job(url, inv_id)
        assert (status, queue) == ("succeeded", "shared")
    # attempts count finished runs: the first was retried once, the second ran once
    assert [(await _job(url, inv_id))[3] for inv_id in ids] == [2, 1]
    reapers = [n for n in ("a", "c") if "worker gone" in cluster.log(n)]
    assert reapers == ([await _warden(url)] if b_is_warden else ["a"])
    assert [_node_of(w) for w in await _live_workers(url)] == ["a", "c"]
    rows = await _rows(url, "SELECT count(*) FROM procrastinate_workers")
    assert rows[0][0] == 2  # B's row was reaped

    async def b_sessions_gone() -> bool:  # none lingers, e.g. a lock wait of B's warden
        rows = await _rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND (application_name LIKE 'picloud warden b %%'"
                           " OR application_name LIKE 'picloud worker-b %%')")
        return bool(rows[0][0] == 0)
    await _until("B's sessions have ended", b_sessions_gone, 15, 0.2)


async def test_a_sync_caller_gets_the_answer_when_the_running_node_dies(
        cluster: Cluster) -> None:
    """A (ingress only, so its invocations go to the shared queue) answers a sync caller whose
    invocation was running on a worker node that is SIGKILLed; the other one finishes it."""
    url = cluster.url
    cluster.start("a", roles="ingress,projector,scheduler")
    cluster.start("b", roles="worker")
    cluster.start("c", roles="worker")
    cluster.wait_http()
    await _wait_cluster(url, 2)
    await _deploy(cluster, "a", "slow", SLOW)
    async with httpx.AsyncClient(base_url=cluster.base("a"), timeout=120) as http:
        async def known() -> bool:
            return (await http.get("/api/scripts/slow", headers=AUTH)).status_code == 200
        await _until("A knows the script", known, 10)
        call = asyncio.create_task(http.post("/fn/slow"))

        async def running() -> bool:
            if call.done():
                raise AssertionError(f"answered before any kill: {call.result()!r}")
            rows = await _rows(url, "SELECT args->>'invocation_id' FROM procrastinate_jobs")
            if not rows:
                return False
            _, status, _, _, holder = await _job(url, rows[0][0])
            return status == "doing" and _node_of(holder) in ("b", "c")
        await _until("a worker runs the invocation", running, 30)
        rows = await _rows(url, "SELECT args->>'invocation_id' FROM procrastinate_jobs")
        inv_id = rows[0][0]
        victim = _node_of((await _job(url, inv_id))[4])
        assert victim is not None
        survivor = "c" if victim == "b" else "b"
        await asyncio.sleep(0.3)
        cluster.kill(victim)
        r = await asyncio.wait_for(call, 90)
    assert r.status_code == 200, r.text
    assert r.text == SLOW_ANSWER
    assert r.headers["x-picloud-invocation"] == inv_id
    events = await _result_events(url, inv_id)
    assert [t for t, _ in events] == ["invocation.requested", "invocation.succeeded"]
    assert events[1][1]["node"] == survivor


async def _xacts(admin_url: str, dbname: str) -> int:
    rows = await _rows(admin_url, "SELECT pg_stat_force_next_flush()")
    rows = await _rows(admin_url, "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                       "WHERE datname = %s", dbname)
    return int(rows[0][0])


async def _picloud_activity(admin_url: str, dbname: str, since: float) -> list[Any]:
    """PiCloud's sessions on ``dbname`` that started a statement or connected after ``since``
    (a blocked lock wait started before; a NOTIFY delivered to a listener starts nothing)."""
    return await _rows(
        admin_url, "SELECT application_name, state, query FROM pg_stat_activity "
        "WHERE datname = %s AND backend_type = 'client backend' AND (query_start > "
        "to_timestamp(%s) OR backend_start > to_timestamp(%s))", dbname, since, since)


async def test_an_idle_cluster_sends_no_statement(cluster: Cluster, admin_url: str) -> None:
    """Two nodes that have done real work, then idle: the warden waits on its peer's lock and
    nothing is sent. Counted as bench/idle.py does (the database's transaction counters, read
    from another database), and per session: PostgreSQL's autovacuum visits each database
    once a minute, with a transaction or two, so a window with transactions is measured again
    (two 15 s windows cannot both hold a visit) while no PiCloud session may do anything."""
    url = cluster.url
    cluster.start("a")
    cluster.start("b")
    cluster.wait_http()
    await _wait_cluster(url, 2)
    await _deploy(cluster, "a", "idle", '"ok"')
    for name in ("a", "b"):
        async with httpx.AsyncClient(base_url=cluster.base(name), headers=AUTH,
                                     timeout=30) as http:
            async def known() -> bool:
                return (await http.get("/api/scripts/idle")).status_code == 200
            await _until(f"{name} knows the script", known, 10)
            assert (await http.get("/fn/idle")).text == "ok"
            if name == "a":
                r = await http.put("/api/schedules/yearly",
                                   json={"script": "idle", "cron": "0 0 1 1 *"})
                assert r.status_code in (200, 201), r.text
    await _wait_cluster(url, 2)
    dbname = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    # Backends flush their statistics when idle, at the latest 10 s later.
    await asyncio.sleep(12.0)
    idle_since = time.time()
    counted = []
    for _ in range(2):
        before = await _xacts(admin_url, dbname)
        await asyncio.sleep(15.0)
        counted.append(await _xacts(admin_url, dbname) - before)
        assert await _picloud_activity(admin_url, dbname, idle_since) == []
        if counted[-1] == 0:
            break
    assert counted[-1] == 0, f"transactions in two 15 s windows of idle: {counted}"


async def test_the_scheduler_fails_over_when_its_node_is_killed(cluster: Cluster) -> None:
    url = cluster.url
    cluster.start("a")
    cluster.start("b")
    cluster.wait_http()
    await _deploy(cluster, "a", "tick", '"tick"')
    async with httpx.AsyncClient(base_url=cluster.base("a"), headers=AUTH, timeout=30) as http:
        r = await http.put("/api/schedules/every-second",
                           json={"script": "tick", "cron": "* * * * * *"})
        assert r.status_code in (200, 201), r.text
    ticks_sql = ("SELECT metadata->>'node', (data->>'fire_time')::timestamptz FROM events "
                 "WHERE type = 'cron.ticked' ORDER BY position")

    async def ticking() -> bool:
        return len(await _rows(url, ticks_sql)) >= 2
    await _until("ticks are recorded", ticking, 15)
    leader = (await _rows(url, ticks_sql))[-1][0]
    standby = "b" if leader == "a" else "a"
    cluster.kill(leader)
    killed_at = time.time()

    async def taken_over() -> bool:
        return sum(n == standby for n, _ in await _rows(url, ticks_sql)) >= 3
    await _until("the standby ticks", taken_over, 15)
    ticks = await _rows(url, ticks_sql)
    seen = f"killed {leader} at {killed_at:.2f}; ticks {[(n, t.timestamp()) for n, t in ticks]}"
    fire_times = [t for _, t in ticks]
    assert len(fire_times) == len(set(fire_times)), seen  # each tick recorded once
    first_new = next(t for n, t in ticks if n == standby)
    assert first_new.timestamp() - killed_at < 5.0, seen  # measured: about 1 s
    gaps = [b.timestamp() - a.timestamp() for a, b in itertools.pairwise(fire_times)]
    assert max(gaps) <= 5.0, seen  # ticks continue: no gap beyond the take-over
    print(f"\nfirst tick of the new leader {first_new.timestamp() - killed_at:.2f} s after the "
          f"kill; longest gap between fire times {max(gaps):.0f} s")
