"""The event store on a real PostgreSQL: fields, optimistic concurrency, append-only,
tamper detection, and never skipping a late commit."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import psycopg_pool
import pytest

from picloud.events import (
    ConcurrencyError,
    Metadata,
    append,
    query_events,
    read_all,
    read_stream,
    verify,
)
from picloud.events import types as t
from picloud.events.store import withheld_after

META = Metadata(actor="alice", correlation_id="c-1", node="n1")

# The fields of each type, as the contract names them.
EXAMPLES: list[tuple[t.Event, set[str]]] = [
    (
        t.ScriptVersionUploaded(name="hello", version=1, sha256="ab" * 32, source="40 + 2"),
        {"name", "version", "sha256", "source"},
    ),
    (t.ScriptRolledBack(name="hello", version=1), {"name", "version"}),
    (t.ScriptDeleted(name="hello"), {"name"}),
    (t.ScriptAccessChanged(name="hello", require_key=True), {"name", "require_key"}),
    (
        t.InvocationRequested(
            invocation_id="i1",
            script="hello",
            version=1,
            trigger="http",
            request={"method": "GET", "path": "/", "body": "", "n": 1.5},
            event={"type": "http", "id": "i1"},
            replay_of=None,
        ),
        {"invocation_id", "script", "version", "trigger", "request", "event", "replay_of"},
    ),
    (
        t.InvocationSucceeded(
            invocation_id="i1",
            script="hello",
            version=1,
            response={"status": 200, "body": "hi"},
            logs=["a", "b"],
            duration_ms=1.25,
            fuel_used=42,
            node="n1",
        ),
        {
            "invocation_id",
            "script",
            "version",
            "response",
            "logs",
            "duration_ms",
            "fuel_used",
            "node",
        },
    ),
    (
        t.InvocationFailed(
            invocation_id="i2",
            script="hello",
            version=1,
            error={"type": "runtime", "message": "boom", "line": 1, "column": 2},
            logs=[],
            duration_ms=0.5,
            fuel_used=7,
            node="n1",
        ),
        {"invocation_id", "script", "version", "error", "logs", "duration_ms", "fuel_used", "node"},
    ),
    (
        t.ScheduleSet(
            name="s", script="hello", cron="*/2 * * * * *", timezone="UTC", payload={"k": 1}
        ),
        {"name", "script", "cron", "timezone", "payload"},
    ),
    (t.ScheduleDeleted(name="s"), {"name"}),
    (
        t.CronTicked(schedule="s", fire_time=datetime(2026, 1, 1, tzinfo=UTC), invocation_id="i3"),
        {"schedule", "fire_time", "invocation_id"},
    ),
    (
        t.TokenCreated(token_id="t1", name="ci", scopes=["scripts:write"]),
        {"token_id", "name", "scopes"},
    ),
    (t.TokenRevoked(token_id="t1"), {"token_id"}),
    (t.ReplayRequested(invocation_ids=["i1", "i2"], version=None), {"invocation_ids", "version"}),
    (
        t.AuditVerified(ok=True, events=3, streams=1, problems=0, through_position=7),
        {"ok", "events", "streams", "problems", "through_position"},
    ),
    (t.ProjectionsRebuilt(events=3, position=9), {"events", "position"}),
]


def test_every_type_has_an_example() -> None:
    assert {type(e).TYPE for e, _ in EXAMPLES} == set(t.EVENT_TYPES)


@pytest.mark.parametrize(("event", "fields"), EXAMPLES, ids=lambda v: getattr(v, "TYPE", ""))
async def test_event_round_trip_has_expected_fields(
    pool: psycopg_pool.AsyncConnectionPool, event: t.Event, fields: set[str]
) -> None:
    stream = f"rt-{type(event).TYPE}-{random.randrange(1 << 30)}"
    async with pool.connection() as conn:
        [rec] = await append(conn, stream, [event], expected_version=0, metadata=META)
        [back] = await read_stream(conn, stream)
    assert set(back.data) == fields
    assert back == rec
    assert back.type == type(event).TYPE and back.version == 1 and back.stream == stream
    assert back.metadata == msgspec.to_builtins(META)
    assert back.decode() == event
    assert len(back.hash) == 64 and back.time.tzinfo is not None


async def test_expected_version(pool: psycopg_pool.AsyncConnectionPool) -> None:
    ev = t.ScriptDeleted(name="x")
    async with pool.connection() as conn:
        assert [
            r.version
            for r in await append(conn, "ev-1", [ev, ev], expected_version=0, metadata=META)
        ] == [1, 2]
        with pytest.raises(ConcurrencyError) as err:
            await append(conn, "ev-1", [ev], expected_version=0, metadata=META)
        assert err.value.actual == 2
        with pytest.raises(ConcurrencyError):
            await append(conn, "ev-1", [ev], expected_version=1, metadata=META)
        with pytest.raises(ConcurrencyError):
            await append(conn, "ev-1", [ev], expected_version=5, metadata=META)
        [r] = await append(conn, "ev-1", [ev], expected_version=2, metadata=META)
        assert r.version == 3
        [r] = await append(conn, "ev-1", [ev], expected_version=None, metadata=META)
        assert r.version == 4
        # A failed append in the caller's transaction leaves nothing behind.
        with pytest.raises(ConcurrencyError):
            async with conn.transaction():
                await append(conn, "ev-1", [ev], expected_version=4, metadata=META)
                await append(conn, "ev-1", [ev], expected_version=4, metadata=META)
        assert [e.version for e in await read_stream(conn, "ev-1")] == [1, 2, 3, 4]


async def test_concurrent_writers_with_the_same_expected_version_one_wins(
    pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    ev = t.ScriptDeleted(name="x")
    async with pool.connection() as a, pool.connection() as b:
        async with a.transaction():
            await append(a, "race-1", [ev], expected_version=0, metadata=META)

            async def second() -> None:
                async with b.transaction():
                    await append(b, "race-1", [ev], expected_version=0, metadata=META)

            task = asyncio.create_task(second())
            await asyncio.sleep(0.1)  # b is now blocked on the unique (stream, version) index
            assert not task.done()
        with pytest.raises(ConcurrencyError):
            await task
        assert len(await read_stream(a, "race-1")) == 1


async def test_concurrent_appends_with_any_version_are_serialised(
    pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    ev = t.ScriptDeleted(name="x")

    async def one() -> None:
        async with pool.connection() as c, c.transaction():
            await append(c, "any-1", [ev], expected_version=None, metadata=META)
            await asyncio.sleep(random.random() / 100)

    await asyncio.gather(*(one() for _ in range(8)))
    async with pool.connection() as conn:
        assert [e.version for e in await read_stream(conn, "any-1")] == list(range(1, 9))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'x'",
        "UPDATE events SET data = '{}' WHERE position = (SELECT min(position) FROM events)",
        "DELETE FROM events WHERE position = (SELECT max(position) FROM events)",
        "TRUNCATE events",
    ],
)
async def test_the_database_refuses_to_change_events(
    pool: psycopg_pool.AsyncConnectionPool, statement: str
) -> None:
    async with pool.connection() as conn:
        await append(
            conn, "ro-1", [t.ScriptDeleted(name="x")], expected_version=None, metadata=META
        )
        before = await read_all(conn, limit=100_000)
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            await conn.execute(statement)
        assert await read_all(conn, limit=100_000) == before


async def test_verify_detects_a_change_made_behind_the_databases_back(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(3):
            await append(
                conn,
                "script-a",
                [t.ScriptVersionUploaded(name="a", version=i + 1, sha256="0" * 64, source=f"{i}")],
                expected_version=i,
                metadata=META,
            )
        await append(
            conn, "script-b", [t.ScriptDeleted(name="b")], expected_version=0, metadata=META
        )
        report = await verify(conn)
        assert report.ok and report.events == 4 and report.streams == 2

        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
        await conn.execute(
            "UPDATE events SET data = jsonb_set(data, '{source}', '\"evil\"') "
            "WHERE stream = 'script-a' AND version = 2"
        )
        report = await verify(conn)
        assert [(p.stream, p.version) for p in report.problems] == [("script-a", 2)]
        assert "changed" in report.problems[0].problem

        # Metadata (who did it) and time are covered too.
        await conn.execute(
            "UPDATE events SET metadata = jsonb_set(metadata, '{actor}', '\"mallory\"') "
            "WHERE stream = 'script-b'"
        )
        await conn.execute(
            "UPDATE events SET time = time + interval '1 microsecond' "
            "WHERE stream = 'script-a' AND version = 3"
        )
        # A deleted event leaves a gap.
        await conn.execute("DELETE FROM events WHERE stream = 'script-a' AND version = 1")
        report = await verify(conn)
        found = {(p.stream, p.version, p.problem.split(":")[0]) for p in report.problems}
        assert ("script-b", 1, "hash does not match the event") in found
        assert ("script-a", 3, "hash does not match the event") in found
        assert ("script-a", 2, "version 2 follows 0") in found


async def test_query_events_filters(pool: psycopg_pool.AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        start = datetime.now(UTC)
        [r1] = await append(
            conn,
            "q-script-a",
            [t.ScriptDeleted(name="qa")],
            expected_version=None,
            metadata=Metadata(actor="bob"),
        )
        [r2] = await append(
            conn,
            "q-schedule-a",
            [t.ScheduleDeleted(name="qa")],
            expected_version=None,
            metadata=Metadata(actor="carol"),
        )
        got = await query_events(conn, actor="bob", since=start)
        assert [e.position for e in got] == [r1.position]
        got = await query_events(conn, type="schedule.*", since=start)
        assert [e.position for e in got] == [r2.position]
        got = await query_events(conn, type=["script.deleted", "schedule.deleted"], since=start)
        assert [e.position for e in got] == [r1.position, r2.position]
        got = await query_events(conn, after=r1.position, stream="q-schedule-a")
        assert [e.position for e in got] == [r2.position]
        assert await query_events(conn, until=start, stream="q-script-a") == []


# --- never skipping a late commit -----------------------------------------------------------


async def _head(conn: psycopg.AsyncConnection[Any]) -> int:
    events = await read_all(conn, limit=1_000_000)
    return events[-1].position if events else 0


async def test_a_late_commit_with_a_lower_position_is_not_skipped(
    pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    ev = t.ScriptDeleted(name="x")
    async with pool.connection() as a, pool.connection() as b, pool.connection() as r:
        checkpoint = await _head(r)
        async with a.transaction():
            [ea] = await append(a, "late-a", [ev], expected_version=None, metadata=META)
            async with b.transaction():
                [eb] = await append(b, "late-b", [ev], expected_version=None, metadata=META)
            assert ea.position < eb.position  # b commits first with the higher position
            # A reader going by position alone would take eb now and skip ea forever:
            naive = await query_events(r, after=checkpoint)
            assert [e.position for e in naive] == [eb.position]
            # read_all holds eb back while a is running, and says so.
            assert await read_all(r, after=checkpoint) == []
            assert await withheld_after(r, after=checkpoint)
        got = await read_all(r, after=checkpoint)
        assert [e.position for e in got] == [ea.position, eb.position]
        assert not await withheld_after(r, after=got[-1].position)


async def test_an_older_transaction_appending_last_is_read_after_the_newer_one(
    pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    """Order is (xid, position): a reader that read b's event before a's arrives still gets a's."""
    ev = t.ScriptDeleted(name="x")
    async with pool.connection() as a, pool.connection() as b, pool.connection() as r:
        checkpoint = await _head(r)
        async with a.transaction():
            await a.execute("SELECT pg_current_xact_id()")  # a takes its xid first
            async with b.transaction():
                [eb] = await append(b, "older-b", [ev], expected_version=None, metadata=META)
            assert await read_all(r, after=checkpoint) == []  # b is behind a's xid
            [ea] = await append(a, "older-a", [ev], expected_version=None, metadata=META)
            assert ea.position > eb.position
        got = await read_all(r, after=checkpoint)
        assert [e.position for e in got] == [ea.position, eb.position]
        # Resuming from the first of them returns the second, not nothing.
        assert [e.position for e in await read_all(r, after=ea.position)] == [eb.position]


