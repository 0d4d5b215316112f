# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""The invocation hot path: the result, the job's completion and the reply in one statement;
durability of results under async commit (a lost result transaction is retried and recorded
once); the reply that hands the result to the ingress."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from picloud.database import create_pool
from picloud.events import store, types
from picloud.ingress.waiter import EARLY_KEPT, JOB_DONE_CHANNEL, JobWaiter, Reply
from picloud.workers.listener import Listener
from picloud.workers.tasks import (
    INVOKE_TASK,
    REQUEST_AND_DEFER,
    create_app,
    inline_request,
    record_result,
    reply_payload,
    request_and_defer,
)
from tests.runtime_fixtures import client, engine_ready, node, wait_until  # noqa: F401
from tests.test_runtime_worker import _start, _stop


def _requested(inv: str) -> types.InvocationRequested:
    return types.InvocationRequested(
        invocation_id=inv, script="s", version=1, trigger="http", request=None,  # type: ignore[arg-type]
        event={"type": "http", "id": inv, "time": "2026-01-01T00:00:00Z", "data": {}},
        replay_of=None)


def _succeeded(inv: str, body: str = "ok") -> types.InvocationSucceeded:
    return types.InvocationSucceeded(
        invocation_id=inv, script="s", version=1,
        response={"status": 200, "headers": {"content-type": "text/plain"}, "body": body},
        logs=[], duration_ms=0.5, fuel_used=10, node="n")


async def _doing_jobs(pool: Any, app: Any, inv: str, n: int) -> list[int]:
    ids = []
    async with pool.connection() as conn:
        for _ in range(n):
            ids.append(await app.tasks["picloud.invoke"].configure(
                connection=conn, queue="nobody").defer_async(invocation_id=inv))
        await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = ANY(%s)",
                           (ids,))
    return ids


