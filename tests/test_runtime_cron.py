# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""Cron: a 6-field schedule fires on time without polling; a tick is recorded once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from picloud.ingress.app import current_version
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
    before = await count(node.pool, "SELECT count(*) FROM events")
    results = await asyncio.gather(a.fire(schedule, fire), b.fire(schedule, fire))
    assert sum(r is not None for r in results) == 1
    after = await count(node.pool, "SELECT count(*) FROM events")
    assert after - before == 2  # one cron.ticked, one invocation.requested
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
