"""One node: every role of ``picloud up`` in one process and one event loop.

Roles: ``ingress`` (HTTP: invoke endpoints and the API), ``worker``, ``scheduler``,
``projector``. They share one connection pool and one LISTEN connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import psycopg_pool
import structlog

from picloud.config import Settings
from picloud.database import create_pool
from picloud.ingress.app import create_app
from picloud.ingress.auth import hash_token
from picloud.ingress.directory import ScriptDirectory, current_version
from picloud.ingress.metrics import Metrics
from picloud.ingress.services import Services
from picloud.ingress.waiter import JobWaiter
from picloud.projections import Projector, runner
from picloud.workers.listener import KEEPALIVES, Listener, QuietConnection
from picloud.workers.peers import Warden
from picloud.workers.scheduler import Scheduler
from picloud.workers.tasks import Runtime
from picloud.workers.tasks import create_app as create_jobs_app
from picloud.workers.worker import SHARED_QUEUE, PicloudWorker, node_queue

log = structlog.get_logger("picloud.node")

ALL_ROLES = ("ingress", "worker", "scheduler", "projector")


class _QuietProjector(Projector):
    """The projector on :class:`QuietConnection` (its LISTEN and leader-lock connections
    otherwise wake the process every 0.1 s while idle)."""

    async def _connect(self) -> Any:
        # The read model is derived from the log and its checkpoint commits with it: after a
        # crash it may lose a tail of projected events and re-project them, so it does not
        # need to wait for fsync.
        return await QuietConnection.connect(self.url, autocommit=True, **KEEPALIVES,
                                             application_name=runner.APPLICATION_NAME,
                                             options="-c synchronous_commit=off")


class Node:
    def __init__(self, settings: Settings, url: str, *, roles: Iterable[str] = ALL_ROLES,
                 concurrency: int = 4, pool_size: int = 10,
                 local_worker: bool | None = None) -> None:
        self.settings = settings
        self.url = url
        self.roles = set(roles)
        self.concurrency = concurrency
        self.pool_size = pool_size
        self.local_worker = "worker" in self.roles if local_worker is None else local_worker
        self.pool: psycopg_pool.AsyncConnectionPool | None = None
        self.listener = Listener(url)
        self.metrics = Metrics()
        self.worker: PicloudWorker | None = None
        self.scheduler: Scheduler | None = None
        self.warden: Warden | None = None
        self.projector: Any = None
        self.services: Services | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: Any = None

    async def start(self) -> None:
        self.pool = await create_pool(self.url, min_size=2, max_size=self.pool_size)
        jobs = create_jobs_app()
        await jobs.open_async(self.pool)
        waiter = JobWaiter(self.listener, self.pool)
        scripts = ScriptDirectory(self.listener, self.pool)
        admin = self.settings.admin_token
        self.services = Services(
            settings=self.settings, pool=self.pool, jobs=jobs, waiter=waiter,
            metrics=self.metrics, admin_hash=hash_token(admin) if admin else None,
            scripts=scripts, local_worker=self.local_worker)
        self.listener.start()
        await waiter.start()
        await scripts.start()
        if "projector" in self.roles:
            await self._start_projector()
        if "worker" in self.roles:
            runtime = Runtime(pool=self.pool, node=self.settings.node,
                              async_commit=self.services.async_commit,
                              on_result=[self.metrics.worker_result])
            self.worker = PicloudWorker(
                jobs, self.listener, [node_queue(self.settings.node), SHARED_QUEUE],
                runtime=runtime, concurrency=self.concurrency,
                name=f"worker-{self.settings.node}")
            self._tasks.append(asyncio.create_task(self.worker.run(), name="picloud-worker"))
            self.warden = Warden(self.url, self.listener, self.worker, self.settings.node)
            self.warden.start()
        if "scheduler" in self.roles:
            self.scheduler = Scheduler(self.url, self.pool, self.listener,
                                       self.services.request_invocation, current_version,
                                       self.settings.node)
            self.scheduler.start()
        await self.listener.wait_connected(10)

    async def _start_projector(self) -> None:
        assert self.pool is not None and self.services is not None
        self.projector = _QuietProjector(self.pool, self.listener)
        self.services.projector = self.projector
        self._tasks.append(asyncio.create_task(self.projector.run(), name="picloud-projector"))

    def app(self) -> Any:
        assert self.services is not None
        return create_app(self.services)

    async def serve(self, host: str, port: int) -> None:
        """Serves HTTP with granian embedded in this event loop until cancelled."""
        from granian.constants import Interfaces
        from granian.server.embed import Server

        self._server = Server(self.app(), address=host, port=port, interface=Interfaces.ASGINL,
                              log_enabled=False, backlog=1024)
        await self._server.serve()

    async def stop_http(self) -> None:
        """Stops accepting requests; ``serve`` returns once the requests in flight end."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.stop()
            self._server = None

    async def stop(self) -> None:
        """Stops taking work, lets in-flight invocations finish, then closes."""
        await self.stop_http()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.warden is not None:
            await self.warden.stop()
        if self.worker is not None:
            self.worker.stop()
        for task in self._tasks:
            if task.get_name() != "picloud-worker":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.listener.stop()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
