"""Scores the engine natively against the Rhai conformance corpus.

Runs `rhai-native --batch` over `rhai-tests.jsonl` and the programs with a
known `expected_output`, and prints the pass rate overall and per source file.

    python3 engine/tests/conformance.py [--bin PATH] [--corpus DIR] [-v]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_BIN = HERE.parent / "target" / "release" / "rhai-native"
DEFAULT_CORPUS = Path("/work/shared/conformance")

MODES = {
    "eval": "script",
    "run": "script",
    "eval_expression": "expression",
    "compile": "parse",
    "compile_expression": "parse_expression",
}

# The Rust type a test asked `eval::<T>()` for, as the typed form's type.
RUST_TYPES = {
    "INT": "int",
    "FLOAT": "float",
    "bool": "bool",
    "char": "char",
    "String": "string",
    "&str": "string",
    "()": "unit",
    "Blob": "blob",
    "Array": "array",
}


def run_batch(binary: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs the requests through the native runner, one JSON line each."""
    text = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run(
        [str(binary), "--batch"], input=text, capture_output=True, text=True, timeout=600
    )
    out = [json.loads(line) for line in proc.stdout.split("\n") if line.strip()]
    if len(out) != len(requests):
        sys.exit(f"runner answered {len(out)} of {len(requests)} requests: {proc.stderr[-2000:]}")
    return out


def same_value(expect: dict[str, Any], got: dict[str, Any]) -> bool:
    """Whether a typed value matches the expectation (floats with tolerance)."""
    t = expect["type"]
    if t == "any":
        return True
    if got.get("type") != t:
        return False
    ev: Any = expect.get("value")
    gv: Any = got.get("value")
    if t == "float":
        if isinstance(ev, str) or isinstance(gv, str):
            return ev == gv
        tol = expect.get("tolerance")
        if tol is not None:
            return abs(gv - ev) < tol
        return bool(gv == ev or math.isclose(gv, ev, rel_tol=1e-12, abs_tol=1e-12))
    if t == "array":
        return len(ev) == len(gv) and all(same_value(a, b) for a, b in zip(ev, gv, strict=True))
    if t == "map":
        return set(ev) == set(gv) and all(same_value(ev[k], gv[k]) for k in ev)
    return bool(ev == gv)


def judge(case: dict[str, Any], resp: dict[str, Any]) -> tuple[bool, bool]:
    """(passed, exact variant named) for one case."""
    value = resp.get("value") if resp.get("ok") else None
    error = resp.get("error") if not resp.get("ok") else None
    want_type = RUST_TYPES.get(case.get("rust_type") or "")
    if value is not None and want_type and case["mode"] != "run" and value.get("type") != want_type:
        error = {"kind": "runtime", "type": "ErrorMismatchOutputType"}
        value = None
    if "expect" in case:
        return (value is not None and same_value(case["expect"], value), False)
    if error is None:
        return (False, False)
    kind = case.get("error_kind")
    if kind == "parse" and error.get("kind") != "parse":
        return (False, False)
    native = case.get("native_error") or case.get("error") or ""
    variant = native.split("/")[-1]
    return (True, error.get("type") == variant)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", type=Path, default=DEFAULT_BIN)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    cases = [json.loads(line) for line in (args.corpus / "rhai-tests.jsonl").open()]
    reqs = [{"id": c["id"], "source": c["script"], "mode": MODES[c["mode"]]} for c in cases]
    resps = run_batch(args.bin, reqs)
    per_file: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    passed = errors = exact = 0
    for case, resp in zip(cases, resps, strict=True):
        ok, named = judge(case, resp)
        f = case["source"].split("/")[-1]
        per_file[f][1] += 1
        if ok:
            per_file[f][0] += 1
            passed += 1
        if "expect" not in case:
            errors += 1
            exact += named
        if not ok and args.verbose:
            got = resp.get("value") if resp.get("ok") else resp.get("error")
            want = case.get("expect") or case.get("native_error") or case.get("error")
            print(f"FAIL {case['id']}: {case['script'][:120]!r}\n   want {want}\n   got  {got}")
    print(f"cases: {passed}/{len(cases)} passed ({100.0 * passed / len(cases):.1f}%)")
    print(f"error cases naming Rhai's exact variant: {exact}/{errors}")
    for f in sorted(per_file):
        p, n = per_file[f]
        print(f"  {f:24} {p:4}/{n:<4}")

    progs = [json.loads(line) for line in (args.corpus / "programs.jsonl").open()]
    known = [p for p in progs if p.get("expected_output") is not None]
    preqs = [
        {
            "id": p["file"],
            "source": (args.corpus / "programs" / p["file"]).read_text(),
            "mode": "script",
        }
        for p in known
    ]
    presps = run_batch(args.bin, preqs)
    ppass = 0
    for p, r in zip(known, presps, strict=True):
        ok = bool(r.get("ok")) and r.get("stdout") == p["expected_output"]
        ppass += ok
        if not ok and args.verbose:
            got = r.get("stdout", "")[:300]
            print(f"PROGRAM FAIL {p['file']}: {r.get('error')}\n   got {got!r}")
    print(f"programs with known output: {ppass}/{len(known)} print exactly the expected output")


if __name__ == "__main__":
    main()
