"""The warden of :mod:`picloud.workers.peers`, in process: reaping races, node queues, and a
worker whose connection drops (it looks dead, is reaped, and rejoins under the same id)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
from procrastinate import App, PsycopgConnector

from picloud.database import create_pool
from picloud.workers.listener import Listener
from picloud.workers.peers import QUEUE_CLASS, Warden, reap
from picloud.workers.worker import PicloudWorker
from tests.runtime_fixtures import wait_until


def _app(done: list[int]) -> App:
    app = App(connector=PsycopgConnector())

    @app.task(name="noop", queue="q1")
    async def noop(n: int) -> None:
        done.append(n)

    return app


async def _defer(app: App, queue: str, n: int) -> int:
    return await app.tasks["noop"].configure(queue=queue).defer_async(n=n)


async def _jobs(url: str) -> dict[int, tuple[str, str, int | None]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT id, status::text, queue_name, worker_id FROM procrastinate_jobs")
        return {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}


async def test_two_reapers_give_each_job_back_once(make_database: Callable[[], str]) -> None:
    url = make_database()
    pool = await create_pool(url, min_size=1, max_size=4)
    app = _app([])
    await app.open_async(pool)
    try:
        dead = await app.job_manager.register_worker()
        doing = [await _defer(app, "q1", i) for i in range(10)]
        doing += [await _defer(app, "node-gone", i) for i in range(5)]
        waiting_gone = [await _defer(app, "node-gone", i) for i in range(5)]
        waiting_live = [await _defer(app, "node-live", i) for i in range(5)]
        async with pool.connection() as conn:
            await conn.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
                               "WHERE id = ANY(%s)", (dead, doing))
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as live, \
                await psycopg.AsyncConnection.connect(url, autocommit=True) as c1, \
                await psycopg.AsyncConnection.connect(url, autocommit=True) as c2, \
                await psycopg.AsyncConnection.connect(url, autocommit=True) as listen:
            # a live worker serves node-live
            await live.execute("SELECT pg_advisory_lock_shared(%s, hashtext('node-live'))",
                               (QUEUE_CLASS,))
            await listen.execute('LISTEN "procrastinate_queue_v1#shared"')
            moved1, moved2 = await asyncio.gather(reap(c1, dead), reap(c2, dead))
            gen = listen.notifies(timeout=5, stop_after=1)
            notes = [n async for n in gen]
            assert await reap(c1, dead) == []  # a third reaper finds nothing left
        moved = moved1 + moved2
        assert len(moved) == len(set(moved))  # never twice
        assert sorted(moved) == sorted(doing + waiting_gone)
        assert len(notes) == 1
        jobs = await _jobs(url)
        assert all(jobs[j][:2] == ("todo", "q1") for j in doing[:10])  # a shared queue stays
        assert all(jobs[j][:2] == ("todo", "shared") for j in doing[10:] + waiting_gone)
        assert all(jobs[j][:2] == ("todo", "node-live") for j in waiting_live)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM procrastinate_workers WHERE id = %s",
                                     (dead,))
            row = await cur.fetchone()
        assert row == (0,)
    finally:
        await pool.close()


class _Member:
    """A worker of node ``name`` with its listener and warden (what a Node runs)."""

    def __init__(self, url: str, name: str, app: App) -> None:
        self.listener = Listener(url)
        self.worker = PicloudWorker(app, self.listener, [f"node-{name}", "shared"],
                                    concurrency=1, name=f"worker-{name}")
        self.warden = Warden(url, self.listener, self.worker, name)
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self.listener.start()
        self.task = asyncio.create_task(self.worker.run())
        self.warden.start()
        await asyncio.wait_for(self.worker.wait_ready(), 10)

    async def stop(self) -> None:
        await self.warden.stop()
        self.worker.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        await self.listener.stop()


async def test_a_dropped_connection_is_reaped_and_the_worker_rejoins(
        make_database: Callable[[], str]) -> None:
    url = make_database()
    done: list[int] = []
    pool = await create_pool(url, min_size=1, max_size=4)
    app = _app(done)
    await app.open_async(pool)
    a, b = _Member(url, "a", app), _Member(url, "b", app)
    try:
        await a.start()
        await b.start()
        await wait_until(lambda: a.warden.is_leader != b.warden.is_leader, 10)
        leader, member = (a, b) if a.warden.is_leader else (b, a)
        member_id = member.worker.worker_id
        await wait_until(lambda: leader.warden.watching == {member_id}, 10)
        connects = member.listener.connects
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (member.listener.backend_pid,))
        await wait_until(lambda: member_id in leader.warden.reaped, 10)
        # it reconnects, takes its lock again, re-registers under its id and is watched again
        await wait_until(lambda: member.listener.connects > connects, 10)
        await wait_until(lambda: leader.warden.watching == {member_id}, 10)
        assert member.worker.worker_id == member_id
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM procrastinate_workers WHERE id = %s",
                                     (member_id,))
            assert await cur.fetchone() == (1,)
        member_queue = member.worker.queues[0]
        await _defer(app, member_queue, 42)  # its own queue still runs on it
        await wait_until(lambda: done == [42], 10)
    finally:
        await b.stop()
        await a.stop()
        await pool.close()
