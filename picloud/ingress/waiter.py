"""Waits for job completions: one LISTEN (the process's listener), a future per job."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any

import msgspec
import psycopg
import psycopg_pool

from picloud.workers.listener import Listener

JOB_DONE_CHANNEL = "picloud_job_done"
EARLY_KEPT = 256  # completions kept for a future not registered yet (see JobWaiter.expect)
FINAL = frozenset({"succeeded", "failed", "cancelled", "aborted"})


class Reply(msgspec.Struct):
    """A ``picloud_job_done`` payload that carries the result event (sent by the worker in its
    result transaction, when it fits in a NOTIFY)."""

    job_id: int
    status: str
    result: dict[str, Any]


_reply_decoder = msgspec.json.Decoder(Reply)


def parse_job_done(payload: str) -> tuple[int, str | None] | None:
    """The job id (and status when the payload carries one) of a ``picloud_job_done``."""
    payload = payload.strip()
    if payload.isdigit():
        return int(payload), None
    try:
        data = json.loads(payload)
    except ValueError:
        head, _, status = payload.partition(":")
        return (int(head), status or None) if head.isdigit() else None
    if isinstance(data, int):
        return data, None
    if isinstance(data, dict):
        job_id = data.get("job_id", data.get("id"))
        if job_id is None:
            return None
        return int(job_id), data.get("status")
    return None


class JobWaiter:
    def __init__(self, listener: Listener, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self.listener = listener
        self.pool = pool
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._early: OrderedDict[int, Any] = OrderedDict()

    async def start(self) -> None:
        await self.listener.subscribe(JOB_DONE_CHANNEL, self._on_notify)
        await self.listener.on_connect(self._recheck)

    def expect(self, job_id: int) -> asyncio.Future[Any]:
        """A future for ``job_id``'s completion. A job deferred by a statement that committed
        by itself may complete before this is called: the last few completions nobody awaited
        are kept for that.

        The future's value is a :class:`Reply` (with the result event) when the completion
        NOTIFY carried it, else the final status (or ``None``)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if job_id in self._early:
            fut.set_result(self._early.pop(job_id))
        else:
            self._futures[job_id] = fut
        return fut

    def forget(self, job_id: int) -> None:
        fut = self._futures.pop(job_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    @property
    def pending(self) -> int:
        return len(self._futures)

    def _resolve(self, job_id: int, status: str | Reply | None) -> None:
        fut = self._futures.pop(job_id, None)
        if fut is None:
            if not isinstance(self._early.get(job_id), Reply):  # the reply comes first
                self._early[job_id] = status
            if len(self._early) > EARLY_KEPT:
                self._early.popitem(last=False)
        elif not fut.done():
            fut.set_result(status)

    def _on_notify(self, channel: str, payload: str) -> None:
        if payload.startswith('{"job_id"') and '"result"' in payload:
            try:
                reply = _reply_decoder.decode(payload)
            except msgspec.ValidationError:
                pass
            else:
                self._resolve(reply.job_id, reply)
                return
        parsed = parse_job_done(payload)
        if parsed is None:
            return
        job_id, status = parsed
        if status is not None and status not in FINAL:
            return
        self._resolve(job_id, status)

    async def _recheck(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After a (re)connect: resolve what completed while nobody listened."""
        ids = list(self._futures)
        if not ids:
            return
        cur = await conn.execute(
            "SELECT id, status::text FROM procrastinate_jobs WHERE id = ANY(%s)", (ids,))
        for job_id, status in await cur.fetchall():
            if status in FINAL:
                self._resolve(job_id, status)
