# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""The vertical slice and the error paths, on a real PostgreSQL and the real engine."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from picloud.events import store
from tests.runtime_fixtures import (  # noqa: F401 (fixtures)
    client,
    count,
    engine_ready,
    node,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("engine_ready")

HELLO = 'let name = request.query.name ?? "world"; `hello ${name}`'


async def _events(pool: Any) -> list[tuple[str, str]]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT stream, type FROM events ORDER BY position")
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def _state(pool: Any) -> tuple[int, int]:
    return (await count(pool, "SELECT count(*) FROM events"),
            await count(pool, "SELECT count(*) FROM procrastinate_jobs"))


async def test_upload_invoke_respond(client: httpx.AsyncClient, node: Any) -> None:
    r = await client.put("/api/scripts/hello", content=HELLO)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["url"] == "/fn/hello"
    r = await client.get("/fn/hello", params={"name": "pi"})
    assert r.status_code == 200, r.text
    assert r.text == "hello pi"
    inv_id = r.headers["x-picloud-invocation"]
    async with node.pool.connection() as conn:
        events = await store.read_stream(conn, f"invocation-{inv_id}")
    assert [e.type for e in events] == ["invocation.requested", "invocation.succeeded"]
    assert events[1].data["node"] == "test-node"
    # the same source again is not a new version
    r = await client.put("/api/scripts/hello", content=HELLO)
    assert r.status_code == 200 and r.json()["version"] == 1


async def test_n_invocations_leave_exactly_the_expected_events(
        client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/counted", content="40 + 2")
    before = await _events(node.pool)
    results = await asyncio.gather(*[client.post("/fn/counted/x", content=b"{}")
                                     for _ in range(20)])
    assert all(r.status_code == 200 and r.json() == 42 for r in results)
    after = (await _events(node.pool))[len(before):]
    ids = {r.headers["x-picloud-invocation"] for r in results}
    assert len(ids) == 20
    assert sorted(t for _, t in after) == sorted(
        ["invocation.requested"] * 20 + ["invocation.succeeded"] * 20)
    assert {s for s, _ in after} == {f"invocation-{i}" for i in ids}


async def test_response_shapes(client: httpx.AsyncClient) -> None:
    await client.put("/api/scripts/shape",
                     content='#{status: 201, headers: #{"x-k": "v"}, body: #{a: 1}}')
    r = await client.get("/fn/shape")
    assert r.status_code == 201 and r.headers["x-k"] == "v" and r.json() == {"a": 1}
    await client.put("/api/scripts/unit", content="let x = 1;")
    r = await client.get("/fn/unit")
    assert r.status_code == 204


async def test_script_error_is_500_with_position(client: httpx.AsyncClient) -> None:
    await client.put("/api/scripts/boom", content="let x = 1;\nx / 0")
    r = await client.get("/fn/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["invocation_id"] == r.headers["x-picloud-invocation"]
    assert body["error"]["line"] == 2 and body["error"]["type"]


async def test_limit_is_500_kind_limit(client: httpx.AsyncClient) -> None:
    await client.put("/api/scripts/spin", content="loop { }")
    r = await client.get("/fn/spin")
    assert r.status_code == 500
    assert r.json()["error"]["kind"] == "limit"


async def test_respond_async(client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/later", content='"done"')
    r = await client.get("/fn/later", headers={"prefer": "respond-async"})
    assert r.status_code == 202
    inv_id = r.json()["invocation_id"]
    assert r.json()["status_url"] == f"/api/invocations/{inv_id}"

    async def finished() -> bool:
        async with node.pool.connection() as conn:
            return len(await store.read_stream(conn, f"invocation-{inv_id}")) == 2
    await wait_until(finished)


async def test_syntax_error_is_422_and_stores_nothing(client: httpx.AsyncClient,
                                                      node: Any) -> None:
    before = await _state(node.pool)
    r = await client.put("/api/scripts/bad", content="let x = ;\n")
    assert r.status_code == 422
    d = r.json()["diagnostics"][0]
    assert d["line"] == 1 and d["column"] >= 1 and d["message"]
    assert await _state(node.pool) == before


@pytest.mark.parametrize("call", [
    ("GET", "/fn/nope", {}, 404),
    ("GET", "/fn/Bad_Name", {}, 404),
    ("PUT", "/api/scripts/Bad_Name", {"content": "1"}, 400),
    ("PUT", "/api/scripts/" + "a" * 64, {"content": "1"}, 400),
    ("PUT", "/api/scripts/j", {"content": b"{not json",
                               "headers": {"content-type": "application/json"}}, 400),
    ("PUT", "/api/schedules/s", {"json": {"script": "hello", "cron": "* * *"}}, 422),
    ("PUT", "/api/schedules/s", {"content": b"[1", "headers": {}}, 400),
    ("POST", "/fn/hello", {"content": b"x" * ((1 << 20) + 1)}, 413),
    ("GET", "/api/invocations/nope", {}, 404),
    ("POST", "/api/invocations/nope/replay", {}, 404),
])
async def test_bad_input_changes_nothing(client: httpx.AsyncClient, node: Any,
                                        call: tuple[str, str, dict[str, Any], int]) -> None:
    await client.put("/api/scripts/hello", content=HELLO)
    method, path, kwargs, status = call
    before = await _state(node.pool)
    r = await client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert await _state(node.pool) == before


async def test_auth(client: httpx.AsyncClient, node: Any) -> None:
    before = await _state(node.pool)
    r = await client.put("/api/scripts/x", content="1", headers={"authorization": ""})
    assert r.status_code == 401
    r = await client.put("/api/scripts/x", content="1", headers={"authorization": "Bearer no"})
    assert r.status_code == 401
    assert await _state(node.pool) == before
    r = await client.post("/api/tokens", json={"name": "ro", "scopes": ["read"]})
    assert r.status_code == 201, r.text
    ro = r.json()["token"]
    r = await client.get("/api/scripts", headers={"authorization": f"Bearer {ro}"})
    assert r.status_code == 200
    before = await _state(node.pool)
    r = await client.put("/api/scripts/x", content="1", headers={"authorization": f"Bearer {ro}"})
    assert r.status_code == 403
    assert await _state(node.pool) == before
    async with node.pool.connection() as conn:
        cur = await conn.execute("SELECT token_hash FROM api_tokens")
        hashes = [row[0] for row in await cur.fetchall()]
    assert ro not in hashes and len(hashes[0]) == 64
    created = await client.post("/api/tokens", json={"name": "w", "scopes": ["write"]})
    r = await client.delete(f"/api/tokens/{created.json()['token_id']}")
    assert r.status_code == 204


async def test_failure_between_append_and_defer_leaves_neither(node: Any) -> None:
    before = await _state(node.pool)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with node.pool.connection() as conn, conn.transaction():
            await node.services.request_invocation(
                conn, script="hello", version=1, trigger="http", request=None, event_data={})
            raise Boom
    assert await _state(node.pool) == before


async def test_replay_failed_against_fixed_version(client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/fixme", content="let x = 0;\n10 / x")
    r = await client.get("/fn/fixme")
    assert r.status_code == 500
    original = r.headers["x-picloud-invocation"]
    await client.put("/api/scripts/fixme", content="let x = 2;\n10 / x")
    r = await client.post(f"/api/invocations/{original}/replay", json={})
    assert r.status_code == 202, r.text
    new_id = r.json()["invocation_id"]

    async def done() -> bool:
        async with node.pool.connection() as conn:
            return len(await store.read_stream(conn, f"invocation-{new_id}")) == 2
    await wait_until(done)
    async with node.pool.connection() as conn:
        replayed = await store.read_stream(conn, f"invocation-{new_id}")
        orig = await store.read_stream(conn, f"invocation-{original}")
    assert replayed[0].data["replay_of"] == original and replayed[0].data["version"] == 2
    assert replayed[1].type == "invocation.succeeded"
    assert [e.type for e in orig] == ["invocation.requested", "invocation.failed"]
    r = await client.get("/api/audit", params={"type": "replay.requested"})
    assert r.status_code == 200
    assert any(e["metadata"]["actor"] == "admin" for e in r.json()["items"])


async def test_metrics_and_health(client: httpx.AsyncClient, node: Any) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    await node.listener.stop()  # no LISTEN: this node cannot learn of completions
    try:
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.json()["listener"] is False
    finally:
        node.listener.start()
        await node.listener.wait_connected(10)
    assert (await client.get("/healthz")).status_code == 200
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "picloud_invocations_total" in r.text and "picloud_queue_depth" in r.text


async def test_replay_many_failed(client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/flaky", content="let x = 0;\n10 / x")
    failed = [(await client.get("/fn/flaky")).headers["x-picloud-invocation"] for _ in range(3)]
    await client.put("/api/scripts/flaky", content="let x = 5;\n10 / x")

    async def projected() -> bool:
        r = await client.get("/api/invocations", params={"script": "flaky", "status": "failed"})
        return len(r.json()["items"]) == 3
    await wait_until(projected)
    r = await client.post("/api/replays", json={"script": "flaky", "status": "failed",
                                                "since": "1h"})
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert sorted(i["replay_of"] for i in items) == sorted(failed)

    async def all_done() -> bool:
        async with node.pool.connection() as conn:
            for i in items:
                events = await store.read_stream(conn, f"invocation-{i['invocation_id']}")
                if len(events) < 2:
                    return False
        return True
    await wait_until(all_done)
    async with node.pool.connection() as conn:
        for i in items:
            events = await store.read_stream(conn, f"invocation-{i['invocation_id']}")
            assert events[1].type == "invocation.succeeded"
    r = await client.get("/api/audit", params={"actor": "admin"})
    types = {e["type"] for e in r.json()["items"]}
    assert "replay.requested" in types and "invocation.requested" not in types


async def test_timeout_is_504_and_still_recorded(client: httpx.AsyncClient, node: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import msgspec

    monkeypatch.setenv("PICLOUD_SCRIPT_FUEL", str(20_000_000_000))
    monkeypatch.setenv("PICLOUD_SCRIPT_TIMEOUT_S", "30")
    original = node.services.settings
    node.services.settings = msgspec.structs.replace(original, invoke_timeout_s=0.2)
    try:
        await client.put("/api/scripts/sloth",
                         content="let s = 0; for i in 0..8000000 { s += i; } s")
        r = await client.get("/fn/sloth")
    finally:
        node.services.settings = original
    assert r.status_code == 504, r.text
    inv_id = r.json()["invocation_id"]
    assert r.headers["x-picloud-invocation"] == inv_id

    async def recorded() -> bool:
        async with node.pool.connection() as conn:
            return len(await store.read_stream(conn, f"invocation-{inv_id}")) == 2
    await wait_until(recorded, timeout=30)


async def test_versions_rollback_delete(client: httpx.AsyncClient) -> None:
    assert (await client.put("/api/scripts/ver", content='"one"')).json()["version"] == 1
    assert (await client.put("/api/scripts/ver", json={"source": '"two"'})).json()["version"] == 2
    assert (await client.get("/fn/ver")).text == "two"
    r = await client.get("/api/scripts/ver/versions")
    assert [v["version"] for v in r.json()["items"]] == [1, 2]
    r = await client.post("/api/scripts/ver/rollback", json={"version": 1})
    assert r.status_code == 200, r.text
    assert (await client.get("/fn/ver")).text == "one"
    assert (await client.get("/api/scripts/ver")).json()["current_version"] == 1
    r = await client.post("/api/scripts/ver/rollback", json={"version": 9})
    assert r.status_code == 404
    r = await client.delete("/api/scripts/ver")
    assert r.status_code == 204
    assert (await client.get("/fn/ver")).status_code == 404
    assert (await client.delete("/api/scripts/ver")).status_code == 404
    r = await client.get("/api/audit", params={"target": "script-ver"})
    assert [e["type"] for e in r.json()["items"]] == [
        "script.version_uploaded", "script.version_uploaded", "script.rolled_back",
        "script.deleted"]
