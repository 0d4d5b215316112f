"""One LISTEN connection per process, shared by every role that waits on NOTIFY.

The listener never sends a query while idle: no keep-alive ``SELECT 1`` (TCP keep-alives in
the connection string detect a dead server instead). On every (re)connect it LISTENs to all
subscribed channels and then calls the ``on_connect`` callbacks, so a subscriber can catch up
on what it may have missed while disconnected (the worker fetches, the ingress re-checks its
pending invocations).

psycopg holds the connection's lock for as long as ``notifies()`` waits, so a subscription
made while connected is handed to the reading loop, which a NOTIFY on the listener's private
wake channel (sent from a short-lived connection) gets out of its wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from psycopg import sql

from picloud.workers.background import Background

log = structlog.get_logger("picloud.listener")

Callback = Callable[[str, str], None]
OnConnect = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]

KEEPALIVES: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}


class QuietConnection(psycopg.AsyncConnection[Any]):
    """An async connection that does not wake up while it waits.

    psycopg wakes every 0.1 s during any wait (``notifies()``, a blocked
    ``pg_advisory_lock``) to check for Ctrl-C, which asyncio does not need: cancellation
    reaches the awaiting task anyway. Connections that wait for long (LISTEN, lock waits)
    use this class so an idle process stays asleep.
    """

    async def wait(self, gen: Any, interval: float = 3600.0, timeout: float | None = None) -> Any:
        return await super().wait(gen, interval=max(interval, 3600.0), timeout=timeout)


def _listen(channel: str) -> sql.Composed:
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


class Listener(Background):
    """LISTENs on behalf of every subscriber of this process."""

    task_name = "picloud-listener"

    def __init__(self, url: str) -> None:
        self.url = url
        self._subs: dict[str, list[Callback]] = {}
        self._on_connect: list[OnConnect] = []
        self._pending: list[tuple[str | None, OnConnect | None, asyncio.Future[None]]] = []
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._connected = asyncio.Event()
        self._wake_channel = f"picloud_listener_{os.getpid()}_{id(self):x}"
        self.backend_pid: int | None = None
        self.connects = 0

    async def subscribe(self, channel: str, callback: Callback) -> None:
        """Calls ``callback(channel, payload)`` for each NOTIFY on ``channel`` from now on."""
        new = channel not in self._subs
        self._subs.setdefault(channel, []).append(callback)
        if new and self._conn is not None:
            await self._hand_over(channel, None)

    def unsubscribe(self, channel: str, callback: Callback) -> None:
        callbacks = self._subs.get(channel, [])
        if callback in callbacks:
            callbacks.remove(callback)

    async def on_connect(self, callback: OnConnect) -> None:
        """Runs ``callback(conn)`` after each (re)connect; now too if already connected."""
        self._on_connect.append(callback)
        if self._conn is not None:
            await self._hand_over(None, callback)

    def remove_on_connect(self, callback: OnConnect) -> None:
        if callback in self._on_connect:
            self._on_connect.remove(callback)

    async def _hand_over(self, channel: str | None, callback: OnConnect | None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((channel, callback, done))
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(self._wake_channel)))
        await done

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _run_pending(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while self._pending:
            channel, callback, done = self._pending.pop(0)
            try:
                if channel is not None:
                    await conn.execute(_listen(channel))
                if callback is not None:
                    await callback(conn)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
                raise
            if not done.done():
                done.set_result(None)

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in list(self._subs.get(channel, ())):
            try:
                callback(channel, payload)
            except Exception:
                log.exception("listener callback failed", channel=channel)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await QuietConnection.connect(
                    self.url, autocommit=True, **KEEPALIVES
                ) as conn:
                    await conn.execute(_listen(self._wake_channel))
                    # Subscriptions made during these awaits are picked up by the next round;
                    # the last round ends with no await before ``self._conn`` is set.
                    listened: set[str] = set()
                    called: list[OnConnect] = []
                    while True:
                        channels = [c for c in self._subs if c not in listened]
                        callbacks = [c for c in self._on_connect if c not in called]
                        if not channels and not callbacks:
                            break
                        for channel in channels:
                            await conn.execute(_listen(channel))
                            listened.add(channel)
                        for callback in callbacks:
                            await callback(conn)
                            called.append(callback)
                    # What was handed over before this connection existed is covered above.
                    for _, _, done in self._pending:
                        if not done.done():
                            done.set_result(None)
                    self._pending.clear()
                    self._conn = conn
                    self.backend_pid = conn.info.backend_pid
                    self.connects += 1
                    self._connected.set()
                    delay = 0.1
                    while True:
                        async with contextlib.aclosing(conn.notifies()) as notes:
                            async for note in notes:
                                if note.channel == self._wake_channel:
                                    break
                                self._dispatch(note.channel, note.payload)
                        await self._run_pending(conn)
            except psycopg.OperationalError as exc:
                log.warning("listener connection lost; reconnecting", error=str(exc),
                            retry_in=delay)
            except Exception:
                log.exception("listener failed; reconnecting", retry_in=delay)
            finally:
                self._conn = None
                self._connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
