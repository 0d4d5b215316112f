"""A worker killed mid-invocation: the invocation is retried elsewhere and recorded once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from picloud.config import load_settings
from picloud.events import store
from picloud.ingress.node import Node
from tests.runtime_fixtures import ADMIN_TOKEN, count, engine_ready  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")

ROOT = Path(__file__).resolve().parent.parent
SLOW = "let s = 0; for i in 0..25000000 { s += i; } s"
LONG_LIMITS = {"PICLOUD_SCRIPT_FUEL": str(50_000_000_000), "PICLOUD_SCRIPT_TIMEOUT_S": "60"}


async def _status(pool: Any, job_id: int) -> str | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                                 (job_id,))
        row = await cur.fetchone()
    return row[0] if row else None


async def test_killed_worker_is_retried_and_recorded_once(database_url: str,
                                                          tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", database_url=database_url, node="crash",
                             admin_token=ADMIN_TOKEN)
    front = Node(settings, database_url, roles=["ingress", "projector"])
    await front.start()
    env = {**os.environ, **LONG_LIMITS, "PYTHONPATH": str(ROOT),
           "PICLOUD_HOME": str(tmp_path / "w1")}
    victim = subprocess.Popen(
        [sys.executable, "-m", "picloud", "up", "--roles", "worker", "--node", "crash",
         "--database-url", database_url], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rescuer: Node | None = None
    try:
        async with front.pool.connection() as conn:
            from picloud.events import types

            recorded = await store.append(
                conn, "script-slow",
                [types.ScriptVersionUploaded(name="slow", version=1, sha256="x", source=SLOW)],
                expected_version=0, metadata=store.Metadata(actor="test"))
        await front.services.wait_projected(recorded[-1])
        async with front.pool.connection() as conn, conn.transaction():
            inv_id, job_id, _ = await front.services.request_invocation(
                conn, script="slow", version=1, trigger="http", request=None, event_data={})
        for _ in range(300):  # until the victim has started running it
            if await _status(front.pool, job_id) == "doing":
                break
            await asyncio.sleep(0.05)
        assert await _status(front.pool, job_id) == "doing"
        await asyncio.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        async with front.pool.connection() as conn:
            assert len(await store.read_stream(conn, f"invocation-{inv_id}")) == 1
        # Another worker starts: it finds the dead worker's job and runs it again.
        os.environ.update(LONG_LIMITS)
        rescuer = Node(load_settings(home=tmp_path / "w2", database_url=database_url,
                                     node="crash", admin_token=ADMIN_TOKEN),
                       database_url, roles=["worker"])
        done = front.services.waiter.expect(job_id)
        await rescuer.start()
        if await _status(front.pool, job_id) != "succeeded":
            await asyncio.wait_for(done, 30)
        assert rescuer.worker is not None and job_id in rescuer.worker.recovered
        async with front.pool.connection() as conn:
            events = await store.read_stream(conn, f"invocation-{inv_id}")
        assert [e.type for e in events] == ["invocation.requested", "invocation.succeeded"]
        assert events[1].data["response"]["status"] == 200

        # Executing the same invocation once more (a duplicate job) records nothing new.
        async with front.pool.connection() as conn, conn.transaction():
            job2 = await front.services.jobs.tasks["picloud.invoke"].configure(
                connection=conn, queue="shared").defer_async(invocation_id=inv_id)
            done2 = front.services.waiter.expect(job2)
        await asyncio.wait_for(done2, 30)
        async with front.pool.connection() as conn:
            assert len(await store.read_stream(conn, f"invocation-{inv_id}")) == 2
        assert await _status(front.pool, job2) == "succeeded"
    finally:
        for var in LONG_LIMITS:
            os.environ.pop(var, None)
        if victim.poll() is None:
            victim.kill()
        if rescuer is not None:
            await rescuer.stop()
        await front.stop()
