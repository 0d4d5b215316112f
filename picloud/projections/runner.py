"""The projector: folds the log into the read model, in read_all's order, from its checkpoint.

One projector writes at a time: ``run`` takes a session advisory lock (a standby process waits
on it without polling). Each batch reads from the checkpoint, applies the events and stores the
new checkpoint in one transaction, under a transaction lock that ``rebuild`` also takes, and
announces the checkpoint on channel ``picloud_projected`` as ``"xid:position"``, so that
``wait_for`` works in every process, leader or standby.

Wake-ups: LISTEN ``picloud_events`` (and ``picloud_projected``) on a connection of its own.
The wake-up flag is cleared *before* catching up, so a NOTIFY arriving during a catch-up causes
another one. When read_all holds back committed events (an older transaction is still
running), the projector retries after a short, growing delay; with nothing pending it makes no
query at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
import psycopg

from picloud.events import RecordedEvent, read_all
from picloud.events.store import withheld_after, xid_of
from picloud.projections.model import Q, apply

log = logging.getLogger(__name__)

NAME = "read_model"
APPLICATION_NAME = "picloud-projector"
Conn = psycopg.AsyncConnection[Any]


class RebuildResult(msgspec.Struct):
    events: int
    position: int


async def _checkpoint(conn: Conn) -> tuple[int, int]:
    async with conn.cursor() as cur:
        await cur.execute(Q.get_checkpoint, {"name": NAME})
        row = await cur.fetchone()
    return (int(row[1]), int(row[0])) if row else (0, 0)


async def project_batch(conn: Conn, *, limit: int = 500) -> tuple[int, tuple[int, int]]:
    """Apply the next batch in one transaction; returns (events applied, (xid, position))."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(Q.apply_lock)
        xid, position = await _checkpoint(conn)
        events = await read_all(conn, after=position, limit=limit)
        if not events:
            return 0, (xid, position)
        for event in events:
            await apply(cur, event)
        last = events[-1]
        await cur.execute(
            Q.set_checkpoint, {"name": NAME, "position": last.position, "xid": str(last.xid)}
        )
        await cur.execute(Q.notify_projected, {"payload": f"{last.xid}:{last.position}"})
        return len(events), (last.xid, last.position)


async def rebuild(conn: Conn, *, batch: int = 5000) -> RebuildResult:
    """Empty the read model and fold the whole log again, in one transaction.

    A running projector waits (same transaction lock) and then continues from the new
    checkpoint. Readers of the read model wait for the commit (TRUNCATE's lock) and then see
    the rebuilt tables; they never see a half-built model.
    """
    count = 0
    xid, position = 0, 0
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(Q.apply_lock)
        await cur.execute(Q.truncate_read_model)
        while events := await read_all(conn, after=position, limit=batch):
            for event in events:
                await apply(cur, event)
            count += len(events)
            xid, position = events[-1].xid, events[-1].position
        if position:
            await cur.execute(
                Q.set_checkpoint, {"name": NAME, "position": position, "xid": str(xid)}
            )
            await cur.execute(Q.notify_projected, {"payload": f"{xid}:{position}"})
    return RebuildResult(events=count, position=position)


class Projector:
    """Keeps the read model up to date; ``wait_for`` lets a writer read its own write."""

    def __init__(self, url: str, *, batch: int = 500) -> None:
        self.url = url
        self.batch = batch
        self.is_leader = False
        self._done: tuple[int, int] = (0, 0)  # (xid, position) known to be applied
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._query_conn: Conn | None = None
        self._query_lock = asyncio.Lock()

    @property
    def checkpoint(self) -> tuple[int, int]:
        """The (xid, position) up to which this process knows the read model is applied."""
        return self._done

    async def _connect(self) -> Conn:
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=APPLICATION_NAME
        )

    async def run(self) -> None:
        """Listen, wait to be the leader, then project forever (until cancelled)."""
        listen = await self._connect()
        leader = await self._connect()
        listener = asyncio.create_task(self._listen(listen), name="projector-listen")
        listener.add_done_callback(lambda _: self._wake.set())
        try:
            await self._listening.wait()
            await self._advance(await _checkpoint(leader))
            await leader.execute(Q.leader_lock)  # a standby waits here
            self.is_leader = True
            log.info("projector: leader")
            while True:
                self._wake.clear()
                if listener.done():
                    listener.result()  # the listening connection failed: raise its error
                    raise RuntimeError("projector: listener stopped")
                await self._catch_up(leader)
                await self._wake.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            self.is_leader = False
            for conn in (leader, listen):
                with contextlib.suppress(Exception):
                    await conn.close()
            if self._query_conn is not None:
                with contextlib.suppress(Exception):
                    await self._query_conn.close()
                self._query_conn = None

    async def _listen(self, conn: Conn) -> None:
        await conn.execute("LISTEN picloud_events")
        await conn.execute("LISTEN picloud_projected")
        self._listening.set()
        self._wake.set()  # catch up once after (re)connecting
        async for note in conn.notifies():
            if note.channel == "picloud_events":
                self._wake.set()
            elif note.channel == "picloud_projected":
                xid, _, position = note.payload.partition(":")
                await self._advance((int(xid), int(position)))

    async def _catch_up(self, conn: Conn) -> None:
        delay = 0.002
        while True:
            n, done = await project_batch(conn, limit=self.batch)
            await self._advance(done)
            if n == self.batch:
                continue
            if not await withheld_after(conn, after=done[1]):
                return
            # Committed events wait for an older transaction to end: retry shortly.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _advance(self, done: tuple[int, int]) -> None:
        if done > self._done:
            async with self._changed:
                self._done = done
                self._changed.notify_all()

    async def _xid(self, position: int) -> int | None:
        async with self._query_lock:
            if self._query_conn is None or self._query_conn.closed:
                self._query_conn = await self._connect()
            return await xid_of(self._query_conn, position)

    async def wait_for(self, position: int, timeout: float, *, xid: int | None = None) -> None:
        """Return once the event at ``position`` is in the read model; ``TimeoutError`` if not
        within ``timeout`` s. Pass the event's ``xid`` (``RecordedEvent.xid``) to save a query."""
        if position <= 0:
            return
        if xid is None:
            xid = await self._xid(position)
            if xid is None:
                raise LookupError(f"no event at position {position}")
        target = (xid, position)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._done >= target)

    async def wait_for_event(self, event: RecordedEvent, timeout: float) -> None:
        await self.wait_for(event.position, timeout, xid=event.xid)
