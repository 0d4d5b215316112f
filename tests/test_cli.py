import subprocess
import sys


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "picloud", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: picloud" in out.stdout


def test_no_command_is_an_error() -> None:
    out = subprocess.run([sys.executable, "-m", "picloud"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage: picloud" in out.stderr
