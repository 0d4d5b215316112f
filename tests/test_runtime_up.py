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
from typing import Any

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


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _counted(base: str, n: int) -> bool:
    """/metrics shows ``n`` invocations of the script ``kid`` (counted by the worker right
    after its result commits: the answer may come first)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return all(f"{metric} {n}.0" in text for metric in (
        'picloud_invocations_total{outcome="succeeded",script="kid"}',
        'picloud_sandbox_seconds_count{script="kid"}'))


def _wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_worker_process_is_restarted_and_dies_with_its_parent(database_url: str,
                                                              tmp_path: Path) -> None:
    """``picloud up`` runs the worker role in a child process (two cores or more): a child
    killed is replaced and invocations go on; a parent killed takes its child with it."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the worker runs in the server process on one core")
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({"PICLOUD_HOME": str(tmp_path / "home"), "PICLOUD_DATABASE_URL": database_url,
                "PYTHONPATH": str(ROOT), "PICLOUD_ADMIN_TOKEN": "t0k3n-workers"})
    proc = subprocess.Popen([sys.executable, "-m", "picloud", "up", "--port", str(port),
                             "--node", "kids"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": "Bearer t0k3n-workers"}
    try:
        wait_healthy(port)
        r = httpx.put(f"{base}/api/scripts/kid", content='"hi"', headers=auth, timeout=30)
        assert r.status_code in (200, 201), r.text
        assert httpx.get(f"{base}/fn/kid", timeout=30).text == "hi"
        [first] = _wait_for(lambda: _children(proc.pid))
        _wait_for(lambda: _counted(base, 1))  # the worker counts after it answers
        os.kill(first, signal.SIGKILL)
        second = _wait_for(lambda: [c for c in _children(proc.pid) if c != first])[0]
        for _ in range(3):
            assert httpx.get(f"{base}/fn/kid", timeout=30).text == "hi"
        # /metrics adds up the worker processes' counts, the killed one's included.
        _wait_for(lambda: _counted(base, 4), 10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _wait_for(lambda: not Path(f"/proc/{second}").exists()
                  or "Z" in Path(f"/proc/{second}/stat").read_text().split(")")[1][:3], 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
