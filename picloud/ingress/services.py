"""What the HTTP handlers share: the pool, the job waiter, deferring, the projector."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg_pool
from procrastinate import App

from picloud.config import Settings
from picloud.events import store, types
from picloud.ingress.directory import ScriptDirectory
from picloud.ingress.metrics import Metrics
from picloud.ingress.waiter import JobWaiter
from picloud.workers.tasks import inline_request, request_and_defer
from picloud.workers.worker import SHARED_QUEUE, node_queue


def async_commit_enabled() -> bool:
    """On by default (``PICLOUD_ASYNC_COMMIT=0`` turns it off): a worker's result transaction
    (the result event and its job's completion, atomically) commits without waiting for its
    WAL flush (PostgreSQL's WAL writer flushes it within ``wal_writer_delay``, 200 ms).

    A sync invocation (the caller waits for the answer) is the other way round: its request
    transaction does not wait, its result transaction does, and since the WAL is flushed in
    order, that flush makes the request durable too, before the answer (one fsync on the path
    instead of two); a 504 (no answer in time) comes long after the WAL writer flushed the
    request. Job fetches never wait (losing one gives the job back to the queue).

    What a crash of PostgreSQL may then lose is the last fraction of a second of *results* of
    202-answered invocations, never a request that was answered: the request transaction
    (``invocation.requested`` + the job) of a 202 waits for its flush, and a lost result
    transaction leaves its job ``doing`` with no result event, which the worker hands back to
    the queue (``PicloudWorker`` re-queues its own orphaned jobs after every reconnect): the
    script runs again and its result is recorded once. The caller may have seen the lost
    result's answer, so a script with outside side effects may run twice — which any
    at-least-once retry (a worker killed mid-invocation) already implies. Control-plane events
    (uploads, schedules, tokens) always wait for their flush."""
    return os.environ.get("PICLOUD_ASYNC_COMMIT", "1").strip().lower() not in ("0", "false",
                                                                               "no", "off")


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def plain(value: Any) -> Any:
    """A JSON-ready copy of a read-model row, struct or event."""
    return msgspec.to_builtins(value)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    pool: psycopg_pool.AsyncConnectionPool
    jobs: App
    waiter: JobWaiter
    metrics: Metrics
    admin_hash: str | None
    scripts: ScriptDirectory
    projector: Any = None
    started: datetime = field(default_factory=now)
    async_commit: bool = field(default_factory=lambda: async_commit_enabled())
    trusted_networks: tuple[Any, ...] = field(init=False, default=())
    """``settings.trusted_proxies`` parsed (see :meth:`from_trusted_proxy`)."""
    local_worker: bool = True
    """This node runs a worker: HTTP invocations go to its own queue (else the shared one)."""

    def __post_init__(self) -> None:
        self.trusted_networks = self.settings.trusted_networks()

    def from_trusted_proxy(self, peer: str | None) -> bool:
        """Whether the connection comes from a proxy whose forwarding headers count."""
        if not peer or not self.trusted_networks:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted_networks)

    async def wait_projected(self, event: store.RecordedEvent, timeout: float = 5.0) -> None:
        """Read-after-write: returns once ``event`` is in this node's read model (and, for a
        script's event, the next invocation on this node sees it)."""
        try:
            if self.projector is not None:
                await self.projector.wait_for_event(event, timeout)
        finally:
            if event.stream.startswith("script-"):
                self.scripts.forget(event.stream.removeprefix("script-"))

    async def request_invocation(
        self,
        conn: Any,
        *,
        script: str,
        version: int,
        trigger: str,
        request: dict[str, Any] | None,
        event_data: dict[str, Any],
        replay_of: str | None = None,
        metadata: store.Metadata | None = None,
        queue: str | None = None,
        wait: bool = False,
    ) -> tuple[str, int, asyncio.Future[str | None] | None]:
        """Appends ``invocation.requested`` and defers its job in one statement on ``conn``
        (in its transaction if it has one, else the statement is its own).

        With ``wait``, the returned future resolves when the job completes (the waiter keeps
        completions that arrive before the future is registered).
        """
        invocation_id = str(uuid.uuid4())
        event = {"type": trigger, "id": invocation_id, "time": now().isoformat(),
                 "data": event_data}
        requested = types.InvocationRequested(
            invocation_id=invocation_id, script=script, version=version, trigger=trigger,  # type: ignore[arg-type]
            request=request, event=event, replay_of=replay_of)
        meta = metadata or store.Metadata()
        meta = store.Metadata(actor=meta.actor, correlation_id=meta.correlation_id or invocation_id,
                              causation_id=meta.causation_id, node=self.settings.node)
        args = {"invocation_id": invocation_id, **inline_request(types.encode(requested))}
        # Durability (see async_commit_enabled): the caller of a sync invocation is answered
        # after the result's commit, which then waits for its WAL flush, and that flush covers
        # this earlier commit too: so this one need not wait (one fsync per invocation, not
        # two). A 202 is answered right after this commit: then this one waits.
        sync_result = wait and self.async_commit
        if sync_result:
            args["sync_result"] = True
        job_id = await request_and_defer(
            conn, f"invocation-{invocation_id}", requested, meta,
            queue=queue or (node_queue(self.settings.node) if self.local_worker else SHARED_QUEUE),
            args=args, async_commit=sync_result)
        future = self.waiter.expect(job_id) if wait else None
        return invocation_id, job_id, future


__all__ = ["SHARED_QUEUE", "Services", "now", "plain", "valid_name"]
