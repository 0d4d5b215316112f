# ruff: noqa: F811  (pytest fixtures imported from tests.runtime_fixtures)
"""Forwarding headers reach scripts only from trusted proxies; settings fail clearly."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest

from picloud.config import SettingsError, load_settings, parse_networks
from tests.runtime_fixtures import client, engine_ready, node  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")

SPOOF = {"x-forwarded-for": "203.0.113.7", "forwarded": "for=203.0.113.7", "x-real-ip": "1.2.3.4"}


async def _seen_by_script(node: Any, peer: str) -> tuple[dict[str, Any], str]:
    transport = httpx.ASGITransport(app=node.app(), client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://picloud") as c:
        r = await c.get("/fn/headers", headers=SPOOF)
    assert r.status_code == 200, r.text
    return dict(r.json()), r.headers["x-picloud-invocation"]


async def test_forwarding_headers_only_from_trusted_proxies(client: httpx.AsyncClient,
                                                            node: Any) -> None:
    r = await client.put("/api/scripts/headers", content="request.headers")
    assert r.status_code in (200, 201)
    from_loopback, _ = await _seen_by_script(node, "127.0.0.1")  # trusted by default
    assert {k: from_loopback.get(k) for k in SPOOF} == SPOOF
    from_outside, inv = await _seen_by_script(node, "198.51.100.9")
    assert not set(SPOOF) & set(from_outside)
    assert from_outside["host"] == "picloud"  # other headers pass
    # stored as the script saw them
    stored = (await client.get(f"/api/invocations/{inv}")).json()["request"]["headers"]
    assert "x-forwarded-for" not in stored


def test_trusted_proxies_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [str(n) for n in parse_networks(" 10.0.0.5, 10.1.0.0/16 ,::1")] == [
        "10.0.0.5/32", "10.1.0.0/16", "::1/128"]
    monkeypatch.setenv("PICLOUD_TRUSTED_PROXIES", "")
    assert load_settings().trusted_networks() == ()
    monkeypatch.setenv("PICLOUD_TRUSTED_PROXIES", "10.0.0.1,nope")
    with pytest.raises(SettingsError, match="PICLOUD_TRUSTED_PROXIES: 'nope'"):
        load_settings()


def test_bad_settings_are_named_not_a_traceback(tmp_path: Any) -> None:
    env = {"PATH": "/usr/bin:/bin", "PICLOUD_HOME": str(tmp_path), "PICLOUD_PORT": "eighty"}
    r = subprocess.run([sys.executable, "-m", "picloud", "up"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "PICLOUD_PORT='eighty'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pgdata").exists()  # nothing started
