# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""``audit verify`` and ``projections rebuild`` through the API, and the CLI commands on them,
against a node serving HTTP on a real port (the CLI runs as a subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
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


class ProjectionChain:
    """Every commit to the read model, in commit order, with what each one folded.

    The projector and ``rebuild`` announce each commit's checkpoint on ``picloud_projected``
    (delivered in commit order); a spy on ``project_batch`` records the checkpoint each
    committed batch started from. Each event is folded exactly once into the model that a
    rebuild starts iff every batch starts where the commit before it ended."""

    def __init__(self, node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from picloud.projections import runner

        self.url = node.url
        self.commits: list[int] = []  # checkpoint positions, in commit order
        self.batches: list[tuple[int, int]] = []  # committed batches' (start, end), in order
        real = runner.project_batch

        async def spy(conn: Any, checkpoint: Any = None, *, limit: int = 500) -> Any:
            n, done, held = await real(conn, checkpoint, limit=limit)
            if n:
                self.batches.append((checkpoint[1], done[1]))
            return n, done, held

        monkeypatch.setattr(runner, "project_batch", spy)

    async def __aenter__(self) -> ProjectionChain:
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self.conn.execute("LISTEN picloud_projected")
        self.task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        async for note in self.conn.notifies():
            self.commits.append(int(note.payload.partition(":")[2]))

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # the last notifications
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.conn.close()

    def check(self, start: int, rebuilt: set[int]) -> int:
        """From the checkpoint ``start``: every batch chains on; returns how many rebuilds."""
        previous, rebuilds, batch = start, 0, 0
        for position in self.commits:
            if batch < len(self.batches) and self.batches[batch] == (previous, position):
                batch += 1
            else:
                assert position in rebuilt, (previous, position, self.commits, self.batches)
                rebuilds += 1
            previous = position
        assert batch == len(self.batches), (self.commits, self.batches)
        return rebuilds


async def test_invocations_during_rebuilds_are_projected_exactly_once(
        client: httpx.AsyncClient, node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await client.put("/api/scripts/busy", content='print("x"); 7')).status_code == 201
    await settled(node.pool)
    start = await count(node.pool, "SELECT position FROM projection_checkpoints")
    chain = ProjectionChain(node, monkeypatch)
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

    async with chain:
        results = await asyncio.gather(
            *[invoke(i) for i in range(n)],
            rebuild(0.02), rebuild(0.05), rebuild(0.15), rebuild(0.15))
        ids = results[:n]
        rebuilds = results[n:]
        assert all(r["events"] > 0 for r in rebuilds)
        done = "SELECT count(*) FROM events WHERE type = 'invocation.succeeded' " \
               "AND data->>'script' = 'busy'"
        await wait_until(lambda: _equals(count(node.pool, done), n), timeout=30)
        await settled(node.pool)
    assert chain.check(start, {r["position"] for r in rebuilds}) == 4
    assert len(chain.batches) >= 2
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


# -- following: picloud logs NAME -f, picloud events tail -----------------------------------
class CountingProxy:
    """A TCP proxy in front of the server counting connections: the CLI opens one per request."""

    def __init__(self, target: str) -> None:
        self.port = int(target.rsplit(":", 1)[1])
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> CountingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)


async def start(url: str, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({"PYTHONPATH": str(ROOT), "PICLOUD_URL": url, "PICLOUD_TOKEN": ADMIN_TOKEN,
                "PICLOUD_HOME": str(ROOT / ".no-such-home")})
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "picloud", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def line_of(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().rstrip("\n")


async def interrupt(proc: asyncio.subprocess.Process) -> str:
    """Ctrl-C: the command ends with 130 and no traceback; returns its stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err, err
    return err.decode()


async def test_logs_follow_prints_each_invocation_as_it_ends(
        client: httpx.AsyncClient, served: str) -> None:
    source = 'let n = request.query.n; print(`line ${n}`); print(`end ${n}`); n'
    assert (await client.put("/api/scripts/chatty", content=source)).status_code == 201
    assert (await client.get("/fn/chatty", params={"n": "0"})).status_code == 200
    async with CountingProxy(served) as proxy:
        proc = await start(proxy.url, "logs", "chatty", "-f")
        try:
            assert (await line_of(proc)).endswith(" line 0")  # the history first
            assert (await line_of(proc)).endswith(" end 0")
            await asyncio.sleep(0.5)
            idle_from = proxy.connections
            await asyncio.sleep(2.5)
            idle = proxy.connections - idle_from  # a long poll: at most one request
            ids, lags = [], []
            for n in range(1, 6):
                r = await client.get("/fn/chatty", params={"n": str(n)})
                assert r.status_code == 200, r.text
                answered = asyncio.get_running_loop().time()
                lines = [await line_of(proc), await line_of(proc)]
                lags.append(asyncio.get_running_loop().time() - answered)
                ids.append(r.headers["x-picloud-invocation"][:8])
                assert lines == [f"{ids[-1]} line {n}", f"{ids[-1]} end {n}"]
        finally:
            await interrupt(proc)
    print(f"logs -f: {idle} request(s) in 2.5 s idle; answer -> lines printed: "
          f"max {max(lags) * 1000:.0f} ms")
    assert idle <= 1, f"{idle} requests in 2.5 s while idle"
    assert max(lags) < 1.0, lags  # pushed by the long poll, not found by a later poll


async def test_events_tail_follows_the_log_in_order(
        client: httpx.AsyncClient, node: Any, served: str) -> None:
    assert (await client.put("/api/scripts/tailed", content="1")).status_code == 201
    await settled(node.pool)
    async with CountingProxy(served) as proxy:
        proc = await start(proxy.url, "events", "tail", "--last", "1", "--json")
        try:
            first = msgspec.json.decode(await line_of(proc))
            assert (first["type"], first["stream"]) == ("script.version_uploaded",
                                                        "script-tailed")
            await asyncio.sleep(0.5)
            idle_from = proxy.connections
            await asyncio.sleep(2.5)
            idle = proxy.connections - idle_from
            ids = []
            for _ in range(3):
                r = await client.post("/fn/tailed", content=b"{}")
                assert r.status_code == 200, r.text
                ids.append(r.headers["x-picloud-invocation"])
            seen = [msgspec.json.decode(await line_of(proc)) for _ in range(6)]
        finally:
            err = await interrupt(proc)
    assert idle <= 1, f"{idle} requests in 2.5 s while idle"
    assert [(e["stream"], e["type"]) for e in seen] == [
        (f"invocation-{i}", t) for i in ids
        for t in ("invocation.requested", "invocation.succeeded")], err


async def test_follow_never_skips_a_late_commit_and_checks_its_input(
        client: httpx.AsyncClient, node: Any) -> None:
    from picloud.events import Metadata, append
    from picloud.events.types import TokenRevoked

    meta = Metadata(actor="test")
    r = await client.get("/api/events/follow", params={"wait": "0"})
    assert r.status_code == 200 and r.json()["items"] == []
    cursor = r.json()["next_cursor"]
    async with node.pool.connection() as a, node.pool.connection() as b:
        async with a.transaction():
            [early] = await append(a, "late-a", [TokenRevoked(token_id="a")],
                                   expected_version=0, metadata=meta)
            [later] = await append(b, "late-b", [TokenRevoked(token_id="b")],
                                   expected_version=0, metadata=meta)
            assert early.position < later.position
            # `later` is committed, `early` not yet: following from the cursor shows neither
            r = await client.get("/api/events/follow", params={"after": cursor, "wait": "0.3"})
            assert r.json() == {"items": [], "next_cursor": cursor}
        r = await client.get("/api/events/follow",
                             params={"after": cursor, "wait": "5", "type": "token.*"})
    assert [e["stream"] for e in r.json()["items"]] == ["late-a", "late-b"]
    assert r.json()["next_cursor"] == str(later.position)

    for bad in ({"wait": "11"}, {"wait": "x"}, {"wait": "nan"}, {"last": "-1"},
                {"after": "abc"}, {"after": str(later.position + 10**6)}, {"limit": "0"}):
        r = await client.get("/api/events/follow", params=bad)
        assert r.status_code == 400 and r.json()["error"], bad
    async with httpx.AsyncClient(transport=client._transport, base_url="http://picloud") as anon:
        assert (await anon.get("/api/events/follow")).status_code == 401


async def test_a_stopping_node_ends_the_follow_requests_at_once(
        client: httpx.AsyncClient, node: Any) -> None:
    """A stopping server waits for the requests in flight: it must not wait out long polls."""
    from picloud.ingress import app

    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(client.get("/api/events/follow", params={"wait": "10"}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    try:
        app.end_follows(node.listener)
        r = await asyncio.wait_for(waiting, 2)
        assert r.status_code == 200 and r.json()["items"] == []
        assert loop.time() - started < 2
        r = await client.get("/api/events/follow", params={"wait": "10"})  # and from now on
        assert r.status_code == 200 and loop.time() - started < 3
    finally:
        app._ENDED.discard(node.listener)
