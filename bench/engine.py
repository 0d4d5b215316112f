"""Engine benchmark (not a test): the Rhai engine in the wasm sandbox against CPython.

Runs every ``bench/NAME.rhai`` of the conformance corpus (../shared/conformance/bench) in
the sandbox and ``bench/NAME.py`` in CPython, in the same run, and prints each time, the ratio
engine/CPython and the geometric mean of the ratios (issue 2's target: at most 4.7x, native
Rhai 1.25's own ratio). Then the cost of one trivial invocation (fresh instance, run
``40 + 2``, collect the result, drop), median and p99 over 1000 (target under 1 ms), and the
engine's startup (compile with a cold cache, load with a warm one).

Timing method: both sides in this process. A sandbox time is ``Engine.run`` (instantiate,
parse, run, collect output); a CPython time is ``exec`` of the pre-compiled ``.py`` with
stdout captured, in this same interpreter. Each is the best of ``--repeat`` runs (default 3).

    python bench/engine.py [--repeat N] [--only NAME] [--invocations N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from picloud.workers.sandbox import Engine, Limits, get_engine  # noqa: E402

BENCH = ROOT.parent / "shared" / "conformance" / "bench"
TARGET = 4.7
# Native Rhai 1.25 / CPython 3.11, measured for the issue.
NATIVE_RATIOS = {
    "fib25": 10.6,
    "loop_sum": 4.7,
    "array_sort": 1.8,
    "string_concat": 2.9,
    "map_insert_lookup": 8.4,
}
BIG = Limits(fuel=10**14, timeout_s=600, memory_bytes=1 << 30, output_bytes=1 << 20)


def time_python(path: Path, repeat: int) -> tuple[float, str]:
    code = compile(path.read_text(), str(path), "exec")
    best, out = math.inf, ""
    for _ in range(repeat):
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            exec(code, {"__name__": "__main__"})
        best = min(best, time.perf_counter() - t0)
        out = buf.getvalue()
    return best, out


def time_engine(engine: Engine, path: Path, repeat: int) -> tuple[float, str, str | None, int]:
    source = path.read_text()
    best, out, err, fuel = math.inf, "", None, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = engine.run(source, limits=BIG)
        best = min(best, time.perf_counter() - t0)
        out = "".join(line.text + "\n" for line in r.logs if line.stream == "print")
        fuel = r.fuel_used
        if r.error is not None:
            err = f"{r.error.kind}/{r.error.type}: {r.error.message}"
            break
    return best, out, err, fuel


def trivial_invocations(engine: Engine, n: int) -> tuple[float, float]:
    for _ in range(50):
        engine.run("40 + 2")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = engine.run("40 + 2")
        times.append((time.perf_counter() - t0) * 1000)
        if r.value != 42:
            raise SystemExit(f"40 + 2 gave {r.value!r}: {r.error}")
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", action="append", help="run only these benchmarks (by name)")
    ap.add_argument("--invocations", type=int, default=1000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        Engine(cache_dir=Path(tmp))
        cold = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        Engine(cache_dir=Path(tmp))
        warm = (time.perf_counter() - t0) * 1000
    engine = get_engine()
    print(f"engine.wasm sha256 {engine.wasm_sha256[:16]}  python {sys.version.split()[0]}")
    print(f"startup: compile (cold cache) {cold:.0f} ms, load (warm cache) {warm:.1f} ms")

    if not BENCH.is_dir():
        print(f"no benchmarks: {BENCH} not found")
        return 1
    names = sorted(p.stem for p in BENCH.glob("*.rhai"))
    if args.only:
        names = [n for n in names if n in args.only]
    print(
        f"\n{'benchmark':20} {'engine s':>9} {'cpython s':>9} {'ratio':>7} {'native':>7}  "
        f"{'fuel':>14}  output"
    )
    ratios = []
    for name in names:
        e_s, e_out, err, fuel = time_engine(engine, BENCH / f"{name}.rhai", args.repeat)
        py = BENCH / f"{name}.py"
        p_s, p_out = time_python(py, args.repeat) if py.is_file() else (math.nan, "")
        native = NATIVE_RATIOS.get(name)
        if err is not None:
            print(f"{name:20} {'error':>9} {p_s:9.4f} {'-':>7} {native or '-':>7}  {err}")
            continue
        ratio = e_s / p_s
        ratios.append(ratio)
        same = "same" if e_out == p_out else f"DIFFERS ({e_out.strip()!r} vs {p_out.strip()!r})"
        print(
            f"{name:20} {e_s:9.4f} {p_s:9.4f} {ratio:6.2f}x {native or '-':>6}x  {fuel:14,}  {same}"
        )
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        verdict = "meets" if geo <= TARGET and len(ratios) == len(names) else "does not meet"
        print(
            f"\ngeometric mean engine/CPython: {geo:.2f}x over {len(ratios)}/{len(names)} "
            f"benchmarks (target <= {TARGET}x, native Rhai 1.25: 4.7x): {verdict} the target"
        )

    med, p99 = trivial_invocations(engine, args.invocations)
    print(
        f"\ntrivial invocation (instantiate, 40 + 2, collect, drop) x{args.invocations}: "
        f"median {med:.3f} ms, p99 {p99:.3f} ms (target median < 1 ms)"
    )
    print(
        json.dumps(
            {
                "geomean": geo if ratios else None,
                "trivial_median_ms": med,
                "trivial_p99_ms": p99,
                "startup_cold_ms": cold,
                "startup_warm_ms": warm,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
