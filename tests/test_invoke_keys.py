# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""A script can require a key: only bearer tokens that may invoke it get through, refused
calls append nothing, and the change of access is audited."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.runtime_fixtures import client, count, engine_ready, node  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")


async def _token(client: httpx.AsyncClient, name: str, scopes: list[str]) -> str:
    r = await client.post("/api/tokens", json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _bearer(token: str | None) -> dict[str, str]:
    # The fixture's client carries the admin token: each call here says what it sends.
    return {"authorization": f"Bearer {token}" if token else ""}


async def test_a_script_that_requires_a_key(client: httpx.AsyncClient, node: Any) -> None:
    assert (await client.put("/api/scripts/keyed", content='"secret"')).status_code == 201
    assert (await client.get("/fn/keyed", headers=_bearer(None))).text == "secret"  # public

    r = await client.put("/api/scripts/keyed/access", json={"require_key": True})
    assert r.status_code == 200 and r.json() == {"name": "keyed", "require_key": True}
    assert (await client.get("/api/scripts/keyed")).json()["require_key"] is True

    mine = await _token(client, "caller", ["invoke:keyed"])
    other = await _token(client, "other", ["invoke:elsewhere"])
    reader = await _token(client, "reader", ["read"])
    anyone = await _token(client, "any", ["invoke"])
    events = "SELECT count(*) FROM events"
    before = await count(node.pool, events)
    for headers, status in ((_bearer(None), 401), (_bearer("pc_wrong"), 401),
                            (_bearer(other), 403), (_bearer(reader), 403)):
        r = await client.post("/fn/keyed/x", content="hi", headers=headers)
        assert r.status_code == status, r.text
        assert "x-picloud-invocation" not in r.headers and r.json()["error"]
    assert await count(node.pool, events) == before  # refused calls leave no trace

    for token in (mine, anyone):
        r = await client.get("/fn/keyed", headers=_bearer(token))
        assert r.status_code == 200 and r.text == "secret"
        stored = (await client.get(f"/api/invocations/{r.headers['x-picloud-invocation']}"))
        assert "authorization" not in stored.json()["request"]["headers"]  # never stored

    r = await client.put("/api/scripts/keyed/access", json={"require_key": False})
    assert r.status_code == 200
    assert (await client.get("/fn/keyed", headers=_bearer(None))).status_code == 200
    audit = (await client.get("/api/audit", params={"type": "script.access_changed"})).json()
    changes = [e for e in audit["items"] if e["stream"] == "script-keyed"]
    assert [e["data"]["require_key"] for e in changes] == [True, False]
    assert all(e["metadata"]["actor"] == "admin" for e in changes)


async def test_access_bad_input(client: httpx.AsyncClient) -> None:
    assert (await client.put("/api/scripts/open", content='"o"')).status_code == 201
    r = await client.put("/api/scripts/open/access", json={"require_key": "yes"})
    assert r.status_code == 400
    r = await client.put("/api/scripts/nothere/access", json={"require_key": True})
    assert r.status_code == 404
    r = await client.put("/api/scripts/open/access", json={"require_key": True},
                         headers=_bearer(None))
    assert r.status_code == 401
    reader = await _token(client, "ro", ["read"])
    r = await client.put("/api/scripts/open/access", json={"require_key": True},
                         headers=_bearer(reader))
    assert r.status_code == 403
    assert (await client.get("/fn/open", headers=_bearer(None))).status_code == 200
    r = await client.post("/api/tokens", json={"name": "bad", "scopes": ["invoke:Bad Name"]})
    assert r.status_code == 400
