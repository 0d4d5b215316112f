"""Projections on a real PostgreSQL: the fold, rebuild, never skipping a late commit, idle cost."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from picloud.events import Metadata, append
from picloud.events import types as t
from picloud.projections import (
    Projector,
    get_invocation,
    get_schedule,
    get_script,
    list_invocations,
    list_schedules,
    list_scripts,
    list_versions,
    rebuild,
    script_stats,
)

META = Metadata(actor="alice", node="n1")
READ_MODEL = {
    "scripts": "name",
    "script_versions": "name, version",
    "invocations": "id",
    "schedules": "name",
    "script_stats": "script",
    "projection_checkpoints": "name",
}
Conn = psycopg.AsyncConnection[Any]


async def connect(url: str) -> Conn:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def dump(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, key in READ_MODEL.items():
        cur = await conn.execute(f"SELECT * FROM {table} ORDER BY {key}")  # type: ignore[arg-type]
        out[table] = await cur.fetchall()
    return out


@contextlib.asynccontextmanager
async def running(projector: Projector) -> AsyncIterator[Projector]:
    task = asyncio.create_task(projector.run())
    try:
        yield projector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def upload(name: str, version: int, source: str = "1") -> t.Event:
    return t.ScriptVersionUploaded(
        name=name, version=version, sha256=f"{version:064x}", source=source
    )


def requested(iid: str, script: str = "hello", version: int = 1, **kw: Any) -> t.Event:
    return t.InvocationRequested(
        invocation_id=iid,
        script=script,
        version=version,
        trigger=kw.pop("trigger", "http"),
        request={"method": "GET"},
        event={"type": "http"},
        **kw,
    )


def succeeded(iid: str, script: str = "hello", ms: float = 2.0) -> t.Event:
    return t.InvocationSucceeded(
        invocation_id=iid,
        script=script,
        version=1,
        response={"status": 200},
        logs=["hi"],
        duration_ms=ms,
        fuel_used=10,
        node="n1",
    )


def failed(iid: str, script: str = "hello", ms: float = 4.0) -> t.Event:
    return t.InvocationFailed(
        invocation_id=iid,
        script=script,
        version=1,
        error={"type": "runtime", "message": "boom"},
        logs=[],
        duration_ms=ms,
        fuel_used=3,
        node="n1",
    )


async def write_history(conn: Conn) -> int:
    """A log touching every handler; returns the last position."""
    last = 0

    async def put(stream: str, *events: t.Event) -> None:
        nonlocal last
        recs = await append(conn, stream, list(events), expected_version=None, metadata=META)
        last = recs[-1].position

    await put("script-hello", upload("hello", 1, "1"), upload("hello", 2, "2"))
    await put("script-hello", t.ScriptRolledBack(name="hello", version=1))
    await put("script-gone", upload("gone", 1))
    await put("script-gone", t.ScriptDeleted(name="gone"))
    await put("invocation-i1", requested("i1"), succeeded("i1", ms=2.0))
    await put("invocation-i2", requested("i2"), failed("i2", ms=4.0))
    await put("invocation-i3", requested("i3", trigger="replay", replay_of="i2"))
    await put("invocation-i3", succeeded("i3", ms=6.0))
    await put("invocation-i3", failed("i3", ms=100.0))  # a second result counts for nothing
    await put("invocation-i4", requested("i4"))
    await put(
        "schedule-tick",
        t.ScheduleSet(
            name="tick", script="hello", cron="*/2 * * * * *", timezone="UTC", payload={"k": 1}
        ),
    )
    await put(
        "schedule-tick",
        t.CronTicked(
            schedule="tick", fire_time=datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC), invocation_id="i5"
        ),
    )
    await put(
        "schedule-daily",
        t.ScheduleSet(
            name="daily", script="hello", cron="0 9 * * *", timezone="Europe/Paris", payload=None
        ),
    )
    await put(
        "schedule-gone",
        t.ScheduleSet(name="gone", script="hello", cron="0 * * * *", timezone="UTC", payload=None),
    )
    await put("schedule-gone", t.ScheduleDeleted(name="gone"))
    await put("token-t1", t.TokenCreated(token_id="t1", name="ci", scopes=["admin"]))
    return last


async def test_the_projector_folds_the_log(make_database: Callable[[], str]) -> None:
    url = make_database()
    async with await connect(url) as conn, running(Projector(url)) as projector:
        last = await write_history(conn)
        await projector.wait_for(last, timeout=10)
        assert projector.is_leader

        scripts = await list_scripts(conn)
        assert [(s.name, s.current_version, s.latest_version) for s in scripts] == [("hello", 1, 2)]
        hello = await get_script(conn, "hello")
        assert hello is not None and hello.sha256 == f"{1:064x}"
        assert await get_script(conn, "gone") is None
        versions = await list_versions(conn, "hello")
        assert [(v.version, v.source, v.actor) for v in versions] == [
            (1, "1", "alice"),
            (2, "2", "alice"),
        ]

        i1, i2, i3, i4 = [await get_invocation(conn, f"i{n}") for n in range(1, 5)]
        assert i1 is not None and i1.status == "succeeded" and i1.logs == ["hi"]
        assert i1.response == {"status": 200} and i1.duration_ms == 2.0 and i1.fuel_used == 10
        assert (
            i2 is not None
            and i2.status == "failed"
            and i2.error == {"type": "runtime", "message": "boom"}
        )
        assert i3 is not None and i3.status == "succeeded" and i3.replay_of == "i2"
        assert i3.duration_ms == 6.0
        assert i4 is not None and i4.status == "pending" and i4.finished_at is None

        items, cursor = await list_invocations(conn, limit=3)
        assert [i.id for i in items] == ["i4", "i3", "i2"] and cursor is not None
        items, cursor = await list_invocations(conn, limit=3, cursor=cursor)
        assert [i.id for i in items] == ["i1"] and cursor is None
        items, _ = await list_invocations(conn, status="failed")
        assert [i.id for i in items] == ["i2"]
        with pytest.raises(ValueError):
            await list_invocations(conn, cursor="nope")

        [stats] = await script_stats(conn)
        assert (stats.script, stats.invocations, stats.succeeded, stats.failed) == (
            "hello",
            3,
            2,
            1,
        )
        assert stats.total_duration_ms == 12.0 and stats.max_duration_ms == 6.0

        assert [s.name for s in await list_schedules(conn)] == ["daily", "tick"]
        tick = await get_schedule(conn, "tick")
        assert tick is not None and tick.payload == {"k": 1}
        assert tick.last_fire_time == datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC)
        assert tick.next_fire_time == datetime(2030, 1, 1, 0, 0, 4, tzinfo=UTC)
        daily = await get_schedule(conn, "daily")
        assert daily is not None and daily.next_fire_time is not None
        assert daily.next_fire_time.astimezone(UTC).hour in (7, 8)  # 09:00 Paris


async def test_rebuild_reproduces_the_read_model_exactly(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    async with await connect(url) as conn:
        async with running(Projector(url, batch=3)) as projector:  # small batches: many commits
            last = await write_history(conn)
            await projector.wait_for(last, timeout=10)
        live = await dump(conn)
        assert live["scripts"] and live["invocations"] and live["schedules"]

        result = await rebuild(conn)
        assert result.position == last and result.events == 19
        assert await dump(conn) == live

        # A damaged read model is repaired.
        await conn.execute("DELETE FROM invocations WHERE id = 'i1'")
        await conn.execute("UPDATE scripts SET current_version = 99")
        await conn.execute(
            "INSERT INTO schedules SELECT 'bogus', script, cron, timezone, "
            "payload, next_fire_time, last_fire_time, created_at, updated_at "
            "FROM schedules LIMIT 1"
        )
        assert await dump(conn) != live
        await rebuild(conn)
        assert await dump(conn) == live

        # The projector goes on from the rebuilt checkpoint.
        async with running(Projector(url)) as projector:
            [rec] = await append(
                conn, "invocation-i9", [requested("i9")], expected_version=0, metadata=META
            )
            await projector.wait_for_event(rec, timeout=10)
        assert (await get_invocation(conn, "i9")) is not None
        assert len((await dump(conn))["invocations"]) == len(live["invocations"]) + 1


async def test_a_late_commit_is_projected(make_database: Callable[[], str]) -> None:
    url = make_database()
    async with (
        await connect(url) as a,
        await connect(url) as b,
        await connect(url) as r,
        running(Projector(url)) as projector,
    ):
        async with a.transaction():
            [ea] = await append(
                a, "invocation-late-a", [requested("late-a")], expected_version=0, metadata=META
            )
            async with b.transaction():
                [eb] = await append(
                    b, "invocation-late-b", [requested("late-b")], expected_version=0, metadata=META
                )
            assert ea.position < eb.position
            # b is committed, but a (older, lower position) is not: b must wait for a.
            with pytest.raises(TimeoutError):
                await projector.wait_for_event(eb, timeout=0.3)
            assert await get_invocation(r, "late-b") is None
        await projector.wait_for_event(eb, timeout=5)
        await projector.wait_for_event(ea, timeout=5)
        assert await get_invocation(r, "late-a") is not None
        assert await get_invocation(r, "late-b") is not None


async def test_concurrent_out_of_order_commits_are_all_projected(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    rng = random.Random(11)
    records = []

    async def writer(n: int) -> None:
        async with await connect(url) as c:
            for i in range(20):
                async with c.transaction():
                    if rng.random() < 0.5:
                        await c.execute("SELECT pg_current_xact_id()")
                        await asyncio.sleep(rng.random() / 200)
                    recs = await append(
                        c,
                        f"invocation-w{n}-{i}",
                        [requested(f"w{n}-{i}")],
                        expected_version=0,
                        metadata=META,
                    )
                    await asyncio.sleep(rng.random() / 200)
                records.extend(recs)

    async with await connect(url) as conn, running(Projector(url, batch=4)) as projector:
        await asyncio.gather(*(writer(n) for n in range(5)))
        for rec in records:
            await projector.wait_for_event(rec, timeout=10)
        cur = await conn.execute("SELECT count(*), count(DISTINCT id) FROM invocations")
        assert await cur.fetchone() == (100, 100)
        commit_order = [r.position for r in records]
        assert commit_order != sorted(commit_order), "no out-of-order commit happened"
        snapshot = await dump(conn)
        await rebuild(conn)
        assert await dump(conn) == snapshot


async def test_a_standby_waits_and_still_answers_wait_for(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    async with await connect(url) as conn, running(Projector(url)) as leader:
        await asyncio.sleep(0.2)
        async with running(Projector(url)) as standby:
            [rec] = await append(
                conn, "invocation-s1", [requested("s1")], expected_version=0, metadata=META
            )
            await standby.wait_for(rec.position, timeout=5)  # learnt from the leader's NOTIFY
            assert leader.is_leader and not standby.is_leader


async def test_an_idle_projector_sends_no_statements(
    make_database: Callable[[], str], admin_url: str
) -> None:
    """pg_stat_activity (live, unlike the statistics counters) shows when each of the
    projector's connections last started a statement: over 3 s idle, none does."""
    url = make_database()

    async def last_statements(observer: Conn) -> list[tuple[Any, ...]]:
        cur = await observer.execute(
            "SELECT pid, query_start, state_change FROM pg_stat_activity "
            "WHERE application_name = 'picloud-projector' AND datname = current_database() "
            "ORDER BY pid"
        )
        return await cur.fetchall()

    async with (
        await connect(url) as conn,
        await connect(url) as observer,
        running(Projector(url)) as projector,
    ):
        [rec] = await append(
            conn, "invocation-idle", [requested("idle")], expected_version=0, metadata=META
        )
        await projector.wait_for_event(rec, timeout=5)
        await asyncio.sleep(0.2)
        before = await last_statements(observer)
        assert len(before) == 2  # the listening and the leading connection
        await asyncio.sleep(3)
        assert await last_statements(observer) == before
        # The measure can see a statement: one more event moves the projector.
        [rec] = await append(
            conn, "invocation-idle2", [requested("idle2")], expected_version=0, metadata=META
        )
        await projector.wait_for_event(rec, timeout=5)
        assert await last_statements(observer) != before


