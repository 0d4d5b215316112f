"""The CLI against a real ``picloud up`` found through ``PICLOUD_HOME/server.json``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtime_fixtures import engine_ready, wait_healthy  # noqa: F401

pytestmark = pytest.mark.usefixtures("engine_ready")

ROOT = Path(__file__).resolve().parent.parent
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def up(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Cli, int, Path]]:
    work = tmp_path_factory.mktemp("up")
    home = work / ".picloud"
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env.update({"PICLOUD_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)})
    err = (work / "err.txt").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "picloud", "up", "--port", str(port)],
                            env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=err)

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-m", "picloud", *args], env=env, cwd=work,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
        return r

    try:
        wait_healthy(port)
        for _ in range(100):
            if (home / "server.json").exists():
                break
            time.sleep(0.05)
        yield cli, port, work
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_cli_defects(up: tuple[Cli, int, Path], tmp_path: Path) -> None:
    cli, port, _work = up
    script = tmp_path / "chatty.rhai"
    script.write_text('print("line one"); let s = 0; for i in 0..1000 { s += i; } s')
    # deploy: the URL is absolute in text and JSON alike (and found without PICLOUD_URL)
    text = cli("deploy", str(script)).stdout
    assert f"http://127.0.0.1:{port}/fn/chatty" in text
    out = json.loads(cli("deploy", str(script), "--json").stdout)
    assert out["url"] == f"http://127.0.0.1:{port}/fn/chatty"
    r = cli("deploy", str(tmp_path / "nope.rhai"), code=1)
    assert "nope.rhai" in r.stderr and "Traceback" not in r.stderr
    # invoke: an unknown script prints the API's message
    r = cli("invoke", "nosuch", code=1)
    assert "no script named 'nosuch'" in r.stderr and "invocation None" not in r.stderr
    assert cli("invoke", "chatty").stdout.strip() == "499500"
    # logs: --json, and an unknown script is an error
    lines = [json.loads(x) for x in cli("logs", "chatty", "--json").stdout.splitlines()]
    assert lines and lines[0]["invocation_id"] and "line one" in json.dumps(lines[0])
    r = cli("logs", "nosuch", code=1)
    assert "no script named 'nosuch'" in r.stderr
    # invocations: durations rounded in the table
    table = cli("invocations").stdout.splitlines()
    col = table[0].split().index("DURATION_MS")
    for row in table[1:]:
        value = row.split()[col]
        assert value == "-" or len(value.split(".")[-1]) <= 1, value
    # schedules: the NEXT_FIRE_TIME column is filled
    set_out = cli("schedules", "set", "nightly", "--script", "chatty", "--cron", "0 3 * * *")
    assert "next 20" in set_out.stdout
    listing = cli("schedules").stdout.splitlines()
    row = next(x for x in listing if x.startswith("nightly"))
    assert row.split()[-1] != "-" and "T03:00:00" in row


def test_head_over_real_http_keeps_the_connection_usable(
        up: tuple[Cli, int, Path], tmp_path: Path) -> None:
    cli, port, _work = up
    script = tmp_path / "headed.rhai"
    script.write_text('#{headers: #{"x-method": request.method}, body: "some body"}')
    cli("deploy", str(script))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        r = c.head("/fn/headed")
        assert r.status_code == 200 and r.headers["x-method"] == "HEAD" and r.content == b""
        r = c.get("/fn/headed")  # same keep-alive connection: the framing held
        assert r.status_code == 200 and r.text == "some body"
        r = c.options("/fn/headed")
        assert r.status_code == 200 and r.headers["x-method"] == "OPTIONS"
