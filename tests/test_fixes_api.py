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
