# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""``audit verify`` and ``projections rebuild`` through the API, and the CLI commands on them,
against a node serving HTTP on a real port (the CLI runs as a subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from picloud.projections import lag
from tests.runtime_fixtures import (  # noqa: F401 (fixtures)
    ADMIN_TOKEN,
    client,
    count,
    engine_ready,
    node,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("engine_ready")

ROOT = Path(__file__).resolve().parent.parent
READ_MODEL = {"scripts": "name", "script_versions": "name, version", "invocations": "id",
              "schedules": "name", "script_stats": "script",
              "projection_checkpoints": "name"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def served(node: Any) -> AsyncIterator[str]:
    """The node's HTTP server on a free port (in this event loop); yields its URL."""
    port = _free_port()
    task = asyncio.create_task(node.serve("127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"{url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(healthy, timeout=20, interval=0.05)
    yield url
    await node.stop_http()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 15)


async def cli(url: str, *args: str, token: str | None = ADMIN_TOKEN,
              home: Path | None = None) -> tuple[int, str, str]:
    """``picloud ARGS`` as a user runs it: (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({"PYTHONPATH": str(ROOT), "PICLOUD_URL": url,
                "PICLOUD_HOME": str(home or ROOT / ".no-such-home")})
    if token is not None:
        env["PICLOUD_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "picloud", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def dump(pool: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with pool.connection() as conn:
        for table, key in READ_MODEL.items():
            cur = await conn.execute(f"SELECT * FROM {table} ORDER BY {key}")  # type: ignore[arg-type]
            out[table] = await cur.fetchall()
    return out


async def settled(pool: Any) -> None:
    """Until the read model holds every committed event."""
    async def caught_up() -> bool:
        async with pool.connection() as conn:
            return await lag(conn) == 0
    await wait_until(caught_up, timeout=15)


async def _some_history(client: httpx.AsyncClient, name: str) -> None:
    assert (await client.put(f"/api/scripts/{name}", content='print("one"); 1')).status_code == 201
    assert (await client.put(f"/api/scripts/{name}", content='print("two"); 2')).status_code == 201
    r = await client.post(f"/api/scripts/{name}/rollback", json={"version": 1})
    assert r.status_code == 200, r.text
    for _ in range(3):
        assert (await client.get(f"/fn/{name}")).status_code == 200
    r = await client.put("/api/schedules/nightly", json={"script": name, "cron": "0 3 * * *"})
    assert r.status_code == 200, r.text


async def test_verify_a_clean_log(client: httpx.AsyncClient, served: str) -> None:
    await _some_history(client, "clean")
    r = await client.post("/api/audit/verify")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ok"] is True and report["problems"] == []
    assert (report["events"], report["streams"]) == (10, 5)  # 3 + 2 * 3 + 1 in 1 + 3 + 1

    rc, out, err = await cli(served, "audit", "verify")
    assert rc == 0, err
    assert out.startswith("OK: ") and "streams checked" in out
    rc, out, err = await cli(served, "audit", "verify", "--json")
    assert rc == 0, err
    assert msgspec.json.decode(out)["ok"] is True


async def test_rebuild_through_the_api_reproduces_the_read_model(
        client: httpx.AsyncClient, node: Any, served: str) -> None:
    await _some_history(client, "rebuilt")
    await settled(node.pool)
    live = await dump(node.pool)
    events = await count(node.pool, "SELECT count(*) FROM events")
    async with node.pool.connection() as conn:  # damage the read model
        await conn.execute("DELETE FROM invocations WHERE script = 'rebuilt'")
        await conn.execute("UPDATE scripts SET current_version = 99")
        await conn.execute("DELETE FROM script_stats")
    assert await dump(node.pool) != live

    r = await client.post("/api/projections/rebuild")
    assert r.status_code == 200, r.text
    [(checkpoint,)] = [row[1:2] for row in live["projection_checkpoints"]]
    assert r.json() == {"events": events, "position": checkpoint}
    await settled(node.pool)
    after = await dump(node.pool)
    for table in READ_MODEL:
        if table != "projection_checkpoints":
            assert after[table] == live[table], table
    # The checkpoint moved on only by the projections.rebuilt event appended after the rebuild.
    async with node.pool.connection() as conn:
        cur = await conn.execute("SELECT max(position) FROM events "
                                 "WHERE type = 'projections.rebuilt'")
        row = await cur.fetchone()
    assert row is not None and after["projection_checkpoints"][0][1] == row[0]

    rc, out, err = await cli(served, "projections", "rebuild")
    assert rc == 0, err
    assert out.startswith(f"read model rebuilt from {events + 1} events"), out
    rc, out, err = await cli(served, "projections", "rebuild", "--json")
    assert rc == 0, err
    assert msgspec.json.decode(out)["events"] == events + 2


async def test_invocations_during_rebuilds_are_projected_exactly_once(
        client: httpx.AsyncClient, node: Any) -> None:
    assert (await client.put("/api/scripts/busy", content='print("x"); 7')).status_code == 201
    n = 60

    async def invoke(i: int) -> str:
        await asyncio.sleep(i * 0.005)
        headers = {"prefer": "respond-async"} if i % 2 else {}
        r = await client.post("/fn/busy", content=b"{}", headers=headers)
        assert r.status_code in (200, 202), r.text
        return r.headers["x-picloud-invocation"]

    async def rebuild(delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        r = await client.post("/api/projections/rebuild")
        assert r.status_code == 200, r.text
        return dict(r.json())

    results = await asyncio.gather(*[invoke(i) for i in range(n)],
                                   rebuild(0.02), rebuild(0.05), rebuild(0.15), rebuild(0.15))
    ids = results[:n]
    rebuilds = results[n:]
    assert all(r["events"] > 0 for r in rebuilds)
    done = "SELECT count(*) FROM events WHERE type = 'invocation.succeeded' " \
           "AND data->>'script' = 'busy'"
    await wait_until(lambda: _equals(count(node.pool, done), n), timeout=30)
    await settled(node.pool)
    live = await dump(node.pool)
    last = await count(node.pool, "SELECT max(position) FROM events "
                                  "WHERE data->>'script' = 'busy'")
    assert min(r["position"] for r in rebuilds) < last  # invocations went on after a rebuild
    mine = [row for row in live["invocations"] if row[0] in ids]
    assert len(mine) == n
    async with node.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM invocations "
                                 "WHERE script = 'busy' AND status = 'succeeded'")
        assert (await cur.fetchone()) == (n,)
        cur = await conn.execute("SELECT invocations, succeeded, failed FROM script_stats "
                                 "WHERE script = 'busy'")
        assert (await cur.fetchone()) == (n, n, 0)  # each invocation counted once
    # A fresh fold of the whole log gives the same model, checkpoint included.
    from picloud.projections.runner import rebuild as fold

    async with node.pool.connection() as conn:
        await fold(conn)
    assert await dump(node.pool) == live


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_changed_row_is_detected_through_the_api_and_the_cli(
        client: httpx.AsyncClient, node: Any, served: str) -> None:
    await _some_history(client, "tampered")
    async with node.pool.connection() as conn:
        cur = await conn.execute("SELECT position, data FROM events "
                                 "WHERE stream = 'script-tampered' AND version = 2")
        row = await cur.fetchone()
        assert row is not None
        position, data = row
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
        try:
            await conn.execute("UPDATE events SET data = data || '{\"source\": \"666\"}' "
                               "WHERE position = %s", (position,))
            r = await client.post("/api/audit/verify")
            assert r.status_code == 200, r.text
            report = r.json()
            assert report["ok"] is False
            assert [(p["stream"], p["version"], p["position"]) for p in report["problems"]] \
                == [("script-tampered", 2, position)]
            assert "changed" in report["problems"][0]["problem"]

            rc, out, err = await cli(served, "audit", "verify")
            assert rc == 1, out + err
            assert "FAILED: 1 problem(s)" in out and "script-tampered" in out
            assert "Traceback" not in err
            rc, out, _ = await cli(served, "audit", "verify", "--json")
            assert rc == 1 and msgspec.json.decode(out)["ok"] is False
        finally:
            await conn.execute("UPDATE events SET data = %s WHERE position = %s",
                               (msgspec.json.encode(data).decode(), position))
            await conn.execute("ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete")
    assert (await client.post("/api/audit/verify")).json()["ok"] is True


@pytest.mark.parametrize("path", ["/api/audit/verify", "/api/projections/rebuild"])
async def test_missing_or_weak_tokens_are_refused_and_change_nothing(
        client: httpx.AsyncClient, node: Any, path: str) -> None:
    before = await count(node.pool, "SELECT count(*) FROM events")
    async with httpx.AsyncClient(transport=client._transport, base_url="http://picloud") as anon:
        r = await anon.post(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await anon.post(path, headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
        for scope in ("read", "write"):
            made = await client.post("/api/tokens", json={"name": f"weak-{scope}",
                                                          "scopes": [scope]})
            token = made.json()["token"]
            r = await anon.post(path, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 403 and "admin" in r.json()["error"], r.text
    after = await count(node.pool, "SELECT count(*) FROM events")
    assert after == before + 2  # the two token.created events, nothing else


async def test_the_cli_says_why_a_token_is_refused(
        client: httpx.AsyncClient, served: str, tmp_path: Path) -> None:
    rc, _, err = await cli(served, "audit", "verify", token="wrong")
    assert rc == 2 and "401" in err and "PICLOUD_TOKEN" in err and "Traceback" not in err
    rc, _, err = await cli(served, "projections", "rebuild", token=None, home=tmp_path)
    assert rc == 1 and "401" in err and "none is set" in err, err
    token = (await client.post("/api/tokens", json={"name": "reader",
                                                    "scopes": ["read"]})).json()["token"]
    rc, _, err = await cli(served, "projections", "rebuild", token=token)
    assert rc == 1 and "403" in err and "admin" in err, err


async def test_both_actions_are_in_the_audit_log_with_their_actor(
        client: httpx.AsyncClient, served: str) -> None:
    made = await client.post("/api/tokens", json={"name": "ops", "scopes": ["admin"]})
    ops = made.json()["token"]
    rc, _, err = await cli(served, "audit", "verify", token=ops)
    assert rc == 0, err
    rc, _, err = await cli(served, "projections", "rebuild", token=ops)
    assert rc == 0, err
    rc, out, err = await cli(served, "audit", "--json", "--actor", "token:ops")
    assert rc == 0, err
    items = msgspec.json.decode(out)["items"]
    assert [i["type"] for i in items] == ["audit.verified", "projections.rebuilt"]
    assert items[0]["data"]["ok"] is True and items[0]["data"]["problems"] == 0
    assert items[1]["data"]["events"] > 0
    rc, out, err = await cli(served, "audit", "--actor", "token:ops")
    assert rc == 0, err
    assert "audit.verified" in out and "projections.rebuilt" in out and "token:ops" in out


async def test_without_a_server_the_cli_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    rc, out, err = await cli(url, "audit", "verify")
    assert rc == 2 and out == ""
    assert "cannot reach the PiCloud API at " + url in err and "picloud up" in err
    assert "Traceback" not in err
    rc, _, err = await cli(url, "projections", "rebuild", "--json", home=tmp_path)
    assert rc == 1 and "cannot reach" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing created
