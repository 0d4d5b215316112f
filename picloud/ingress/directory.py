"""The script versions the ingress invokes, kept in memory between uploads.

An invocation needs its script's current version before it appends ``invocation.requested``.
Reading it from the read model costs a statement per call; instead each process keeps the
versions it has read and drops one when PostgreSQL says it changed: a trigger on the read
model's ``scripts`` table sends NOTIFY ``picloud_scripts`` (the name, or ``''`` when the table
is emptied by a rebuild) at the commit of the projection that changed it.

What a node may see is therefore the read model as of a NOTIFY ago: for the moment the
NOTIFY takes to arrive (well under a millisecond on one machine), an invocation of a script
that was just replaced may still run the previous version, as it would have had it arrived a
moment earlier. The node that took an upload drops the entry itself before it answers, so
its own next call sees the new version. Nothing is cached while the listener is down, and
everything is dropped when it (re)connects, since NOTIFYs sent meanwhile are lost.
"""

from __future__ import annotations

from typing import Any

import psycopg_pool

from picloud.projections import queries
from picloud.workers.listener import Listener

SCRIPTS_CHANNEL = "picloud_scripts"
MAX_ENTRIES = 10_000  # more scripts than that still work: the rest are read every time


async def current_version(conn: Any, name: str) -> int | None:
    """The version an invocation of ``name`` runs now (read model), or ``None``: no script."""
    row = await queries.get_script(conn, name)  # deleted scripts are not found
    return None if row is None else int(row.current_version)


class ScriptDirectory:
    def __init__(self, listener: Listener, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self.listener = listener
        self.pool = pool
        self._versions: dict[str, int] = {}
        self._generation = 0  # bumped by every drop: a read that began before one is not kept
        self.reads = 0

    async def start(self) -> None:
        await self.listener.subscribe(SCRIPTS_CHANNEL, self._on_notify)
        await self.listener.on_connect(self._on_connect)

    async def version(self, name: str) -> int | None:
        """``name``'s current version, or ``None`` if there is no such script."""
        known = self._versions.get(name)
        if known is not None:
            return known
        generation = self._generation
        async with self.pool.connection() as conn:
            version = await current_version(conn, name)
        self.reads += 1
        if (version is not None and generation == self._generation
                and self.listener.connected and len(self._versions) < MAX_ENTRIES):
            self._versions[name] = version
        return version

    def forget(self, name: str | None = None) -> None:
        """Drops ``name`` (``None``: everything)."""
        self._generation += 1
        if name:
            self._versions.pop(name, None)
        else:
            self._versions.clear()

    def _on_notify(self, channel: str, payload: str) -> None:
        self.forget(payload or None)

    async def _on_connect(self, conn: Any) -> None:
        self.forget()
