"""The cron scheduler: one per cluster, elected with a PostgreSQL advisory lock.

A standby blocks in ``pg_advisory_lock`` on its own connection (no polling) and takes over
when the leader's session ends. The leader folds the schedule streams of the event log, then
sleeps until the earliest next fire time or a schedule change (NOTIFY ``picloud_schedules``,
sent by the API in the changing transaction). Each due (schedule, fire time) appends
``cron.ticked`` to the stream ``cron-{schedule}-{fire time}`` with expected version 0, so a
tick is recorded once however many schedulers try; the same transaction appends the
invocation and defers its job.

Ticks that fell due while no scheduler led (the leader died and the standby had not taken
over yet, or every node was down) are fired late, once, when a scheduler is elected: those
since each schedule's last recorded tick (or since it was set), at most the last
``CATCH_UP_MAX`` of them and none older than ``CATCH_UP_WINDOW``; older ones are skipped and
logged. A catch-up tick's event says when it was due (``fire_time``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from picloud.events import store, types
from picloud.workers import cron
from picloud.workers.background import Background
from picloud.workers.listener import KEEPALIVES, Listener, QuietConnection

log = structlog.get_logger("picloud.scheduler")

SCHEDULER_LOCK = (0x5053, 1)  # "PS"; 0x5049 is the workers' liveness class
SCHEDULES_CHANNEL = "picloud_schedules"

SCHEDULES_SQL = """
SELECT DISTINCT ON (stream) stream, type, data, time FROM events
WHERE stream LIKE 'schedule-%%' AND type IN ('schedule.set', 'schedule.deleted')
ORDER BY stream, version DESC
"""
LAST_TICKS_SQL = "SELECT name, last_fire_time FROM schedules WHERE last_fire_time IS NOT NULL"
CATCH_UP_MAX = 10
CATCH_UP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Schedule:
    name: str
    script: str
    cron: str
    timezone: str
    payload: Any
    set_at: datetime | None = None


def missed_ticks(schedule: Schedule, after: datetime, until: datetime,
                 limit: int = 100_000) -> list[datetime]:
    """Fire times of ``schedule`` in (``after``, ``until``), oldest first (at most ``limit``)."""
    out: list[datetime] = []
    t = cron.next_fire(schedule.cron, schedule.timezone, after)
    while t < until and len(out) < limit:
        out.append(t)
        t = cron.next_fire(schedule.cron, schedule.timezone, t)
    return out


def next_fire_times(schedules: dict[str, Schedule], previous: dict[str, Schedule],
                    next_at: dict[str, datetime]) -> dict[str, datetime]:
    """Each schedule's next fire time: an unchanged schedule keeps the one in ``next_at``; a
    new or changed one starts from now."""
    t = datetime.now(UTC)
    return {n: next_at[n] if n in next_at and previous.get(n) == s
            else cron.next_fire(s.cron, s.timezone, t)
            for n, s in schedules.items()}


def tick_stream(schedule: str, fire_time: datetime) -> str:
    return f"cron-{schedule}-{fire_time.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


class Scheduler(Background):
    """``request`` is ``Services.request_invocation`` (or any callable of that shape)."""

    task_name = "picloud-scheduler"

    def __init__(self, url: str, pool: Any, listener: Listener, request: Any,
                 current_version: Any, node: str) -> None:
        self.url = url
        self.pool = pool
        self.listener = listener
        self.request = request
        self.current_version = current_version
        self.node = node
        self.is_leader = False
        self.ticks: list[tuple[str, datetime, float]] = []  # (schedule, fire time, lateness s)
        self._changed = asyncio.Event()

    def _on_change(self, channel: str, payload: str) -> None:
        self._changed.set()

    async def _run(self) -> None:
        await self.listener.subscribe(SCHEDULES_CHANNEL, self._on_change)
        try:
            while True:
                try:
                    async with await QuietConnection.connect(
                        self.url, autocommit=True, **KEEPALIVES
                    ) as lock_conn:
                        await lock_conn.execute("SELECT pg_advisory_lock(%s, %s)",
                                                SCHEDULER_LOCK)
                        self.is_leader = True
                        log.info("scheduler elected", node=self.node)
                        await self._lead()
                except psycopg.OperationalError as exc:
                    log.warning("scheduler connection lost", error=str(exc))
                except Exception:
                    log.exception("scheduler failed; restarting")
                finally:
                    self.is_leader = False
                await asyncio.sleep(1.0)
        finally:
            self.listener.unsubscribe(SCHEDULES_CHANNEL, self._on_change)

    async def load(self) -> dict[str, Schedule]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(SCHEDULES_SQL)
            rows = await cur.fetchall()
        out: dict[str, Schedule] = {}
        for _stream, type_, data, set_at in rows:
            if type_ == "schedule.set":
                out[data["name"]] = Schedule(data["name"], data["script"], data["cron"],
                                             data.get("timezone") or "UTC", data.get("payload"),
                                             set_at)
        return out

    async def catch_up(self, schedules: dict[str, Schedule]) -> None:
        """Fires, late and once, the ticks that fell due while no scheduler led."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(LAST_TICKS_SQL)
            last = dict(await cur.fetchall())
        now = datetime.now(UTC)
        missed: list[tuple[datetime, Schedule]] = []
        for name, schedule in schedules.items():
            known = [t for t in (last.get(name), schedule.set_at) if t is not None]
            if not known:
                continue
            since = max(known)  # the last tick, or a later change of the schedule
            due = missed_ticks(schedule, max(since, now - CATCH_UP_WINDOW), now)
            if len(due) > CATCH_UP_MAX or (since < now - CATCH_UP_WINDOW and due):
                log.warning("missed cron ticks skipped", schedule=name,
                            fired=min(len(due), CATCH_UP_MAX), since=since.isoformat())
            missed.extend((t, schedule) for t in due[-CATCH_UP_MAX:])
        for fire_time, schedule in sorted(missed, key=lambda m: m[0]):
            await self.fire(schedule, fire_time)

    async def _lead(self) -> None:
        self._changed.clear()  # a change from now on is read again below
        schedules = await self.load()
        await self.catch_up(schedules)
        next_at = next_fire_times(schedules, {}, {})
        while True:
            if self._changed.is_set():
                self._changed.clear()
                previous, schedules = schedules, await self.load()
                next_at = next_fire_times(schedules, previous, next_at)
            if not next_at:
                await self._changed.wait()
                continue
            name = min(next_at, key=lambda n: next_at[n])
            due = next_at[name]
            delay = (due - datetime.now(UTC)).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), delay)
                if self._changed.is_set():
                    continue
            await self.fire(schedules[name], due)
            next_at[name] = cron.next_fire(schedules[name].cron, schedules[name].timezone, due)

    async def fire(self, schedule: Schedule, fire_time: datetime) -> str | None:
        """Records the tick and its invocation once; None if already recorded or no script."""
        lateness = (datetime.now(UTC) - fire_time).total_seconds()
        started = time.perf_counter()
        async with self.pool.connection() as conn:
            try:
                async with conn.transaction():
                    version = await self.current_version(conn, schedule.script)
                    if version is None:
                        log.warning("schedule's script does not exist", schedule=schedule.name,
                                    script=schedule.script)
                        return None
                    meta = store.Metadata(actor=f"schedule:{schedule.name}", node=self.node)
                    inv_id, _job, _ = await self.request(
                        conn, script=schedule.script, version=version, trigger="cron",
                        request=None,
                        event_data={"schedule": schedule.name,
                                    "fire_time": fire_time.isoformat(),
                                    "payload": schedule.payload},
                        metadata=meta, queue="shared")
                    await store.append(
                        conn, tick_stream(schedule.name, fire_time),
                        [types.CronTicked(schedule=schedule.name, fire_time=fire_time,
                                          invocation_id=inv_id)],
                        expected_version=0, metadata=meta)
            except store.ConcurrencyError:
                return None
        self.ticks.append((schedule.name, fire_time, lateness))
        log.info("cron tick", schedule=schedule.name, fire_time=fire_time.isoformat(),
                 invocation_id=inv_id, late_ms=round(lateness * 1000, 1),
                 record_ms=round((time.perf_counter() - started) * 1000, 1))
        return inv_id
