"""Commands that need a server say so when there is none; the embedded server's noise is
silenced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _picloud(*args: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("PICLOUD_HOME", "PICLOUD_DATABASE_URL")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "picloud", *args], cwd=cwd,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(("command", "status"),
                         [(("audit", "verify"), 2), (("projections", "rebuild"), 1)])
def test_without_a_server_they_fail_clearly_and_create_nothing(
        tmp_path: Path, command: tuple[str, str], status: int) -> None:
    """They speak the API (no database of their own): no server, a clear message."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = _picloud(*command, cwd=tmp_path, env={"PICLOUD_URL": url})
    assert out.returncode == status, out.stdout + out.stderr
    assert f"cannot reach the PiCloud API at {url}" in out.stderr
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(180)
def test_embedded_database_commands_print_no_runtime_dir_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    env = {"PICLOUD_HOME": str(home)}
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    out = _picloud("db", "migrate", cwd=tmp_path, env=env, timeout=150)
    assert out.returncode == 0, out.stderr
    assert "RuntimeDirWarning" not in out.stderr and "XDG_RUNTIME_DIR" not in out.stderr


def test_up_on_restart_says_where_the_admin_token_is(tmp_path: Path, database_url: str) -> None:
    import signal
    import socket
    import time

    home = tmp_path / "home"
    home.mkdir()
    (home / "admin.token").write_text("pc_admin_existing\n")
    (home / "admin.token").chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PICLOUD_")}
    env = {**base, "PYTHONPATH": str(ROOT), "PICLOUD_HOME": str(home),
           "PICLOUD_DATABASE_URL": database_url}
    err = (tmp_path / "err.txt").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "picloud", "up", "--port", str(port),
                             "--roles", "ingress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Ctrl-C" not in (tmp_path / "err.txt").read_text():
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    progress = (tmp_path / "err.txt").read_text()
    assert f"admin token: in {home / 'admin.token'}" in progress, progress
    assert "pc_admin_existing" not in stdout + progress  # not printed again
