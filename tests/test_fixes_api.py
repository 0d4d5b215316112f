# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""Regression tests for the QA defects in the ingress and the control-plane API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from picloud.events import store
from tests.runtime_fixtures import (  # noqa: F401 (fixtures)
    ADMIN_TOKEN,
    client,
    engine_ready,
    node,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("engine_ready")

CREDENTIALS = {"cookie": "session=s3cret", "proxy-authorization": "Basic cHJveHk6cHc="}


async def test_credential_headers_are_not_stored_shown_or_given_to_scripts(
        client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/echo-headers", content="request.headers")
    r = await client.get("/fn/echo-headers", headers={**CREDENTIALS, "x-keep": "yes"})
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["x-keep"] == "yes"
    for name in ("authorization", "cookie", "proxy-authorization"):
        assert name not in seen
    inv_id = r.headers["x-picloud-invocation"]
    async with node.pool.connection() as conn:
        events = await store.read_stream(conn, f"invocation-{inv_id}")
    stored = str(events[0].data)
    assert ADMIN_TOKEN not in stored and "s3cret" not in stored and "cHJveHk" not in stored
    for path in (f"/api/invocations/{inv_id}", "/api/invocations?script=echo-headers",
                 "/api/events?type=invocation.requested"):
        text = (await client.get(path)).text
        assert ADMIN_TOKEN not in text and "s3cret" not in text, path


@pytest.mark.parametrize(("name", "source", "fragment"), [
    ("bad-status", '#{status: 1000, body: "x"}', "status"),
    ("bad-status-low", '#{status: 42, body: "x"}', "status"),
    ("bad-header-crlf", '#{headers: #{"x-a": "v\\r\\nset-cookie: evil=1"}, body: "x"}', "x-a"),
    ("bad-header-name", '#{headers: #{"bad name": "v"}, body: "x"}', "bad name"),
])
async def test_unsendable_response_is_a_recorded_failure(
        client: httpx.AsyncClient, name: str, source: str, fragment: str) -> None:
    r = await client.put(f"/api/scripts/{name}", content=source)
    assert r.status_code == 201, r.text
    r = await client.get(f"/fn/{name}")
    assert r.status_code == 500, r.text
    inv_id = r.headers["x-picloud-invocation"]
    body = r.json()
    assert body["invocation_id"] == inv_id
    assert set(body["error"]) >= {"type", "message", "line", "column"}
    assert body["error"]["type"] == "ResponseError" and fragment in body["error"]["message"]
    assert "set-cookie" not in r.headers

    async def failed() -> bool:
        got = (await client.get(f"/api/invocations/{inv_id}")).json()
        assert got["status"] in ("pending", "failed")
        return bool(got["status"] == "failed")

    await wait_until(failed)


async def test_framing_headers_from_a_script_are_dropped(client: httpx.AsyncClient) -> None:
    await client.put("/api/scripts/framing", content=(
        '#{headers: #{"content-length": "999", "transfer-encoding": "chunked", '
        '"connection": "close", "x-picloud-invocation": "forged", "x-ok": "1"}, body: "hello"}'))
    r = await client.get("/fn/framing")
    assert r.status_code == 200 and r.text == "hello"
    assert r.headers["content-length"] == "5" and "transfer-encoding" not in r.headers
    assert r.headers["x-ok"] == "1" and r.headers["x-picloud-invocation"] != "forged"


@pytest.mark.parametrize("query", [
    "cursor=garbage", f"cursor={10**30}", "cursor=-1", "status=weird"])
async def test_bad_invocation_list_parameters_are_400(
        client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/api/invocations?{query}")
    assert r.status_code == 400, r.text
    if query.startswith("status"):
        assert all(s in r.json()["error"] for s in ("pending", "succeeded", "failed"))


async def test_huge_event_position_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/api/events?after={10**30}")
    assert r.status_code == 400, r.text
    r = await client.get("/api/invocations?status=failed&cursor=5")
    assert r.status_code == 200, r.text


async def test_schedule_for_a_missing_script_is_404_and_stores_nothing(
        client: httpx.AsyncClient, node: Any) -> None:
    async with node.pool.connection() as conn:
        before = await store.read_stream(conn, "schedule-orphan")
    r = await client.put("/api/schedules/orphan",
                         json={"script": "does-not-exist", "cron": "* * * * *"})
    assert r.status_code == 404, r.text
    assert "does-not-exist" in r.json()["error"]
    async with node.pool.connection() as conn:
        assert await store.read_stream(conn, "schedule-orphan") == before == []
    assert (await client.get("/api/schedules/orphan")).status_code == 404
    await client.put("/api/scripts/gone", content="1")
    await client.delete("/api/scripts/gone")
    r = await client.put("/api/schedules/orphan", json={"script": "gone", "cron": "* * * * *"})
    assert r.status_code == 404, r.text


async def test_schedule_put_and_get_answer_the_same_shape(client: httpx.AsyncClient) -> None:
    await client.put("/api/scripts/ticked", content="1")
    put = await client.put("/api/schedules/same-shape",
                           json={"script": "ticked", "cron": "0 3 * * *"})
    assert put.status_code == 200, put.text
    got = await client.get("/api/schedules/same-shape")
    assert put.json()["next_fire_time"] and put.json() == got.json()
    listed = (await client.get("/api/schedules")).json()["items"]
    assert [i["next_fire_time"] for i in listed if i["name"] == "same-shape"] == [
        put.json()["next_fire_time"]]


async def test_every_method_reaches_the_script(client: httpx.AsyncClient, node: Any) -> None:
    await client.put("/api/scripts/methods", content=(
        '#{status: 200, headers: #{"x-method": request.method}, body: `ran ${request.method}`}'))
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        r = await client.request(method, "/fn/methods/sub")
        assert r.status_code == 200, (method, r.text)
        assert r.headers["x-method"] == method
        assert r.content == (b"" if method == "HEAD" else f"ran {method}".encode())
        async with node.pool.connection() as conn:
            events = await store.read_stream(
                conn, f"invocation-{r.headers['x-picloud-invocation']}")
        assert events[0].data["request"]["method"] == method
        assert events[-1].type == "invocation.succeeded"


async def test_unknown_error_positions_are_null(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PICLOUD_SCRIPT_FUEL", "1000000")
    await client.put("/api/scripts/spin", content="loop { }")
    r = await client.get("/fn/spin")
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert error["kind"] == "limit" and error["type"] == "ErrorTooManyOperations"
    assert error["line"] is None and error["column"] is None
    inv_id = r.headers["x-picloud-invocation"]

    async def recorded() -> bool:
        got = (await client.get(f"/api/invocations/{inv_id}")).json()
        return bool(got["status"] == "failed")

    await wait_until(recorded)
    got = (await client.get(f"/api/invocations/{inv_id}")).json()["error"]
    assert got["line"] is None and got["column"] is None
    # a runtime error keeps its (integer) position
    await client.put("/api/scripts/divide", content="let x = 1;\nx / 0")
    error = (await client.get("/fn/divide")).json()["error"]
    assert error["line"] == 2 and isinstance(error["column"], int)
