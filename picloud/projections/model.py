"""The fold: how each event changes the read model. Every value written comes from the event
(times are event times), so folding the same log gives the same tables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from picloud import cron
from picloud.events import RecordedEvent
from picloud.sqlfile import Queries

Q = Queries("picloud.projections")
Cursor = psycopg.AsyncCursor[Any]
Handler = Callable[[Cursor, RecordedEvent], Awaitable[None]]


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


async def _script_uploaded(cur: Cursor, e: RecordedEvent) -> None:
    d = e.data
    await cur.execute(
        Q.script_uploaded,
        {
            "name": d["name"],
            "version": d["version"],
            "sha256": d["sha256"],
            "source": d["source"],
            "time": e.time,
            "actor": e.metadata.get("actor"),
        },
    )


async def _script_rolled_back(cur: Cursor, e: RecordedEvent) -> None:
    await cur.execute(
        Q.script_rolled_back,
        {"name": e.data["name"], "version": e.data["version"], "time": e.time},
    )


async def _script_access_changed(cur: Cursor, e: RecordedEvent) -> None:
    await cur.execute(Q.script_access_changed, {"name": e.data["name"], "time": e.time,
                                                "require_key": bool(e.data["require_key"])})


async def _script_deleted(cur: Cursor, e: RecordedEvent) -> None:
    await cur.execute(Q.script_deleted, {"name": e.data["name"], "time": e.time})


async def _invocation_requested(cur: Cursor, e: RecordedEvent) -> None:
    d = e.data
    await cur.execute(
        Q.invocation_requested,
        {
            "invocation_id": d["invocation_id"],
            "position": e.position,
            "script": d["script"],
            "version": d["version"],
            "trigger": d["trigger"],
            "request": _json(d.get("request")),
            "event": Jsonb(d.get("event") or {}),
            "replay_of": d.get("replay_of"),
            "actor": e.metadata.get("actor"),
            "time": e.time,
        },
    )


async def _invocation_finished(cur: Cursor, e: RecordedEvent) -> None:
    d = e.data
    ok = e.type == "invocation.succeeded"
    await cur.execute(
        Q.invocation_finished,
        {
            "invocation_id": d["invocation_id"],
            "status": "succeeded" if ok else "failed",
            "ok": int(ok),
            "response": _json(d.get("response")),
            "error": _json(d.get("error")),
            "logs": Jsonb(d.get("logs") or []),
            "duration_ms": d.get("duration_ms"),
            "fuel_used": d.get("fuel_used"),
            "node": d.get("node"),
            "time": e.time,
        },
    )


def _next_fire(expr: str, timezone: str, after: datetime) -> datetime | None:
    try:
        return cron.next_fire(expr, timezone, after)
    except (cron.CronError, ValueError, KeyError):
        return None  # the API validates; a bad expression in the log must not stop the fold


async def _schedule_set(cur: Cursor, e: RecordedEvent) -> None:
    d = e.data
    await cur.execute(Q.schedule_of, {"name": d["name"]})
    row = await cur.fetchone()
    after = e.time
    if row is not None and row[2] is not None and row[2] > after:
        after = row[2]
    await cur.execute(
        Q.schedule_set,
        {
            "name": d["name"],
            "script": d["script"],
            "cron": d["cron"],
            "timezone": d["timezone"],
            "payload": _json(d.get("payload")),
            "next_fire_time": _next_fire(d["cron"], d["timezone"], after),
            "time": e.time,
        },
    )


async def _schedule_deleted(cur: Cursor, e: RecordedEvent) -> None:
    await cur.execute(Q.schedule_deleted, {"name": e.data["name"]})


async def _cron_ticked(cur: Cursor, e: RecordedEvent) -> None:
    name = e.data["schedule"]
    fire_time = datetime.fromisoformat(e.data["fire_time"])
    await cur.execute(Q.schedule_of, {"name": name})
    row = await cur.fetchone()
    if row is None:
        return
    await cur.execute(
        Q.cron_ticked,
        {
            "name": name,
            "fire_time": fire_time,
            "next_fire_time": _next_fire(row[0], row[1], fire_time),
        },
    )


HANDLERS: dict[str, Handler] = {
    "script.version_uploaded": _script_uploaded,
    "script.rolled_back": _script_rolled_back,
    "script.deleted": _script_deleted,
    "script.access_changed": _script_access_changed,
    "invocation.requested": _invocation_requested,
    "invocation.succeeded": _invocation_finished,
    "invocation.failed": _invocation_finished,
    "schedule.set": _schedule_set,
    "schedule.deleted": _schedule_deleted,
    "cron.ticked": _cron_ticked,
}


async def apply(cur: Cursor, event: RecordedEvent) -> None:
    """Fold one event into the read model (types without a handler change nothing)."""
    handler = HANDLERS.get(event.type)
    if handler is not None:
        await handler(cur, event)
