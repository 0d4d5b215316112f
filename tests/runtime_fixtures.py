"""Runtime fixtures (import them in a test module: ``from tests.runtime_fixtures import *``).

``node``    a :class:`~picloud.ingress.node.Node` with every role on the module's database
``client``  an ``httpx.AsyncClient`` on the node's app (in process), with the admin token
``engine_ready``  skips when ``engine.wasm`` is not a built engine yet
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from picloud.config import load_settings

ADMIN_TOKEN = "test-admin-token"
WASM = Path(__file__).resolve().parent.parent / "picloud" / "workers" / "engine.wasm"


def engine_built() -> bool:
    return WASM.exists() and WASM.stat().st_size > 10_000


@pytest.fixture(scope="session")
def engine_ready() -> None:
    if not engine_built():
        pytest.skip("picloud/workers/engine.wasm is not a built engine yet (engine/build.sh)")


@pytest.fixture(scope="module")
async def node(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from picloud.ingress.node import Node

    settings = load_settings(home=tmp_path_factory.mktemp("home"), database_url=database_url,
                             node="test-node", admin_token=ADMIN_TOKEN, invoke_timeout_s=10.0)
    n = Node(settings, database_url, concurrency=4)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


@pytest.fixture(scope="module")
async def client(node: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=node.app())
    async with httpx.AsyncClient(
        transport=transport, base_url="http://picloud",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30.0,
    ) as c:
        yield c


async def count(pool: Any, sql: str, *params: Any) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """For assertions on background effects in tests only (the code under test never polls)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def wait_healthy(port: int, timeout: float = 30.0) -> None:
    """Waits until a `picloud up` on `port` answers /healthz with 200; fails after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"picloud up on port {port} was not healthy within {timeout} s")
