"""`picloud run FILE.rhai` and `picloud run --batch`, as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def picloud(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "picloud", "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_run_prints_to_stdout_and_debug_to_stderr(tmp_path: Path) -> None:
    script = tmp_path / "hello.rhai"
    script.write_text('print("hello");\ndebug("dbg");\nprint(40 + 2);\nlog("logged");\n')
    out = picloud(str(script))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello\n42\n"
    assert out.stderr == '"dbg"\nlogged\n'


def test_run_value_flag(tmp_path: Path) -> None:
    script = tmp_path / "v.rhai"
    script.write_text("[1, 2]")
    out = picloud("--value", str(script))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "type": "array",
        "value": [{"type": "int", "value": 1}, {"type": "int", "value": 2}],
    }


def test_run_with_vars(tmp_path: Path) -> None:
    script = tmp_path / "hook.rhai"
    script.write_text("print(`${request.method} ${request.json.n + 1} ${event.type}`);")
    out = picloud(
        "--var",
        'request={"method": "POST", "json": {"n": 41}}',
        "--var",
        'event={"type": "http"}',
        str(script),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "POST 42 http\n"
    out = picloud("--var", "request=not json", str(script))
    assert out.returncode == 2 and "--var request" in out.stderr


def test_run_error_goes_to_stderr_with_exit_1(tmp_path: Path) -> None:
    script = tmp_path / "bad.rhai"
    script.write_text('print("before");\nlet x = 1 / 0;\n')
    out = picloud(str(script))
    assert out.returncode == 1
    assert out.stdout == "before\n"
    assert "runtime" in out.stderr and "ErrorArithmetic" in out.stderr
    assert "line 2" in out.stderr and "column" in out.stderr


def test_run_parse_error(tmp_path: Path) -> None:
    script = tmp_path / "syntax.rhai"
    script.write_text("let x = ;")
    out = picloud(str(script))
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("parse error ")
    assert "line 1" in out.stderr


def test_run_limit_flags(tmp_path: Path) -> None:
    script = tmp_path / "spin.rhai"
    script.write_text("loop { }")
    out = picloud("--fuel", "1000000", str(script))
    assert out.returncode == 1
    assert "limit error ErrorTooManyOperations" in out.stderr
    out = picloud("--fuel", "100000000000", "--timeout", "0.2", str(script))
    assert out.returncode == 1
    assert "limit error ErrorTimeout" in out.stderr


def test_run_missing_file() -> None:
    out = picloud("/nonexistent/x.rhai")
    assert out.returncode == 2
    assert "No such file" in out.stderr


def test_run_reads_stdin() -> None:
    out = picloud("-", stdin='print("from stdin");')
    assert out.returncode == 0, out.stderr
    assert out.stdout == "from stdin\n"


def test_batch_answers_each_line_in_order() -> None:
    lines = [
        {"id": 1, "source": 'print("a"); print("b"); 40 + 2', "mode": "script"},
        {"id": "two", "source": "1 +", "mode": "parse"},
        {"id": 3, "source": "[1, 2].len()", "mode": "expression"},
        {"id": 4, "source": "let x = 1; x", "mode": "parse_expression"},
        {"id": 5, "source": "let y = 1 / 0;", "mode": "script"},
        {"id": 6, "source": "'c'"},
        {"id": 7, "source": "loop {}"},
    ]
    stdin = "".join(json.dumps(x) + "\n" for x in lines) + "not json\n"
    out = picloud("--batch", "--fuel", "5000000", stdin=stdin)
    assert out.returncode == 0, out.stderr
    res = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in res] == [1, "two", 3, 4, 5, 6, 7, None]
    assert res[0] == {
        "id": 1,
        "ok": True,
        "value": {"type": "int", "value": 42},
        "stdout": "a\nb\n",
        "error": None,
    }
    assert res[1]["ok"] is False and res[1]["error"]["kind"] == "parse"
    assert res[2]["value"] == {"type": "int", "value": 2}
    assert res[3]["ok"] is False and res[3]["error"]["kind"] == "parse"
    e = res[4]["error"]
    assert (e["kind"], e["type"], e["line"]) == ("runtime", "ErrorArithmetic", 1)
    assert set(e) == {"kind", "type", "message", "line", "column"}
    assert res[5]["value"] == {"type": "char", "value": "c"}
    assert res[6]["error"]["kind"] == "limit"
    assert res[6]["error"]["type"] == "ErrorTooManyOperations"
    assert res[7]["ok"] is False and res[7]["error"]["type"] == "ErrorBadInput"


def test_batch_instances_are_fresh() -> None:
    stdin = (
        json.dumps({"id": 1, "source": "let leaked = 1; leaked"})
        + "\n"
        + json.dumps({"id": 2, "source": "leaked"})
        + "\n"
    )
    out = picloud("--batch", stdin=stdin)
    res = [json.loads(line) for line in out.stdout.splitlines()]
    assert res[0]["ok"] and not res[1]["ok"]
    assert res[1]["error"]["type"] == "ErrorVariableNotFound"
