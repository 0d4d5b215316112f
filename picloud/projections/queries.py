"""Reads of the read model (the API's lists and details). Rows come back as msgspec structs;
the ingress maps them to its response structs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg

from picloud.projections.model import Q

Conn = psycopg.AsyncConnection[Any]


class Script(msgspec.Struct):
    name: str
    current_version: int
    latest_version: int
    sha256: str
    created_at: datetime
    updated_at: datetime
    require_key: bool = False


class ScriptVersion(msgspec.Struct):
    name: str
    version: int
    sha256: str
    source: str
    created_at: datetime
    actor: str | None


class Invocation(msgspec.Struct):
    id: str
    position: int
    script: str
    version: int
    trigger: str
    status: str
    """``pending``, ``succeeded`` or ``failed``."""
    request: dict[str, Any] | None
    event: dict[str, Any]
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    logs: list[Any]
    duration_ms: float | None
    fuel_used: int | None
    node: str | None
    replay_of: str | None
    actor: str | None
    requested_at: datetime
    finished_at: datetime | None


class Schedule(msgspec.Struct):
    name: str
    script: str
    cron: str
    timezone: str
    payload: Any
    next_fire_time: datetime | None
    last_fire_time: datetime | None
    created_at: datetime
    updated_at: datetime


class ScriptStats(msgspec.Struct):
    script: str
    invocations: int
    succeeded: int
    failed: int
    total_duration_ms: float
    max_duration_ms: float
    last_invoked_at: datetime | None

    @property
    def mean_duration_ms(self) -> float:
        return self.total_duration_ms / self.invocations if self.invocations else 0.0


async def _rows(
    conn: Conn, query: str, params: dict[str, Any], *, prepare: bool | None = None
) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(query, params, prepare=prepare)  # type: ignore[arg-type]
        return await cur.fetchall()


async def list_scripts(conn: Conn) -> list[Script]:
    """Scripts that exist (not deleted), by name."""
    return [Script(*r) for r in await _rows(conn, Q.list_scripts, {})]


async def get_script(conn: Conn, name: str) -> Script | None:
    rows = await _rows(conn, Q.get_script, {"name": name})
    return Script(*rows[0]) if rows else None


async def list_versions(conn: Conn, name: str) -> list[ScriptVersion]:
    return [ScriptVersion(*r) for r in await _rows(conn, Q.list_versions, {"name": name})]


async def get_version(conn: Conn, name: str, version: int) -> ScriptVersion | None:
    rows = await _rows(conn, Q.get_version, {"name": name, "version": version})
    return ScriptVersion(*rows[0]) if rows else None


async def list_invocations(
    conn: Conn,
    *,
    script: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Invocation], str | None]:
    """Newest first. ``cursor`` is the ``next_cursor`` of the previous page (``None`` at the
    end). ``since`` is inclusive, ``until`` exclusive. A cursor that is not one of ours is a
    ``ValueError``."""
    before: int | None = None
    if cursor:
        try:
            before = int(cursor)
        except ValueError:
            raise ValueError(f"bad cursor: {cursor!r}") from None
    limit = max(1, min(limit, 1000))
    rows = await _rows(
        conn,
        Q.list_invocations,
        {
            "script": script,
            "status": status,
            "since": since,
            "until": until,
            "before": before,
            "limit": limit + 1,
        },
        prepare=False,  # optional filters: only a plan for the actual values simplifies them
    )
    items = [Invocation(*r) for r in rows[:limit]]
    next_cursor = str(items[-1].position) if len(rows) > limit else None
    return items, next_cursor


async def get_invocation(conn: Conn, invocation_id: str) -> Invocation | None:
    rows = await _rows(conn, Q.get_invocation, {"id": invocation_id})
    return Invocation(*rows[0]) if rows else None


async def list_schedules(conn: Conn) -> list[Schedule]:
    return [Schedule(*r) for r in await _rows(conn, Q.list_schedules, {})]


async def get_schedule(conn: Conn, name: str) -> Schedule | None:
    rows = await _rows(conn, Q.get_schedule, {"name": name})
    return Schedule(*rows[0]) if rows else None


async def script_stats(conn: Conn, script: str | None = None) -> list[ScriptStats]:
    """Per-script counts and latency (all scripts, or one)."""
    return [ScriptStats(*r) for r in await _rows(conn, Q.script_stats, {"script": script})]