async def test_racing_writers_and_a_reader_never_skip(
    pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    """Many writers commit in random order while a reader follows from its checkpoint."""
    ev = t.ScriptDeleted(name="x")
    committed: list[int] = []
    done = asyncio.Event()
    rng = random.Random(7)

    async def writer(n: int) -> None:
        for i in range(15):
            async with pool.connection() as c, c.transaction():
                if rng.random() < 0.5:
                    await c.execute("SELECT pg_current_xact_id()")
                    await asyncio.sleep(rng.random() / 200)
                recs = await append(c, f"race-w{n}-{i}", [ev], expected_version=0, metadata=META)
                await asyncio.sleep(rng.random() / 200)
            committed.extend(r.position for r in recs)

    async with pool.connection() as r:
        start = await _head(r)
        seen: list[int] = []

        async def reader() -> None:
            checkpoint = start
            while True:
                finished = done.is_set()
                batch = await read_all(r, after=checkpoint, limit=7)
                seen.extend(e.position for e in batch)
                if batch:
                    checkpoint = batch[-1].position
                elif finished:
                    return
                else:
                    await asyncio.sleep(0.001)

        task = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(5)))
        done.set()
        await task
    assert len(seen) == len(set(seen)) == len(committed) == 75
    assert set(seen) == set(committed)
    assert seen != sorted(seen), "the race did not produce an out-of-order commit; not a proof"


async def test_verify_detects_whole_streams_removed_since_the_last_check(
    make_database: Callable[[], str],
) -> None:
    """A stream's chain cannot show that the whole stream was removed: the count the last
    recorded check (``audit.verified``) found up to its position is the anchor that does."""
    url = make_database()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for name in ("keep", "gone"):
            await append(conn, f"script-{name}", [t.ScriptDeleted(name=name)],
                         expected_version=0, metadata=META)
        first = await verify(conn)
        assert first.ok and first.events == 2 and first.through_position > 0
        await append(conn, "audit", [t.AuditVerified(
            ok=True, events=first.events, streams=first.streams, problems=0,
            through_position=first.through_position)], expected_version=None, metadata=META)
        await append(conn, "script-later", [t.ScriptDeleted(name="later")],
                     expected_version=0, metadata=META)
        assert (await verify(conn)).ok  # events added since the check are no problem

        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
        await conn.execute("DELETE FROM events WHERE stream = 'script-gone'")
        report = await verify(conn)
        assert not report.ok
        [problem] = report.problems
        assert problem.stream == "*" and "1 of the 2 events" in problem.problem
