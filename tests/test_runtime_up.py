"""``picloud up`` as a user runs it, and the CLI against it."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.runtime_fixtures import engine_ready, wait_healthy  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_up_cli_and_clean_shutdown(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({"PICLOUD_HOME": str(home), "PICLOUD_DATABASE_URL": database_url,
                "PYTHONPATH": str(ROOT), "PICLOUD_URL": f"http://127.0.0.1:{port}",
                "PICLOUD_SCRIPT_FUEL": str(20_000_000_000), "PICLOUD_SCRIPT_TIMEOUT_S": "30"})
    out = (tmp_path / "out.txt").open("w+")
    err = (tmp_path / "err.txt").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "picloud", "up", "--port", str(port)],
                            env=env, cwd=tmp_path, stdout=out, stderr=err)

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "picloud", *args], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        if ok:
            assert r.returncode == 0, r.stderr + r.stdout
        return r

    try:
        wait_healthy(port)
        token_file = home / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        out.seek(0)
        assert token in out.read()  # printed once, with where it is stored
        err.seek(0)
        progress = err.read()
        assert str(token_file) in progress and f"http://127.0.0.1:{port}" in progress

        script = tmp_path / "greet.rhai"
        script.write_text('print("called"); let who = request.json?.who ?? "you"; `hi ${who}`')
        assert "version 1" in cli("deploy", str(script)).stdout
        r = cli("invoke", "greet", "--data", '{"who": "cli"}')
        assert r.stdout.strip() == "hi cli"
        bad = tmp_path / "bad.rhai"
        bad.write_text("let = 1;")
        r = cli("deploy", str(bad), ok=False)
        assert r.returncode == 1 and "line 1" in r.stderr
        listed = json.loads(cli("invocations", "--json").stdout)
        assert listed["items"] and listed["items"][0]["script"] == "greet"
        assert "called" in cli("logs", "greet").stdout
        r = cli("schedules", "set", "nightly", "--script", "greet", "--cron", "0 3 * * *")
        assert "next" in r.stdout
        assert "nightly" in cli("schedules").stdout
        audit = cli("audit", "--json").stdout
        assert "script.version_uploaded" in audit and "schedule.set" in audit
        inv = listed["items"][0]["id"]
        assert "replayed" in cli("replay", inv).stdout
        assert "invocation.requested" in cli("events").stdout
        assert cli("audit", "verify").returncode == 0

        # SIGTERM with an invocation in flight: it finishes and is recorded.
        slow = tmp_path / "slow.rhai"
        slow.write_text("let s = 0; for i in 0..20000000 { s += i; } s")
        cli("deploy", str(slow))
        r = httpx.get(f"http://127.0.0.1:{port}/fn/slow",
                      headers={"prefer": "respond-async"})
        slow_id = r.json()["invocation_id"]
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # Back up: the slow invocation has its result.
    proc = subprocess.Popen([sys.executable, "-m", "picloud", "up", "--port", str(port)],
                            env=env, cwd=tmp_path, stdout=out, stderr=err)
    try:
        wait_healthy(port)
        r = httpx.get(f"http://127.0.0.1:{port}/api/invocations/{slow_id}",
                      headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
