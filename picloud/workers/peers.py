"""Cluster liveness with no polling: a dead worker's jobs go back to the queue at once.

**Liveness is a session lock.** Each worker holds, for as long as it lives, the advisory lock
``(LIVENESS_CLASS, worker id)`` on its process's listener connection, and the advisory lock
``(QUEUE_CLASS, hashtext(queue))`` *shared* for each node queue (``node-<name>``) it serves.
PostgreSQL frees both the moment that session ends: the process is killed (the kernel closes
its socket), its connection drops, or its machine vanishes (the session sets server-side TCP
keep-alives and a TCP user timeout: about 25-30 s). Nothing is written to say "I am alive",
so an idle cluster sends no statement.

**Membership** is the rows of ``procrastinate_workers``. A worker NOTIFYs ``picloud_peers``
with its id after each (re)connect of its listener, once it holds its lock.

**One warden watches.** Every node with the worker role runs a :class:`Warden` candidate; one
is elected like the scheduler (the others block in ``pg_advisory_lock(WARDEN_LOCK)`` on a
connection of their own). The elected warden reads the worker rows (when elected, after each
reconnect of its listener, and on each ``picloud_peers`` NOTIFY) and, for each peer, blocks in
``pg_advisory_lock(LIVENESS_CLASS, id)`` on a connection of its own. PostgreSQL grants that
lock when the peer's session ends, which wakes the warden: it *reaps* the peer in one
transaction (:func:`reap`): the peer's ``doing`` jobs are retried on the shared queue
(``procrastinate_retry_job_v2``), the ``todo`` jobs of node queues that no live worker serves
move to the shared queue, the peer's row is deleted, and the shared queue is woken with a
NOTIFY; then it frees the lock. A live node picks the jobs up within milliseconds.

Why one warden rather than every node watching every peer: a cluster of N worker nodes then
holds 2(N-1) waiting connections (N-1 for the warden, one per standby) instead of N(N-1), and
no node has to be told to stop watching. If the warden itself dies, a standby is granted the
warden lock, reads the rows, finds the dead warden's lock free and reaps it straight away.

**Exactly once.** Re-queues are serialized by a transaction advisory lock; each selects
``doing`` jobs and makes them ``todo`` in one transaction, so a second reaper (another warden
after a failover, or a worker's own start-up recovery) finds nothing left to do. The retried
invocation records its result once: its result append expects the stream's version 1.

Limits: a worker whose *connection* drops while its process lives looks dead; its running jobs
are retried elsewhere (and still recorded once), and it re-registers under the same id when it
reconnects. Two node names whose ``hashtext`` collide would share a queue lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from picloud.sqlfile import Queries
from picloud.workers.background import Background
from picloud.workers.listener import KEEPALIVES, Listener, QuietConnection

if TYPE_CHECKING:
    from picloud.workers.worker import PicloudWorker

log = structlog.get_logger("picloud.peers")

Q = Queries("picloud.workers", "peers.sql")

LIVENESS_CLASS = 0x5049  # "PI": (class, worker id) is held by each live worker
QUEUE_CLASS = 0x5051  # "PQ": (class, hashtext(node queue)) is held shared by its live workers
WARDEN_LOCK = (0x5057, 1)  # "PW": the elected warden
REAP_LOCK = (0x5057, 2)  # transaction lock: one re-queue at a time
PEERS_CHANNEL = "picloud_peers"
SHARED_QUEUE = "shared"
NODE_QUEUE_PREFIX = "node-"
RETRY_DELAY_S = 1.0
# Sessions that wait on a lock for long: the server checks every 10 s that the client is still
# there (a killed warden's waits end instead of lingering until granted) and sends TCP
# keep-alives (a vanished machine's sessions end too). Server-side timers, not statements.
WAIT_OPTIONS = ("-c client_connection_check_interval=10000 -c tcp_keepalives_idle=10 "
                "-c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
                "-c tcp_user_timeout=30000")


async def serialize_reaps(conn: psycopg.AsyncConnection[Any]) -> None:
    """In a transaction: waits for any other re-queue to commit (see ``serialize_reaps`` in
    peers.sql)."""
    await conn.execute(Q.serialize_reaps, {"reap_cls": REAP_LOCK[0], "reap_key": REAP_LOCK[1]})


async def reap(conn: psycopg.AsyncConnection[Any], worker_id: int) -> list[int]:
    """Gives a dead worker's jobs to live ones (see the module docstring); the job ids moved.

    The caller holds the worker's liveness lock (proof that its session has ended)."""
    params = {"worker": worker_id, "shared": SHARED_QUEUE, "cls": QUEUE_CLASS}
    async with conn.transaction():
        await serialize_reaps(conn)
        cur = await conn.execute(Q.requeue_jobs_of, params)
        moved = [row[0] for row in await cur.fetchall()]
        cur = await conn.execute(Q.release_node_queues, params)
        moved += [row[0] for row in await cur.fetchall()]
        await conn.execute(Q.forget_worker, params)
        if moved:
            await conn.execute(Q.wake_queue, {"queue": SHARED_QUEUE, "job": moved[0]})
    return moved


