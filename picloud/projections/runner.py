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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import psycopg
import psycopg_pool

from picloud.events import RecordedEvent, read_all
from picloud.events.store import read_batch, xid_of
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


class CheckpointMoved(Exception):
    """The checkpoint is not where this batch started (a rebuild moved it): rolled back."""


PIPELINE_FROM = 16  # events in a batch from which its writes are pipelined


async def project_batch(
    conn: Conn, checkpoint: tuple[int, int] | None = None, *, limit: int = 500
) -> tuple[int, tuple[int, int], bool]:
    """Fold the events after ``checkpoint`` (default: the stored one) into the read model.

    Returns (events applied, the new (xid, position) checkpoint, whether committed events are
    held back behind an older running transaction). The read is one statement outside any
    transaction; the writes and the checkpoint are one short transaction, whose checkpoint
    update is a compare-and-set from ``checkpoint``: if a rebuild moved it meanwhile, the
    transaction rolls back and ``CheckpointMoved`` is raised (reload it and go on).
    """
    if checkpoint is None:
        checkpoint = await _checkpoint(conn)
    events, held = await read_batch(conn, after=checkpoint[1], limit=limit)
    if not events:
        return 0, checkpoint, held
    last = events[-1]
    async with conn.transaction():
        await conn.execute(Q.begin_batch)
        pipeline = conn.pipeline() if len(events) >= PIPELINE_FROM else contextlib.nullcontext()
        async with pipeline, conn.cursor() as cur:
            for event in events:
                await apply(cur, event)
        cur = await conn.execute(
            Q.advance_checkpoint,
            {
                "name": NAME,
                "position": last.position,
                "xid": str(last.xid),
                "from": checkpoint[1],
                "payload": f"{last.xid}:{last.position}",
            },
        )
        if await cur.fetchone() is None:
            raise CheckpointMoved
    return len(events), (last.xid, last.position), held


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
            async with conn.pipeline():
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


async def lag(conn: Conn) -> int:
    """How many committed events the read model does not include yet (for /metrics)."""
    async with conn.cursor() as cur:
        await cur.execute(Q.lag, {"name": NAME})
        row = await cur.fetchone()
    return int(row[0]) if row else 0


class NotifySource(Protocol):
    """What ``Projector`` needs of a shared LISTEN connection (``picloud.workers.Listener``)."""

    async def subscribe(self, channel: str, callback: Callable[[str, str], None]) -> None: ...

    def unsubscribe(self, channel: str, callback: Callable[[str, str], None]) -> None: ...

    async def on_connect(self, callback: Callable[[Conn], Awaitable[None]]) -> None: ...

    def remove_on_connect(self, callback: Callable[[Conn], Awaitable[None]]) -> None: ...