async def test_result_recorded_once_job_completed_and_reply_sent(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    app = create_app()
    await app.open_async(pool)
    listener = Listener(database_url)
    listener.start()
    notes: list[str] = []
    await listener.subscribe(JOB_DONE_CHANNEL, lambda ch, payload: notes.append(payload))
    await listener.wait_connected(10)
    try:
        inv = str(uuid.uuid4())
        stream = f"invocation-{inv}"
        meta = store.Metadata(correlation_id=inv, node="n")
        async with pool.connection() as conn:
            await store.append(conn, stream, [_requested(inv)], expected_version=0,
                               metadata=meta)
        first, second = await _doing_jobs(pool, app, inv, 2)
        async with pool.connection() as conn:
            assert await record_result(conn, stream, _succeeded(inv), meta, first,
                                       async_commit=True)
            # async commit was local to that statement's transaction
            cur = await conn.execute("SHOW synchronous_commit")
            assert (await cur.fetchone()) == ("on",)
            # a second execution of the same invocation: no second event, its job completed
            assert not await record_result(conn, stream, _succeeded(inv, "again"), meta,
                                           second)
            events = await store.read_stream(conn, stream)
            assert [e.type for e in events] == ["invocation.requested", "invocation.succeeded"]
            assert events[1].data["response"]["body"] == "ok"
            cur = await conn.execute(
                "SELECT status::text FROM procrastinate_jobs WHERE id = ANY(%s)",
                ([first, second],))
            assert [r[0] for r in await cur.fetchall()] == ["succeeded", "succeeded"]
        for _ in range(200):
            if len(notes) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # nothing else comes
        # the reply (with the result) for the first job, which needs no id-only NOTIFY; the
        # duplicate sent no reply, so its completion is announced by the trigger
        assert len(notes) == 2, notes
        reply = msgspec_reply(notes[0])
        assert reply.job_id == first and reply.result["type"] == "invocation.succeeded"
        assert reply.result["data"] == events[1].data
        assert notes[1:] == [str(second)]
    finally:
        await listener.stop()
        await app.close_async()
        await pool.close()


def msgspec_reply(payload: str) -> Reply:
    import msgspec

    return msgspec.json.decode(payload, type=Reply)


def test_reply_too_big_for_a_notify_is_not_sent() -> None:
    inv = str(uuid.uuid4())
    assert reply_payload(1, _succeeded(inv, "x" * 100)) is not None
    assert reply_payload(1, _succeeded(inv, "x" * 8000)) is None


async def test_waiter_resolves_with_the_reply() -> None:
    waiter = JobWaiter(Listener("postgresql://unused"), None)  # type: ignore[arg-type]
    fut = waiter.expect(42)
    payload = reply_payload(42, _succeeded("i"))
    assert payload is not None
    waiter._on_notify(JOB_DONE_CHANNEL, payload)
    reply = fut.result()
    assert isinstance(reply, Reply) and reply.result["data"]["response"]["body"] == "ok"
    fut = waiter.expect(43)
    waiter._on_notify(JOB_DONE_CHANNEL, "43")
    assert fut.result() is None


async def test_lost_result_transaction_is_retried_after_reconnect(database_url: str) -> None:
    """What async commit may lose in a server crash: the result transaction. The job is then
    ``doing`` under a live worker that is not running it; after the listener reconnects (the
    server came back), the worker re-queues it and it runs again."""
    done: list[int] = []
    pool, app, listener, _waiter, worker, task = await _start(database_url, done)
    try:
        async with pool.connection() as conn:
            job_id = await app.tasks["noop"].configure(queue="elsewhere").defer_async(n=3)
            # as if this worker had fetched it and its result transaction had been lost
            await conn.execute("UPDATE procrastinate_jobs SET status = 'doing', queue_name = 'q1',"
                               " worker_id = %s WHERE id = %s", (worker.worker_id, job_id))
            await conn.execute("SELECT pg_terminate_backend(%s, 5000)", (listener.backend_pid,))
        for _ in range(500):
            if done:
                break
            await asyncio.sleep(0.01)
        assert done == [3]
        assert job_id in worker.recovered
    finally:
        await _stop(pool, listener, worker, task)


async def test_running_job_is_not_requeued_on_reconnect(database_url: str) -> None:
    done: list[int] = []
    pool, app, listener, _waiter, worker, task = await _start(database_url, done)
    try:
        release = asyncio.Event()
        original = worker._process_job

        async def slow(context: Any) -> None:
            await release.wait()
            await original(context)

        worker._process_job = slow  # type: ignore[method-assign]
        await app.tasks["noop"].defer_async(n=4)
        for _ in range(500):
            if worker._running_jobs:
                break
            await asyncio.sleep(0.01)
        assert worker._running_jobs
        connects = listener.connects
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_terminate_backend(%s, 5000)", (listener.backend_pid,))
        for _ in range(500):
            if listener.connects > connects:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert worker.recovered == []
        release.set()
        for _ in range(500):
            if done:
                break
            await asyncio.sleep(0.01)
        assert done == [4]
    finally:
        await _stop(pool, listener, worker, task)



def test_inline_request_only_when_small() -> None:
    small = {"invocation_id": "i", "script": "s", "version": 1, "request": {"body": "x"}}
    assert inline_request(small) == {"requested": small}
    big = dict(small, request={"body": "x" * 9000})
    assert inline_request(big) == {}


@pytest.mark.usefixtures("engine_ready")
async def test_invocation_reads_nothing_back(client: httpx.AsyncClient, node: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With the request in the job's args, the source cached and the result in the reply, a
    sync invocation reads neither its request (worker) nor its result (ingress) from the log;
    with a body too big to travel inline, the worker reads the request from the log."""
    r = await client.put("/api/scripts/echo", content="request.body")
    assert r.status_code in (200, 201)
    assert (await client.post("/fn/echo", content="warm")).text == "warm"
    reads: list[str] = []
    original = store.read_stream

    async def counting(conn: Any, stream: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(stream)
        return await original(conn, stream, *args, **kwargs)

    monkeypatch.setattr(store, "read_stream", counting)
    r = await client.post("/fn/echo", content="hello")
    assert r.status_code == 200 and r.text == "hello"
    assert reads == []
    r = await client.post("/fn/echo", content="y" * 9000)
    assert r.status_code == 200 and r.text == "y" * 9000
    inv = r.headers["x-picloud-invocation"]
    # the worker read the request; the result (over 7 kB) was read back by the ingress
    assert reads == [f"invocation-{inv}", f"invocation-{inv}"]


@pytest.mark.usefixtures("engine_ready")
async def test_sync_invocation_durable_result_async_one_does_not_wait(
        client: httpx.AsyncClient, node: Any) -> None:
    """A sync invocation's job asks for a result commit that waits for its flush (covering the
    request, committed without waiting); a 202 one does not (its request waited)."""
    r = await client.put("/api/scripts/durable", content='"d"')
    assert r.status_code in (200, 201)
    sync_id = (await client.get("/fn/durable")).headers["x-picloud-invocation"]
    r = await client.get("/fn/durable", headers={"prefer": "respond-async"})
    assert r.status_code == 202
    async_id = r.headers["x-picloud-invocation"]
    async with node.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT args->>'invocation_id', args ? 'sync_result' FROM procrastinate_jobs "
            "WHERE args->>'invocation_id' = ANY(%s)", ([sync_id, async_id],))
        flags = dict(await cur.fetchall())
    assert flags == {sync_id: True, async_id: False}
    # the worker's fetch (committed without waiting) with no job to give
    assert await node.services.jobs.job_manager.fetch_job(queues=["nobody"],
                                                          worker_id=None) is None


async def test_waiter_keeps_a_completion_that_comes_before_its_future() -> None:
    """The request statement commits by itself: its job may complete before ``expect``."""
    waiter = JobWaiter(Listener("postgresql://unused"), None)  # type: ignore[arg-type]
    payload = reply_payload(7, _succeeded("i", "early"))
    assert payload is not None
    waiter._on_notify(JOB_DONE_CHANNEL, payload)
    waiter._on_notify(JOB_DONE_CHANNEL, "7")  # the trigger's id-only NOTIFY does not replace it
    reply = waiter.expect(7).result()
    assert isinstance(reply, Reply) and reply.result["data"]["response"]["body"] == "early"
    assert not waiter.expect(8).done()
    for job_id in range(100, 100 + EARLY_KEPT + 1):  # bounded: the oldest are dropped
        waiter._on_notify(JOB_DONE_CHANNEL, str(job_id))
    assert not waiter.expect(100).done() and waiter.expect(101).done()


_JOB_COLUMNS = ("SELECT queue_name, task_name, priority, lock, queueing_lock, args, "
                "scheduled_at, status, attempts FROM procrastinate_jobs WHERE id = %s")


async def test_request_statement_defers_the_job_defer_async_would(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    app = create_app()
    await app.open_async(pool)
    try:
        inv = str(uuid.uuid4())
        args = {"invocation_id": inv, **inline_request(types.encode(_requested(inv)))}
        async with pool.connection() as conn:
            ours = await request_and_defer(conn, f"invocation-{inv}", _requested(inv),
                                           store.Metadata(), queue="nobody", args=args,
                                           async_commit=False)
            theirs = await app.tasks[INVOKE_TASK].configure(
                connection=conn, queue="nobody").defer_async(**args)
            rows = [await (await conn.execute(_JOB_COLUMNS, (job,))).fetchone()
                    for job in (ours, theirs)]
            events = await store.read_stream(conn, f"invocation-{inv}")
        assert rows[0] == rows[1] and rows[0] is not None
        assert [e.type for e in events] == ["invocation.requested"]
        assert events[0].data == args["requested"]
    finally:
        await pool.close()


async def test_request_statement_is_atomic(database_url: str) -> None:
    """A failure in the defer half of the statement (here a job without a task name) leaves
    no event either; a second request for the same stream appends and defers nothing."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        inv = str(uuid.uuid4())
        stream = f"invocation-{inv}"
        params = {**store.append_one_params(stream, _requested(inv), 0, store.Metadata()),
                  "queue": "nobody", "task": None, "args": Jsonb({}), "sync": None}
        async with pool.connection() as conn:
            jobs_before = await _count_jobs(conn)
            with pytest.raises(psycopg.errors.NotNullViolation):
                await conn.execute(REQUEST_AND_DEFER, params)
            assert await store.read_stream(conn, stream) == []
            await request_and_defer(conn, stream, _requested(inv), store.Metadata(),
                                    queue="nobody", args={}, async_commit=False)
            with pytest.raises(store.ConcurrencyError):
                await request_and_defer(conn, stream, _requested(inv), store.Metadata(),
                                        queue="nobody", args={}, async_commit=False)
            assert len(await store.read_stream(conn, stream)) == 1
            assert await _count_jobs(conn) == jobs_before + 1
    finally:
        await pool.close()


async def _count_jobs(conn: Any) -> int:
    row = await (await conn.execute("SELECT count(*) FROM procrastinate_jobs")).fetchone()
    return int(row[0])


@pytest.mark.usefixtures("engine_ready")
async def test_script_versions_are_read_once_and_follow_changes(
        client: httpx.AsyncClient, node: Any, database_url: str) -> None:
    """The ingress reads a script's version once; an upload on this node, or a change of the
    read model made by anyone (a trigger's NOTIFY), is seen by the next invocation."""
    directory = node.services.scripts
    assert (await client.put("/api/scripts/dir", content='"one"')).status_code in (200, 201)
    assert (await client.get("/fn/dir")).text == "one"
    await asyncio.sleep(0.3)  # the upload's own NOTIFY may arrive after the first call
    assert (await client.get("/fn/dir")).text == "one"
    reads = directory.reads
    for _ in range(3):
        assert (await client.get("/fn/dir")).text == "one"
    assert directory.reads == reads
    assert (await client.put("/api/scripts/dir", content='"two"')).status_code == 201
    assert (await client.get("/fn/dir")).text == "two"
    # Behind this node's back: the read model says version 1 again (as another node's
    # projector would write it); the NOTIFY drops the cached version.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("UPDATE scripts SET current_version = 1 WHERE name = 'dir'")
    await wait_until(lambda: _is_gone(directory, "dir"))
    assert (await client.get("/fn/dir")).text == "one"
    assert (await client.delete("/api/scripts/dir")).status_code in (200, 204)
    assert (await client.get("/fn/dir")).status_code == 404


async def _is_gone(directory: Any, name: str) -> bool:
    return name not in directory._entries
