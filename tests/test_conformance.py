"""Rhai conformance: the corpus in ../shared/conformance, run through the real wasm engine.

Every case of ``rhai-tests.jsonl`` goes through one ``picloud run --batch`` process (each
case in a fresh sandbox instance). A case passes with the right typed value (floats within
the case's tolerance, else Rhai's relative epsilon), or with an error where one is expected
(of kind ``parse`` when the case says parse). The test prints the pass rate, the rate per
source file and how many error cases also name Rhai's exact variant, and fails under 90%.

The programs (``programs/*.rhai`` with a known ``expected_output``) must print exactly
that; the known gaps are listed in ``PROGRAM_GAPS`` as expected failures, with reasons.

``python tests/test_conformance.py [-v]`` prints the same report (``-v``: every failure).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(os.environ.get("PICLOUD_CONFORMANCE", ROOT.parent / "shared" / "conformance"))
CASES = CONFORMANCE / "rhai-tests.jsonl"
PROGRAMS = CONFORMANCE / "programs"
BAR = 0.90

pytestmark = pytest.mark.skipif(
    not CASES.is_file(),
    reason=f"conformance corpus not found at {CONFORMANCE} (expected ../shared/conformance "
    "next to the repository; set PICLOUD_CONFORMANCE to its folder)",
)

MODES = {
    "eval": "script",
    "run": "script",
    "eval_expression": "expression",
    "compile": "parse",
    "compile_expression": "parse_expression",
}

# The T of `engine.eval::<T>()`: Rhai's host reports ErrorMismatchOutputType when the
# script's value is not a T. The sandbox returns any value, so the harness does that check.
RUST_TYPES = {
    "INT": "int",
    "FLOAT": "float",
    "bool": "bool",
    "String": "string",
    "&str": "string",
    "char": "char",
    "()": "unit",
    "Blob": "blob",
    "Array": "array",
}

# Programs with a known expected output that this engine is not meant to print, and why.
PROGRAM_GAPS = {
    "module.rhai": "needs `import` of another file (modules are not part of the sandboxed "
    "engine: a script is one file)",
}

# Programs that print timings (only `stable_lines` are known) and do not print those lines yet.
STABLE_GAPS: dict[str, str] = {}

F64_EPSILON = sys.float_info.epsilon


def run_batch(
    requests: list[dict[str, Any]], timeout: float = 1800, extra: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Runs requests through one `picloud run --batch` process of this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "picloud", "run", "--batch", *extra],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == len(requests), (len(out), len(requests), proc.stderr[-2000:])
    for req, res in zip(requests, out, strict=True):
        assert res["id"] == req["id"]
    return out


def _float(v: Any) -> float:
    if isinstance(v, str):
        return {"inf": math.inf, "-inf": -math.inf, "NaN": math.nan}[v]
    return float(v)


def float_eq(got: Any, want: Any, tolerance: float | None) -> bool:
    a, b = _float(got), _float(want)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    if tolerance is not None:
        return abs(a - b) < tolerance
    return a == b or abs(a - b) <= F64_EPSILON * max(abs(a), abs(b))


def typed_eq(got: Any, want: dict[str, Any]) -> bool:
    if not isinstance(got, dict):
        return False
    t = want["type"]
    if t == "any":
        return True
    if got.get("type") != t:
        return False
    gv, wv = got.get("value"), want.get("value")
    if t == "float":
        return float_eq(gv, wv, want.get("tolerance"))
    if t == "array":
        return (
            isinstance(gv, list)
            and len(gv) == len(wv)
            and all(typed_eq(g, w) for g, w in zip(gv, wv, strict=True))
        )
    if t == "map":
        return (
            isinstance(gv, dict)
            and gv.keys() == wv.keys()
            and all(typed_eq(gv[k], wv[k]) for k in wv)
        )
    if t == "unit":
        return True
    return bool(gv == wv and type(gv) is type(wv))


def exact_variant(case: dict[str, Any]) -> str | None:
    """The Rhai variant a failing case names (the ParseErrorType for parse errors)."""
    name = case["error"] if case["error"] != "*" else case.get("native_error")
    if not name:
        return None
    return str(name).removeprefix("ErrorParsing/")


def score(case: dict[str, Any], res: dict[str, Any]) -> tuple[bool, bool | None, str]:
    """(passed, names the exact variant or None when not an error case, why it failed)."""
    if res["ok"] and case.get("rust_type") in RUST_TYPES:
        want_type = RUST_TYPES[case["rust_type"]]
        if (res["value"] or {}).get("type") != want_type:
            res = {
                "ok": False,
                "error": {"kind": "runtime", "type": "ErrorMismatchOutputType", "message": ""},
            }
    if "expect" in case:
        if not res["ok"]:
            e = res["error"]
            return False, None, f"error {e['kind']}/{e['type']}: {e['message']}"
        if typed_eq(res["value"], case["expect"]):
            return True, None, ""
        return False, None, f"got {json.dumps(res['value'])}"
    variant = exact_variant(case)
    if res["ok"]:
        return False, False, f"no error, got {json.dumps(res['value'])}"
    e = res["error"]
    exact = variant is not None and e["type"] == variant
    if case.get("error_kind") == "parse" and e["kind"] != "parse":
        return False, exact, f"expected a parse error, got {e['kind']}/{e['type']}"
    return True, exact, ""


class Report:
    def __init__(self, cases: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        self.total = len(cases)
        self.passed = 0
        self.per_file: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.error_cases = 0
        self.exact = 0
        self.failures: list[tuple[str, str, str]] = []
        for case, res in zip(cases, results, strict=True):
            ok, exact, why = score(case, res)
            f = self.per_file[case["source"]]
            f[1] += 1
            if ok:
                self.passed += 1
                f[0] += 1
            else:
                self.failures.append((case["id"], case["script"], why))
            if "error" in case:
                self.error_cases += 1
                self.exact += bool(exact)

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def text(self, verbose: bool = False) -> str:
        lines = [
            f"Rhai conformance: {self.passed}/{self.total} pass ({self.rate:.1%}; bar {BAR:.0%})",
            f"error cases naming Rhai's exact variant: {self.exact}/{self.error_cases}",
            "per file:",
        ]
        for name, (p, n) in sorted(self.per_file.items()):
            lines.append(f"  {name:28} {p:4}/{n:<4} {p / n:6.1%}")
        shown = self.failures if verbose else self.failures[:25]
        if shown:
            lines.append(f"failures ({len(self.failures)}, showing {len(shown)}):")
            for id_, script, why in shown:
                s = script.replace("\n", "\\n")
                lines.append(f"  {id_}: {s[:70]!s} -> {why[:120]}")
        return "\n".join(lines)


def load_cases() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


def conformance_report() -> Report:
    cases = load_cases()
    requests = [{"id": c["id"], "source": c["script"], "mode": MODES[c["mode"]]} for c in cases]
    return Report(cases, run_batch(requests))


def load_programs() -> list[dict[str, Any]]:
    path = CONFORMANCE / "programs.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def program_outputs() -> dict[str, dict[str, Any]]:
    known = [p for p in load_programs() if p.get("expected_output") is not None]
    requests = [
        {"id": p["file"], "source": (PROGRAMS / p["file"]).read_text(), "mode": "script"}
        for p in known
    ]
    return {r["id"]: r for r in run_batch(requests)}


def test_conformance_pass_rate(capsys: pytest.CaptureFixture[str]) -> None:
    report = conformance_report()
    with capsys.disabled():
        print("\n" + report.text())
    assert report.rate >= BAR, report.text(verbose=True)


def _program_params() -> list[Any]:
    params = []
    for p in load_programs():
        if p.get("expected_output") is None:
            continue
        marks = []
        if p["file"] in PROGRAM_GAPS:
            marks.append(pytest.mark.xfail(reason=PROGRAM_GAPS[p["file"]], strict=True))
        params.append(pytest.param(p["file"], p["expected_output"], marks=marks, id=p["file"]))
    return params


@pytest.mark.parametrize(("file", "expected"), _program_params())
def test_program_output(
    file: str, expected: str, program_outputs: dict[str, dict[str, Any]]
) -> None:
    res = program_outputs[file]
    assert res["ok"], res["error"]
    assert res["stdout"] == expected


def _stable_params() -> list[Any]:
    params = []
    for p in load_programs():
        if p.get("expected_output") is None and p.get("stable_lines"):
            marks = []
            if p["file"] in STABLE_GAPS:
                marks.append(pytest.mark.xfail(reason=STABLE_GAPS[p["file"]], strict=False))
            params.append(pytest.param(p["file"], p["stable_lines"], marks=marks, id=p["file"]))
    return params


@pytest.fixture(scope="module")
def stable_outputs() -> dict[str, dict[str, Any]]:
    # The timing programs are heavier (fib(28) x 5, a 1e6 sieve...): run them with high
    # limits, through the same batch CLI.
    files = [p.values[0] for p in _stable_params()]
    requests = [{"id": f, "source": (PROGRAMS / f).read_text(), "mode": "script"} for f in files]
    return {r["id"]: r for r in run_batch(requests, extra=BIG_LIMITS)}


BIG_LIMITS = ("--fuel", str(10**13), "--timeout", "120", "--memory", str(1 << 30))


@pytest.mark.parametrize(("file", "stable_lines"), _stable_params())
def test_timing_program_stable_lines(
    file: str, stable_lines: list[str], stable_outputs: dict[str, dict[str, Any]]
) -> None:
    res = stable_outputs[file]
    assert res["ok"], res["error"]
    lines = res["stdout"].splitlines()
    # Every stable line appears, in order.
    it = iter(lines)
    missing = [s for s in stable_lines if not any(line == s for line in it)]
    assert not missing, (missing, lines)


if __name__ == "__main__":
    rep = conformance_report()
    print(rep.text(verbose="-v" in sys.argv))
    sys.exit(0 if rep.rate >= BAR else 1)
