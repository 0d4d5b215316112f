"""A plain (non-editable) install carries everything PiCloud needs at run time: the
prebuilt engine and the migrations, so users need no Rust and no source checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    if build.returncode != 0 and "invalid command 'bdist_wheel'" in build.stderr:
        pytest.skip("the `wheel` package is not installed (pip install wheel)")
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("picloud-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_the_prebuilt_engine(wheel: zipfile.ZipFile) -> None:
    committed = (ROOT / "picloud" / "workers" / "engine.wasm").read_bytes()
    assert wheel.read("picloud/workers/engine.wasm") == committed


def test_wheel_carries_the_migrations(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "picloud/migrations/env.py" in names
    assert "picloud/migrations/schema.sql" in names
    assert any(n.startswith("picloud/migrations/versions/") and n.endswith(".py") for n in names)


def test_wheel_has_the_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "picloud = picloud.cli:main" in wheel.read(entry_points).decode()