async def test_projector_on_a_pool_and_the_shared_listener(
    make_database: Callable[[], str],
) -> None:
    from picloud.database import create_pool
    from picloud.workers.listener import Listener

    url = make_database()
    pool = await create_pool(url, min_size=1, max_size=4)
    listener = Listener(url)
    listener.start()
    try:
        async with pool.connection() as conn, running(Projector(pool, listener)) as projector:
            await listener.wait_connected(10)
            for n in range(3):
                [rec] = await append(
                    conn,
                    f"invocation-l{n}",
                    [requested(f"l{n}")],
                    expected_version=0,
                    metadata=META,
                )
                await projector.wait_for(rec.position, timeout=5)  # xid looked up in the pool
                assert await get_invocation(conn, f"l{n}") is not None
    finally:
        await listener.stop()
        await pool.close()


async def test_rebuild_while_the_projector_runs_and_writers_append(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    records = []

    async def writer(n: int) -> None:
        async with await connect(url) as c:
            for i in range(30):
                iid = f"rw{n}-{i}"
                recs = await append(
                    c, f"invocation-{iid}", [requested(iid)], expected_version=0, metadata=META
                )
                recs += await append(
                    c, f"invocation-{iid}", [succeeded(iid)], expected_version=1, metadata=META
                )
                records.extend(recs)

    async def rebuilder() -> None:
        async with await connect(url) as c:
            for _ in range(5):
                await rebuild(c)
                await asyncio.sleep(0.02)

    async with await connect(url) as conn, running(Projector(url, batch=5)) as projector:
        await asyncio.gather(writer(1), writer(2), rebuilder())
        for rec in records:
            await projector.wait_for_event(rec, timeout=10)
        live = await dump(conn)
    [stats] = live["script_stats"]
    assert stats[1:4] == (60, 60, 0)  # each invocation counted once, not once per fold
    async with await connect(url) as conn:
        await rebuild(conn)
        assert await dump(conn) == live


async def test_an_event_held_back_by_another_transaction_is_projected_without_a_new_notify(
    make_database: Callable[[], str],
) -> None:
    """An older transaction that writes no event (so its end sends no NOTIFY) holds read_all
    back; the projector retries on its own and projects the event once it ends."""
    from picloud.projections import lag

    url = make_database()
    async with (
        await connect(url) as blocker,
        await connect(url) as conn,
        running(Projector(url)) as projector,
    ):
        await asyncio.sleep(0.2)
        async with blocker.transaction():
            await blocker.execute("SELECT pg_current_xact_id()")  # an older running xid
            [rec] = await append(
                conn, "invocation-held", [requested("held")], expected_version=0, metadata=META
            )
            with pytest.raises(TimeoutError):
                await projector.wait_for_event(rec, timeout=0.3)
            assert await lag(conn) == 1
        await projector.wait_for_event(rec, timeout=2)  # no event, no NOTIFY: the retry did it
        assert await lag(conn) == 0
        assert await get_invocation(conn, "held") is not None


async def test_a_batch_from_a_stale_checkpoint_rolls_back(
    make_database: Callable[[], str],
) -> None:
    from picloud.projections.runner import CheckpointMoved, project_batch

    url = make_database()
    async with await connect(url) as conn:
        [r1] = await append(
            conn, "invocation-c1", [requested("c1")], expected_version=0, metadata=META
        )
        n, ckpt, held = await project_batch(conn)
        assert (n, ckpt, held) == (1, (r1.xid, r1.position), False)
        await append(conn, "invocation-c1", [succeeded("c1")], expected_version=1, metadata=META)
        await rebuild(conn)  # the checkpoint moves past what a stale batch started from
        before = await dump(conn)
        with pytest.raises(CheckpointMoved):
            await project_batch(conn, (0, 0))  # would fold c1 twice
        assert await dump(conn) == before
        assert (await project_batch(conn))[0] == 0


async def test_a_stream_of_events_shares_batches_and_wait_for_cuts_the_window_short(
    make_database: Callable[[], str],
) -> None:
    """Under a stream of appends the projector batches (at most one catch-up per
    ``min_interval``), off the invocation hot path; a writer waiting to read its own write in
    the same process does not wait out the window."""
    url = make_database()
    async with await connect(url) as conn, running(Projector(url, min_interval=2.0)) as projector:
        first = (await append(conn, "script-a", [upload("a", 1)], expected_version=0,
                              metadata=META))[-1]
        await projector.wait_for(first.position, timeout=5, xid=first.xid)
        loop = asyncio.get_running_loop()
        started = loop.time()
        batches = projector.batches
        last = None
        for n in range(20):
            last = (await append(conn, f"invocation-b{n}", [requested(f"b{n}")],
                                 expected_version=0, metadata=META))[-1]
            await asyncio.sleep(0.01)
        assert last is not None
        await projector.wait_for(last.position, timeout=5, xid=last.xid)
        assert loop.time() - started < 1.5  # not the 2 s window
        assert projector.batches - batches <= 3  # not one per event