class Warden(Background):
    """Watches the other workers of the cluster when elected. ``worker`` is this node's
    :class:`~picloud.workers.worker.PicloudWorker` (its own id is not watched)."""

    task_name = "picloud-warden"

    def __init__(self, url: str, listener: Listener, worker: PicloudWorker, node: str) -> None:
        self.url = url
        self.listener = listener
        self.worker = worker
        self.node = node
        self.is_leader = False
        self.reaped: list[int] = []  # worker ids
        self.requeued: list[int] = []  # job ids
        self._watching: dict[int, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()

    @property
    def watching(self) -> set[int]:
        return set(self._watching)

    def _on_peer(self, channel: str, payload: str) -> None:
        self._changed.set()

    async def _on_connect(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._changed.set()  # NOTIFYs may have been missed while disconnected

    async def _run(self) -> None:
        await self.listener.subscribe(PEERS_CHANNEL, self._on_peer)
        await self.listener.on_connect(self._on_connect)
        try:
            while True:
                await self._stand()
                await asyncio.sleep(RETRY_DELAY_S)
        finally:
            self.listener.unsubscribe(PEERS_CHANNEL, self._on_peer)
            self.listener.remove_on_connect(self._on_connect)

    async def _connect(self, purpose: str) -> psycopg.AsyncConnection[Any]:
        return await QuietConnection.connect(
            self.url, autocommit=True, **KEEPALIVES, options=WAIT_OPTIONS,
            application_name=f"picloud warden {self.node} {purpose}"[:63])

    async def _stand(self) -> None:
        """Waits to be elected, then watches until the connection is lost."""
        try:
            await self.worker.wait_ready()
            async with await self._connect("election") as conn:
                await conn.execute("SELECT pg_advisory_lock(%s, %s)", WARDEN_LOCK)
                self.is_leader = True
                log.info("warden elected", node=self.node)
                await self._lead(conn)
        except psycopg.OperationalError as exc:
            log.warning("warden connection lost", error=str(exc))
        except Exception:
            log.exception("warden failed; restarting")
        finally:
            self.is_leader = False
            await self._stop_watching()

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._changed.set()
        while True:
            await self._changed.wait()
            self._changed.clear()
            cur = await conn.execute(Q.workers)
            ids = {row[0] for row in await cur.fetchall()}
            for worker_id in sorted(ids - set(self._watching) - {self.worker.worker_id}):
                self._watching[worker_id] = asyncio.create_task(
                    self._watch(worker_id), name=f"picloud-warden-watch-{worker_id}")

    async def _watch(self, worker_id: int) -> None:
        key = {"cls": LIVENESS_CLASS, "worker": worker_id}
        try:
            async with await self._connect(f"watch {worker_id}") as conn:
                await conn.execute(Q.hold_liveness, key)  # granted when the peer is gone
                try:
                    moved = await reap(conn, worker_id)
                finally:
                    await conn.execute(Q.unlock_liveness, key)
            self.reaped.append(worker_id)
            self.requeued.extend(moved)
            log.warning("worker gone: its jobs were given back", worker_id=worker_id,
                        job_ids=moved, node=self.node)
        except Exception as exc:  # the connection, or the re-queue: try again (reads the rows)
            log.warning("lost the watch on a worker; watching again", worker_id=worker_id,
                        error=str(exc), node=self.node)
            await asyncio.sleep(RETRY_DELAY_S)
            self._changed.set()
        finally:
            self._watching.pop(worker_id, None)

    async def _stop_watching(self) -> None:
        tasks = list(self._watching.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watching.clear()
