"""End-to-end latency and throughput of a trivial script, beside a bare litestar hello world.

    python bench/e2e.py [--requests 1000] [--seconds 10] [--clients 16] [--profile]

Starts ``picloud up`` as a user would (embedded PostgreSQL unless PICLOUD_DATABASE_URL is
set), uploads ``"ok"``, then measures sequential sync invocations (p50/p99) and throughput
with N concurrent keep-alive clients; the same for a bare litestar hello world served the same
way (granian embedded, one process). Prints where the time goes: the CPU each process (HTTP,
worker, PostgreSQL) spends per invocation under load, the server-side timings, and with
``--profile`` a cProfile of the HTTP process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CpuMeter,
    api,
    concurrent,
    free_port,
    percentile,
    picloud_up,
    sequential,
    stats_line,
)

TARGET_P50_MS = 8.0
TARGET_RPS = 250.0


def measure(port: int, path: str, n: int, clients: int, seconds: float,
            cpu: CpuMeter | None = None) -> dict[str, float]:
    asyncio.run(sequential("127.0.0.1", port, path, min(200, n)))  # warm up
    seq, seq_failed = asyncio.run(sequential("127.0.0.1", port, path, n))
    if cpu:
        cpu.start()
    done, failed, elapsed, times = asyncio.run(
        concurrent("127.0.0.1", port, path, clients, seconds))
    if cpu:
        cpu.stop(done)
    return {"p50": percentile(seq, 50), "p99": percentile(seq, 99), "rps": done / elapsed,
            "failed": seq_failed + failed, "conc_p50": percentile(times, 50),
            "conc_p99": percentile(times, 99), "n": n, "done": done,
            "seq": seq, "times": times}  # type: ignore[dict-item]


def xacts(home: Path) -> int | None:
    """Committed + rolled back transactions of PiCloud's database (embedded server only)."""
    if os.environ.get("PICLOUD_DATABASE_URL"):
        return None
    import psycopg

    from picloud.database import open_embedded

    db = open_embedded(home / "pgdata", database="postgres")
    try:
        with psycopg.connect(db.url, autocommit=True) as conn:
            row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                               "WHERE datname = 'picloud'").fetchone()
            return int(row[0]) if row else None
    finally:
        db.close()


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--profile", action="store_true",
                    help="run the HTTP process under cProfile (slows it down) and print the top")
    ap.add_argument("--no-profile", action="store_true", help=argparse.SUPPRESS)  # the default
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--worker-processes", type=int, default=None,
                    help="passed to picloud up (0: the worker runs in the HTTP process; "
                         "default: picloud up's own)")
    ap.add_argument("--sync-results", action="store_true",
                    help="PICLOUD_ASYNC_COMMIT=0: result transactions wait for their WAL flush "
                         "too (by default only request transactions do)")
    args = ap.parse_args()

    port = free_port()
    if args.skip_baseline:
        base = {"p50": 0.0, "p99": 0.0, "rps": 0.0, "failed": 0, "conc_p50": 0.0,
                "conc_p99": 0.0, "seq": [0.0], "times": [0.0]}
    hello_cmd = [sys.executable, str(Path(__file__).with_name("hello.py")), str(port)]
    hello = None if args.skip_baseline else subprocess.Popen(hello_cmd)
    try:
        for _ in range(100 if hello else 0):
            try:
                httpx.get(f"http://127.0.0.1:{port}/fn/hello", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        if hello:
            base = measure(port, "/fn/hello", args.requests, args.clients, args.seconds)
    finally:
        if hello:
            hello.terminate()
            hello.wait()

    tmp = Path(tempfile.mkdtemp(prefix="picloud-e2e-"))
    prof = tmp / "server.prof"
    env = {"PICLOUD_PROFILE": str(prof)} if args.profile else {}
    if args.sync_results:
        env["PICLOUD_ASYNC_COMMIT"] = "0"
    per_invocation: float | None = None
    up_args = ([] if args.worker_processes is None
               else ["--worker-processes", str(args.worker_processes)])
    with picloud_up(tmp / "home", env, up_args) as (_proc, url, _home):
        with api(url) as c:
            r = c.put("/api/scripts/bench", content='"ok"')
            r.raise_for_status()
        pc_port = int(url.rsplit(":", 1)[1])
        asyncio.run(sequential("127.0.0.1", pc_port, "/fn/bench", 100))
        time.sleep(11)  # backends flush their statistics within 10 s of going idle
        before = xacts(_home)
        asyncio.run(sequential("127.0.0.1", pc_port, "/fn/bench", 200))
        time.sleep(11)
        after = xacts(_home)
        if before is not None and after is not None:
            per_invocation = (after - before) / 200
        cpu = CpuMeter(_proc.pid, _home / "pgdata")
        ours = measure(pc_port, "/fn/bench", args.requests, args.clients, args.seconds, cpu)
        metrics_text = httpx.get(url + "/metrics").text
    print()
    print(f"== sequential sync invocations ({args.requests}), one keep-alive client")
    print(stats_line("picloud /fn/bench", ours["seq"]))  # type: ignore[arg-type]
    print(stats_line("litestar hello world", base["seq"]))  # type: ignore[arg-type]
    print(f"== throughput, {args.clients} concurrent clients, {args.seconds:.0f} s")
    print(f"{'picloud /fn/bench':<28} {ours['rps']:8.1f} req/s   p50 {ours['conc_p50']:.2f} ms"
          f"   p99 {ours['conc_p99']:.2f} ms   failed {int(ours['failed'])}")
    print(f"{'litestar hello world':<28} {base['rps']:8.1f} req/s   p50 {base['conc_p50']:.2f} ms"
          f"   p99 {base['conc_p99']:.2f} ms   failed {int(base['failed'])}")
    print(f"== targets: p50 <= {TARGET_P50_MS} ms: "
          f"{'met' if ours['p50'] <= TARGET_P50_MS else 'NOT met'}; "
          f">= {TARGET_RPS:.0f} invocations/s: "
          f"{'met' if ours['rps'] >= TARGET_RPS else 'NOT met'}; "
          f"failed requests: {int(ours['failed'])}")

    print("== where the time goes (server side)")
    if per_invocation is not None:
        print(f"  PostgreSQL transactions per sequential invocation (all roles): "
              f"{per_invocation:.1f}")
    e2e_n = metric(metrics_text, "picloud_invocation_seconds_count")
    e2e_s = metric(metrics_text, "picloud_invocation_seconds_sum")
    run_n = metric(metrics_text, "picloud_worker_run_seconds_count")
    run_s = metric(metrics_text, "picloud_worker_run_seconds_sum")
    sb_n = metric(metrics_text, "picloud_sandbox_seconds_count")
    sb_s = metric(metrics_text, "picloud_sandbox_seconds_sum")
    if e2e_n and run_n:
        e2e, run = e2e_s / e2e_n * 1000, run_s / run_n * 1000
        sandbox = sb_s / sb_n * 1000 if sb_n else float("nan")
        print(f"  ingress handler (append+defer, wait, read result): mean {e2e:.2f} ms")
        print(f"  worker task (read, sandbox, record+finish):       mean {run:.2f} ms")
        print(f"    of which the sandbox run:                      mean {sandbox:.2f} ms")
        print(f"  ingress minus worker (HTTP, queueing, NOTIFY hops, DB): {e2e - run:.2f} ms")
    print(f"  CPU per invocation under load ({args.clients} clients), by process:")
    for line in cpu.report():
        print("    " + line)
    if prof.exists():
        print("== server profile (main thread, cProfile), top 25 by internal time")
        stats = pstats.Stats(str(prof))
        stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
