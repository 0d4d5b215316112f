"""What the ingress needs to invoke a script (its current version, whether it requires a
key), kept in memory between changes.

An invocation needs its script's current version before it appends ``invocation.requested``.
Reading it from the read model costs a statement per call; instead each process keeps what
it has read and drops an entry when PostgreSQL says it changed: a trigger on the read model's
``scripts`` table sends NOTIFY ``picloud_scripts`` (the name, or ``''`` when the table is
emptied by a rebuild) at the commit of the projection that changed it.

What a node may see is therefore the read model as of a NOTIFY ago: for the moment the
NOTIFY takes to arrive (well under a millisecond on one machine), an invocation of a script
that was just replaced may still run the previous version, as it would have had it arrived a
moment earlier. The node that took an upload drops the entry itself before it answers, so
its own next call sees the new version. Nothing is cached while the listener is down, and
everything is dropped when it (re)connects, since NOTIFYs sent meanwhile are lost.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg_pool

from picloud.projections import queries
from picloud.workers.listener import Listener

SCRIPTS_CHANNEL = "picloud_scripts"
MAX_ENTRIES = 10_000  # more scripts than that still work: the rest are read every time


class Entry(NamedTuple):
    version: int
    require_key: bool


async def current_version(conn: Any, name: str) -> int | None:
    """The version an invocation of ``name`` runs now (read model), or ``None``: no script."""
    entry = await _read(conn, name)
    return None if entry is None else entry.version


async def _read(conn: Any, name: str) -> Entry | None:
    row = await queries.get_script(conn, name)  # deleted scripts are not found
    return None if row is None else Entry(int(row.current_version), bool(row.require_key))


class ScriptDirectory:
    def __init__(self, listener: Listener, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self.listener = listener
        self.pool = pool
        self._entries: dict[str, Entry] = {}
        self._generation = 0  # bumped by every drop: a read that began before one is not kept
        self.reads = 0

    async def start(self) -> None:
        await self.listener.subscribe(SCRIPTS_CHANNEL, self._on_notify)
        await self.listener.on_connect(self._on_connect)

    async def lookup(self, name: str) -> Entry | None:
        """What invoking ``name`` needs, or ``None`` if there is no such script."""
        known = self._entries.get(name)
        if known is not None:
            return known
        generation = self._generation
        async with self.pool.connection() as conn:
            entry = await _read(conn, name)
        self.reads += 1
        if (entry is not None and generation == self._generation
                and self.listener.connected and len(self._entries) < MAX_ENTRIES):
            self._entries[name] = entry
        return entry

    def forget(self, name: str | None = None) -> None:
        """Drops ``name`` (``None``: everything)."""
        self._generation += 1
        if name:
            self._entries.pop(name, None)
        else:
            self._entries.clear()

    def _on_notify(self, channel: str, payload: str) -> None:
        self.forget(payload or None)

    async def _on_connect(self, conn: Any) -> None:
        self.forget()