class Projector:
    """Keeps the read model up to date; ``wait_for`` lets a writer read its own write.

    ``Projector(url)`` or ``Projector(pool, listener)``: with a pool, its connection info is
    used for the projector's own leader connection (a session lock holds it for the run) and
    its connections for ``wait_for``'s look-ups; with a shared ``listener`` (one LISTEN
    connection per process), notifications come from it and each of its (re)connects causes a
    catch-up; without one, the projector LISTENs on a connection of its own.
    """

    def __init__(
        self,
        source: str | psycopg_pool.AsyncConnectionPool,
        listener: NotifySource | None = None,
        *,
        batch: int = 500,
        min_interval: float = 0.1,
    ) -> None:
        if isinstance(source, str):
            self.url, self.pool = source, None
        else:
            if not isinstance(source.conninfo, str):
                raise TypeError("Projector needs a pool with a fixed conninfo string")
            self.url, self.pool = source.conninfo, source
        self.listener = listener
        self.batch = batch
        self.min_interval = min_interval
        """Seconds between the starts of two catch-ups: under a stream of events, a wake-up
        waits out the rest of it, so that events share batches (at most 1/min_interval
        batch transactions a second: the read model is off the invocation hot path); after a
        quiet spell the catch-up is immediate, and a ``wait_for`` in this process (a writer
        reading its own write) cuts the wait short."""
        self.batches = 0
        self.events = 0
        self.is_leader = False
        self._done: tuple[int, int] = (0, 0)  # (xid, position) known to be applied
        self._position: tuple[int, int] = (0, 0)  # the stored checkpoint, when leader
        self._changed = asyncio.Event()  # replaced (after being set) at each advance
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # someone in this process waits for the read model
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
        listen_task: asyncio.Task[None] | None = None
        leader: Conn | None = None
        listen: Conn | None = None
        try:
            if self.listener is not None:
                await self.listener.subscribe("picloud_events", self._on_notify)
                await self.listener.subscribe("picloud_projected", self._on_notify)
                await self.listener.on_connect(self._on_connect)
            else:
                listen = await self._connect()
                listening = asyncio.Event()
                listen_task = asyncio.create_task(
                    self._listen(listen, listening), name="projector-listen"
                )
                listen_task.add_done_callback(lambda _: self._wake.set())
                await listening.wait()
            leader = await self._connect()
            self._advance(await _checkpoint(leader))
            await leader.execute(Q.leader_lock)  # a standby waits here
            self._position = await _checkpoint(leader)
            self.is_leader = True
            log.info("projector: leader")
            loop = asyncio.get_running_loop()
            while True:
                self._wake.clear()
                if listen_task is not None and listen_task.done():
                    listen_task.result()  # the listening connection failed: raise its error
                    raise RuntimeError("projector: listener stopped")
                started = loop.time()
                await self._catch_up(leader)
                await self._wake.wait()
                rest = self.min_interval - (loop.time() - started)
                if rest > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), rest)
                self._hurry.clear()
        finally:
            self.is_leader = False
            if self.listener is not None:
                self.listener.unsubscribe("picloud_events", self._on_notify)
                self.listener.unsubscribe("picloud_projected", self._on_notify)
                self.listener.remove_on_connect(self._on_connect)
            if listen_task is not None:
                listen_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listen_task
            for conn in (leader, listen, self._query_conn):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._query_conn = None

    async def _listen(self, conn: Conn, listening: asyncio.Event) -> None:
        await conn.execute("LISTEN picloud_events")
        await conn.execute("LISTEN picloud_projected")
        listening.set()
        self._wake.set()  # catch up once LISTEN is in place
        async for note in conn.notifies():
            self._on_notify(note.channel, note.payload)

    async def _on_connect(self, conn: Conn) -> None:
        self._wake.set()  # the shared listener (re)connected: events may have been missed

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == "picloud_events":
            self._wake.set()
        elif channel == "picloud_projected":
            xid, _, position = payload.partition(":")
            with contextlib.suppress(ValueError):
                self._advance((int(xid), int(position)))

    async def _catch_up(self, conn: Conn) -> None:
        delay = 0.002
        while True:
            try:
                n, self._position, held = await project_batch(
                    conn, self._position, limit=self.batch
                )
            except CheckpointMoved:
                self._position = await _checkpoint(conn)
                continue
            self._advance(self._position)
            if n:
                self.batches += 1
                self.events += n
            if n == self.batch:
                continue
            if not held:
                return
            # Committed events wait for an older transaction to end: retry shortly.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _advance(self, done: tuple[int, int]) -> None:
        if done > self._done:
            self._done = done
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _xid(self, position: int) -> int | None:
        if self.pool is not None:
            async with self.pool.connection() as conn:
                return await xid_of(conn, position)
        async with self._query_lock:
            if self._query_conn is None or self._query_conn.closed:
                self._query_conn = await self._connect()
            return await xid_of(self._query_conn, position)

    async def wait_for(self, position: int, timeout: float, *, xid: int | None = None) -> None:
        """Return once the event at ``position`` is in the read model; ``TimeoutError`` if not
        within ``timeout`` s. Pass the event's ``xid`` (``RecordedEvent.xid``) to save a query."""
        if position <= 0:
            return
        async with asyncio.timeout(timeout):
            if xid is None:
                xid = await self._xid(position)
                if xid is None:
                    raise LookupError(f"no event at position {position}")
            target = (xid, position)
            while self._done < target:
                self._hurry.set()
                await self._changed.wait()

    async def wait_for_event(self, event: RecordedEvent, timeout: float) -> None:
        await self.wait_for(event.position, timeout, xid=event.xid)
