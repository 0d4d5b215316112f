"""Server-side commands never create a database; the embedded server's noise is silenced."""

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


@pytest.mark.parametrize("command", [("audit", "verify"), ("projections", "rebuild")])
def test_without_a_database_they_fail_and_create_nothing(
        tmp_path: Path, command: tuple[str, str]) -> None:
    out = _picloud(*command, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(tmp_path / ".picloud" / "pgdata") in out.stderr
    assert "PICLOUD_DATABASE_URL" in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [("audit", "verify"), ("projections", "rebuild")])
def test_on_the_server_database_they_work(
        tmp_path: Path, database_url: str, command: tuple[str, str]) -> None:
    out = _picloud(*command, cwd=tmp_path, env={"PICLOUD_DATABASE_URL": database_url})
    assert out.returncode == 0, out.stdout + out.stderr
