# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""The invocation hot path: the result, the job's completion and the reply in one statement;
durability of results under async commit (a lost result transaction is retried and recorded
once); the reply that hands the result to the ingress."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from picloud.database import create_pool
from picloud.events import store, types
from picloud.ingress.waiter import JOB_DONE_CHANNEL, JobWaiter, Reply
from picloud.workers.listener import Listener
from picloud.workers.tasks import create_app, inline_request, record_result, reply_payload
from tests.runtime_fixtures import client, engine_ready, node  # noqa: F401 (fixtures)
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
            if len(notes) >= 3:
                break
            await asyncio.sleep(0.01)
        # the reply (with the result, first) then the id-only completions of both jobs
        assert len(notes) == 3, notes
        reply = msgspec_reply(notes[0])
        assert reply.job_id == first and reply.result["type"] == "invocation.succeeded"
        assert reply.result["data"] == events[1].data
        assert notes[1:] == [str(first), str(second)]
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
