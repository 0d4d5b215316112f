# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""Cron: a 6-field schedule fires on time without polling; a tick is recorded once."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from picloud.ingress.directory import current_version
from picloud.workers.scheduler import Schedule, Scheduler
from tests.runtime_fixtures import client, count, engine_ready, node  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")


async def test_six_field_schedule_fires_on_each_due_second(client: httpx.AsyncClient,
                                                           node: Any) -> None:
    r = await client.put("/api/scripts/tick", content="event.data.schedule")
    assert r.status_code == 201
    r = await client.put("/api/schedules/every2", json={
        "script": "tick", "cron": "*/2 * * * * *", "payload": {"k": 1}})
    assert r.status_code == 200, r.text
    scheduler = node.scheduler
    assert scheduler is not None and scheduler.is_leader
    start = len(scheduler.ticks)
    await asyncio.sleep(7.0)
    r = await client.delete("/api/schedules/every2")
    assert r.status_code == 204
    ticks = scheduler.ticks[start:]
    assert len(ticks) >= 3
    for name, fire_time, lateness in ticks:
        assert name == "every2"
        assert fire_time.second % 2 == 0 and fire_time.microsecond == 0
        assert 0 <= lateness < 0.2, f"tick {fire_time} was {lateness * 1000:.0f} ms late"
    recorded = await count(node.pool, "SELECT count(*) FROM events WHERE type = 'cron.ticked'")
    assert recorded == len(scheduler.ticks)
    crons = await count(node.pool, "SELECT count(*) FROM events WHERE type = "
                        "'invocation.requested' AND data->>'trigger' = 'cron'")
    assert crons == recorded
    # the ticks ran the script with the schedule's name as its event data
    await asyncio.sleep(0.5)
    ok = await count(node.pool, "SELECT count(*) FROM events WHERE type = 'invocation.succeeded'"
                     " AND data->>'script' = 'tick'")
    assert ok == recorded


async def test_two_schedulers_record_a_tick_once(client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/tick", content="event.data.schedule")
    services = node.services
    a = Scheduler(node.url, node.pool, node.listener, services.request_invocation,
                  current_version, "a")
    b = Scheduler(node.url, node.pool, node.listener, services.request_invocation,
                  current_version, "b")
    schedule = Schedule("twice", "tick", "* * * * * *", "UTC", None)
    fire = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    results = await asyncio.gather(a.fire(schedule, fire), b.fire(schedule, fire))
    assert sum(r is not None for r in results) == 1
    # one cron.ticked and one invocation.requested (the worker may already have appended the
    # invocation's result: that is not the schedulers' doing)
    ticks = await count(node.pool, "SELECT count(*) FROM events WHERE type = 'cron.ticked' "
                        "AND data->>'schedule' = 'twice'")
    requests = await count(node.pool, "SELECT count(*) FROM events WHERE type = "
                           "'invocation.requested' AND data->'event'->'data'->>'schedule' = "
                           "'twice'")
    assert (ticks, requests) == (1, 1)
    # and only one of the nodes' schedulers is elected
    assert node.scheduler.is_leader
    a.start()
    await asyncio.sleep(0.3)
    assert not a.is_leader
    await a.stop()


async def test_bad_cron_is_rejected_and_stores_nothing(client: httpx.AsyncClient,
                                                       node: Any) -> None:
    before = await count(node.pool, "SELECT count(*) FROM events")
    for bad in ("* * *", "*/2 * * * * * *", "70 * * * *"):
        r = await client.put("/api/schedules/bad", json={"script": "tick", "cron": bad})
        assert r.status_code == 422, r.text
    r = await client.put("/api/schedules/bad", json={"script": "tick", "cron": "* * * * *",
                                                     "timezone": "Nowhere/Land"})
    assert r.status_code == 422
    assert await count(node.pool, "SELECT count(*) FROM events") == before


async def test_ticks_missed_while_no_scheduler_led_fire_late_once(client: httpx.AsyncClient,
                                                                  node: Any) -> None:
    """The leader goes away for ~5 s: the next one elected fires the ticks that fell due
    meanwhile (late, each once), then goes on on time; no due second is left out."""
    await client.put("/api/scripts/tick", content="event.data.schedule")
    r = await client.put("/api/schedules/gap", json={"script": "tick", "cron": "*/2 * * * * *"})
    assert r.status_code == 200, r.text
    leader = node.scheduler
    await _recorded_ticks(node, "gap", at_least=1)
    await leader.stop()  # no scheduler leads now
    await asyncio.sleep(5.0)
    follower = Scheduler(node.url, node.pool, node.listener,
                         node.services.request_invocation, current_version, "follower")
    follower.start()
    try:
        await asyncio.sleep(3.0)
        late = [lateness for name, _, lateness in follower.ticks if name == "gap"]
        assert sum(1 for x in late if x > 1.0) >= 2, follower.ticks  # the missed ones, late
        assert (await client.delete("/api/schedules/gap")).status_code == 204
        fire_times = await _recorded_ticks(node, "gap", at_least=5)
        gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fire_times)}
        assert gaps == {2.0}, fire_times  # every due second, each once
    finally:
        await follower.stop()
        leader.start()


async def _recorded_ticks(node: Any, schedule: str, at_least: int) -> list[datetime]:
    for _ in range(100):
        async with node.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT (data->>'fire_time')::timestamptz FROM events WHERE type = "
                "'cron.ticked' AND data->>'schedule' = %s ORDER BY 1", (schedule,))
            times = [row[0] for row in await cur.fetchall()]
        if len(times) >= at_least:
            return times
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} ticks of {schedule}: {times}")
