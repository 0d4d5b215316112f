"""The worker: no lost wake-ups, no statements while idle, liveness and recovery."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from procrastinate import App, PsycopgConnector

from picloud.database import create_pool
from picloud.ingress.waiter import JobWaiter
from picloud.workers.listener import Listener
from picloud.workers.worker import LIVENESS_CLASS, PicloudWorker


def _app(done: list[int]) -> App:
    app = App(connector=PsycopgConnector())

    @app.task(name="noop", queue="q1")
    async def noop(n: int) -> None:
        done.append(n)

    return app


async def _start(database_url: str, done: list[int], concurrency: int = 1) -> tuple[Any, ...]:
    pool = await create_pool(database_url, min_size=1, max_size=8)
    app = _app(done)
    await app.open_async(pool)
    listener = Listener(database_url)
    listener.start()
    waiter = JobWaiter(listener, pool)
    await waiter.start()
    worker = PicloudWorker(app, listener, ["q1"], concurrency=concurrency)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker._ready.wait(), 10)
    return pool, app, listener, waiter, worker, task


async def _stop(pool: Any, listener: Listener, worker: PicloudWorker, task: Any) -> None:
    worker.stop()
    await asyncio.wait_for(task, 10)
    await listener.stop()
    await pool.close()


async def test_sequential_jobs_never_stall(database_url: str) -> None:
    """The stock 3.10 worker, polling off, stalled 14 of 3,000: it cleared its wake-up event
    after fetching. Ours clears it before: each job must complete well within a second."""
    done: list[int] = []
    pool, app, listener, waiter, worker, task = await _start(database_url, done)
    try:
        stalls = 0
        started = time.perf_counter()
        n = 2000
        for i in range(n):
            async with pool.connection() as conn, conn.transaction():
                job_id = await app.tasks["noop"].configure(connection=conn).defer_async(n=i)
                fut = waiter.expect(job_id)
            try:
                await asyncio.wait_for(fut, 2.0)
            except TimeoutError:
                stalls += 1
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,))
                    print("stalled job", i, job_id, await cur.fetchone(), worker.fetches, done[-3:])
                break
        elapsed = time.perf_counter() - started
        assert stalls == 0
        assert done == list(range(n))
        print(f"{n} sequential jobs in {elapsed:.2f} s ({elapsed / n * 1000:.2f} ms each)")
    finally:
        await _stop(pool, listener, worker, task)


async def _xacts(admin_url: str, dbname: str) -> int:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        cur = await conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_idle_worker_sends_no_statement(database_url: str, admin_url: str) -> None:
    done: list[int] = []
    pool, _app, listener, _waiter, worker, task = await _start(database_url, done)
    dbname = psycopg.conninfo.conninfo_to_dict(database_url).get("dbname") or \
        database_url.rsplit("/", 1)[-1].split("?")[0]
    try:
        # Backends flush their statistics when idle, at the latest 10 s later: let the
        # start-up statements reach pg_stat_database before the window opens.
        await asyncio.sleep(11.0)
        before = await _xacts(admin_url, str(dbname))
        await asyncio.sleep(6.0)
        after = await _xacts(admin_url, str(dbname))
        assert after - before == 0, f"{after - before} transactions while idle"
    finally:
        await _stop(pool, listener, worker, task)


async def test_worker_holds_liveness_lock_and_recovers_dead_jobs(database_url: str) -> None:
    done: list[int] = []
    pool = await create_pool(database_url, min_size=1, max_size=4)
    app = _app(done)
    await app.open_async(pool)
    # A "dead" worker: registered, holds no lock, and has a job in 'doing'.
    dead_id = await app.job_manager.register_worker()
    job_id = await app.tasks["noop"].defer_async(n=99)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
            (dead_id, job_id))
    await pool.close()
    pool, _app2, listener, waiter, worker, task = await _start(database_url, done)
    try:
        fut = waiter.expect(job_id)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                                     (job_id,))
            row = await cur.fetchone()
        if row and row[0] != "succeeded":
            await asyncio.wait_for(fut, 5)
        assert job_id in worker.recovered
        assert done == [99]
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND granted", (LIVENESS_CLASS, worker.worker_id))
            row = await cur.fetchone()
        assert row is not None and row[0] == 1
    finally:
        await _stop(pool, listener, worker, task)


@pytest.mark.parametrize("late", [True])
async def test_listener_late_subscription(database_url: str, late: bool) -> None:
    listener = Listener(database_url)
    listener.start()
    await listener.wait_connected(10)
    got: list[str] = []
    await listener.subscribe("late_channel", lambda ch, payload: got.append(payload))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("NOTIFY late_channel, 'hello'")
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.01)
    await listener.stop()
    assert got == ["hello"]


async def test_notify_during_fetch_is_not_lost(database_url: str) -> None:
    """Deterministic form of the lost wake-up: a job's NOTIFY reaches the worker while a fetch
    (that did not see the job) is running. The stock worker cleared its event after such a
    fetch and slept with a job waiting; ours fetches again."""
    done: list[int] = []
    pool = await create_pool(database_url, min_size=1, max_size=8)
    app = _app(done)
    await app.open_async(pool)
    listener = Listener(database_url)
    listener.start()
    worker = PicloudWorker(app, listener, ["q1"], concurrency=1)
    original = app.job_manager.fetch_job
    injected: list[int] = []

    async def fetch_job(queues: Any, worker_id: int) -> Any:
        job = await original(queues=queues, worker_id=worker_id)
        if job is None and not injected:
            injected.append(await app.tasks["noop"].defer_async(n=7))
            for _ in range(500):  # until the NOTIFY has been delivered to the worker
                if worker._new_job_event.is_set():
                    break
                await asyncio.sleep(0.002)
            assert worker._new_job_event.is_set()
        return job

    app.job_manager.fetch_job = fetch_job  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if done:
                break
            await asyncio.sleep(0.01)
        assert injected and done == [7]
    finally:
        await _stop(pool, listener, worker, task)


async def test_fetch_after_reconnect(database_url: str) -> None:
    """A job deferred while the listener is disconnected (no NOTIFY reaches anyone) runs once
    the listener is back: the worker fetches after every (re)connect."""
    done: list[int] = []
    pool, app, listener, _waiter, worker, task = await _start(database_url, done)
    try:
        old_pid = listener.backend_pid
        connects = listener.connects
        async with pool.connection() as conn:
            # the second argument waits (up to 5 s) until the backend is gone
            await conn.execute("SELECT pg_terminate_backend(%s, 5000)", (old_pid,))
            # deferred at once, while the listener is (about to be) gone
            await app.tasks["noop"].configure(connection=conn).defer_async(n=5)
        for _ in range(500):
            if done and listener.connects > connects:
                break
            await asyncio.sleep(0.01)
        assert done == [5]
        assert listener.connects == connects + 1
    finally:
        await _stop(pool, listener, worker, task)
