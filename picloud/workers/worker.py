"""A procrastinate worker that never polls and never loses a wake-up.

Differences from the stock ``procrastinate.Worker`` (3.10):

- no polling fetch, no abort polling, no heartbeat queries: its only side task subscribes to
  the process's shared :class:`~picloud.workers.listener.Listener`;
- the wake-up event is cleared *before* each fetch, so a NOTIFY that arrives while a fetch
  runs leads to one more fetch instead of being lost;
- it fetches after every (re)connect of the listener;
- liveness is a session advisory lock ``(LIVENESS_CLASS, worker_id)`` held by the listener's
  connection, plus a shared lock per node queue it serves (see :mod:`picloud.workers.peers`,
  whose warden re-queues a dead peer's jobs the moment its session ends); after each
  (re)connect a worker takes these locks, announces itself on ``picloud_peers``, and gives the
  ``doing`` jobs of workers that hold no such lock (killed mid-invocation), and its own
  ``doing`` jobs that it is not running (a result transaction lost with the server), back to
  their queue (the shared one for a node queue's jobs);
- a task may complete its own job inside its own transaction (the invoke task does, with its
  result event); the worker then does not persist the status a second time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import psycopg
import structlog
from procrastinate import App, jobs, retry
from procrastinate import worker as pworker
from procrastinate.job_context import JobContext

from picloud.workers.listener import Listener
from picloud.workers.peers import (
    LIVENESS_CLASS,
    NODE_QUEUE_PREFIX,
    QUEUE_CLASS,
    SHARED_QUEUE,
    Q,
    serialize_reaps,
)

log = structlog.get_logger("picloud.worker")

FOREVER = 10.0 * 365 * 24 * 3600

RECOVER_STALLED_SQL = """
WITH dead AS (
    SELECT w.id FROM procrastinate_workers w
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.classid = %(cls)s
          AND l.objid::bigint = w.id AND l.objsubid = 2 AND l.granted)
      AND w.id <> %(me)s
), stalled AS (
    SELECT j.id FROM procrastinate_jobs j
    WHERE j.status = 'doing'
      AND (j.worker_id IS NULL OR j.worker_id IN (SELECT id FROM dead)
           OR (j.worker_id = %(me)s AND NOT j.id = ANY(%(running)s::bigint[])))
    FOR UPDATE SKIP LOCKED
)
SELECT id FROM stalled
"""


def node_queue(node: str) -> str:
    return f"{NODE_QUEUE_PREFIX}{node}"


__all__ = ["LIVENESS_CLASS", "SHARED_QUEUE", "PicloudWorker", "node_queue"]


class PicloudWorker(pworker.Worker):
    """See the module docstring."""

    def __init__(
        self,
        app: App,
        listener: Listener,
        queues: Iterable[str],
        *,
        runtime: Any = None,
        concurrency: int = 4,
        name: str = "picloud-worker",
        shutdown_graceful_timeout: float | None = 30.0,
    ) -> None:
        super().__init__(
            app,
            queues=list(queues),
            name=name,
            concurrency=concurrency,
            fetch_job_polling_interval=FOREVER,
            abort_job_polling_interval=FOREVER,
            update_heartbeat_interval=FOREVER,
            stalled_worker_timeout=FOREVER,
            listen_notify=False,
            install_signal_handlers=False,
            shutdown_graceful_timeout=shutdown_graceful_timeout,
        )
        self.listener = listener
        self.runtime = runtime
        self._ready = asyncio.Event()
        self.completed_by_task: set[int] = set()
        self.fetches = 0
        self.recovered: list[int] = []

    def _log_extra(self, action: str, context: JobContext | None, job_result: Any,
                   **kwargs: Any) -> Any:
        """procrastinate builds this context for its INFO and DEBUG job lines whether or not
        they are logged (a copy of the job, per line, several lines per job): in full only
        when its logger prints INFO lines."""
        if not self.logger.isEnabledFor(logging.INFO):
            return {"action": action, "job_id": context.job.id if context else None}
        return super()._log_extra(action, context, job_result, **kwargs)

    # -- wake-ups ---------------------------------------------------------------------------
    def _on_notify(self, channel: str, payload: str) -> None:
        self._new_job_event.set()

    async def wait_ready(self) -> None:
        """Returns once this worker holds its liveness lock (its id is set)."""
        await self._ready.wait()

    async def _on_connect(self, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self.worker_id is not None
        me = {"worker": self.worker_id}
        await conn.execute(Q.session_settings,
                           {"name": f"picloud {self.worker_name} {self.worker_id}"[:63]})
        await conn.execute(Q.hold_liveness, {**me, "cls": LIVENESS_CLASS})
        for queue in self.queues or ():
            if queue.startswith(NODE_QUEUE_PREFIX):
                await conn.execute(Q.serve_queue, {"cls": QUEUE_CLASS, "queue": queue})
        await conn.execute(Q.register_again, me)
        await self._recover_stalled(conn)
        await conn.execute(Q.announce, me)
        self._ready.set()
        self._new_job_event.set()

    async def _recover_stalled(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Puts back in the queue (the shared one for a node queue's job) the ``doing`` jobs of
        dead workers, and this worker's own ``doing`` jobs that it is not running (after a
        reconnect: their result transaction was lost, e.g. asynchronously committed when
        PostgreSQL crashed). Each is retried, and its result recorded once (the result append
        expects the stream's version 1)."""
        async with conn.transaction():
            await serialize_reaps(conn)
            running = [c.job.id for c in self._running_jobs.values() if c.job.id is not None]
            cur = await conn.execute(RECOVER_STALLED_SQL, {"cls": LIVENESS_CLASS,
                                                           "me": self.worker_id,
                                                           "running": running})
            ids = [row[0] for row in await cur.fetchall()]
            for job_id in ids:
                await conn.execute(Q.requeue_job, {"job": job_id, "shared": SHARED_QUEUE})
            if ids:  # the other workers too: they may be idle while this one is busy
                await conn.execute(Q.wake_queue, {"queue": SHARED_QUEUE, "job": ids[0]})
        if ids:
            log.warning("re-queued jobs of dead workers", job_ids=ids)
            self.recovered.extend(ids)

    async def _listen(self) -> None:
        channels = [f"procrastinate_queue_v1#{q}" for q in self.queues or ()]
        for channel in channels:
            await self.listener.subscribe(channel, self._on_notify)
        await self.listener.on_connect(self._on_connect)
        try:
            await asyncio.Event().wait()
        finally:
            for channel in channels:
                self.listener.unsubscribe(channel, self._on_notify)
            self.listener.remove_on_connect(self._on_connect)

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        return [asyncio.create_task(self._listen(), name="picloud-worker-listen")]

    # -- fetching ---------------------------------------------------------------------------
    async def _fetch_and_process_jobs(self) -> None:
        if not self._ready.is_set():
            ready = asyncio.create_task(self._ready.wait())
            stop = asyncio.create_task(self._stop_event.wait())
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stop.cancel()
        while not self._stop_event.is_set():
            acquire = asyncio.create_task(self._job_semaphore.acquire())
            stop = asyncio.create_task(self._stop_event.wait())
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if self._stop_event.is_set():
                if acquire.done():
                    self._job_semaphore.release()
                else:
                    acquire.cancel()
                return
            # Cleared before the fetch: a NOTIFY arriving during it sets it again.
            self._new_job_event.clear()
            assert self.worker_id is not None
            try:
                self.fetches += 1
                job = await self.app.job_manager.fetch_job(
                    queues=self.queues, worker_id=self.worker_id
                )
            except BaseException:
                self._job_semaphore.release()
                raise
            if job is None:
                self._job_semaphore.release()
                return
            self._start_job(job)

    def _start_job(self, job: jobs.Job) -> None:
        job_id = job.id
        context = JobContext(
            app=self.app,
            worker_name=self.worker_name,
            worker_queues=self.queues,
            additional_context={"worker": self},
            job=job,
            abort_reason=lambda: self._job_ids_to_abort.get(job_id) if job_id else None,
            start_timestamp=time.time(),
        )
        task = asyncio.create_task(self._process_job(context),
                                   name=f"job {job.task_name}[{job.id}]")
        self._running_jobs[task] = context

        def done(t: asyncio.Task[Any]) -> None:
            del self._running_jobs[t]
            self._job_semaphore.release()

        task.add_done_callback(done)

    async def _persist_job_status(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: JobContext,
        job_result: Any,
    ) -> None:
        assert job.id is not None
        if job.id in self.completed_by_task:
            self.completed_by_task.discard(job.id)
            self._job_ids_to_abort.pop(job.id, None)
            return
        await super()._persist_job_status(job, status, retry_decision, context, job_result)
