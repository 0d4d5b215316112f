"""Idle cost: statements PiCloud sends to PostgreSQL, and its CPU, while nobody calls it.

    python bench/idle.py [--seconds 60]

Starts ``picloud up`` on the embedded PostgreSQL (a fresh PICLOUD_HOME), deploys a script,
invokes it once and sets a yearly schedule (so every role has done real work), waits 2 s,
then for the measured window counts the transactions of PiCloud's database in
``pg_stat_database`` (xact_commit + xact_rollback; read from the ``postgres`` database so the
reading does not count; pg_stat_statements is not available in the embedded build) and the
CPU time of the ``picloud up`` process and its worker processes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import api, picloud_up


def xacts(admin_url: str, dbname: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,)).fetchone()
        assert row is not None
        return int(row[0])


def _cpu(processes: list[psutil.Process]) -> float:
    """User + system seconds of ``processes`` (all must still be alive: none may restart)."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="picloud-idle-"))
    with picloud_up(tmp / "home") as (proc, url, home):
        with api(url) as c:
            c.put("/api/scripts/idle", content='"ok"').raise_for_status()
            assert c.get("/fn/idle").status_code == 200
            c.put("/api/schedules/yearly", json={"script": "idle", "cron": "0 0 1 1 *"}
                  ).raise_for_status()
        from picloud.database import open_embedded

        admin = open_embedded(home / "pgdata", database="postgres")
        try:
            # Backends flush their statistics when idle, at the latest 10 s later: let the
            # work done above reach pg_stat_database before the window opens.
            time.sleep(12.0)
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            before_x = xacts(admin.url, "picloud")
            before_cpu = _cpu(tree)
            t0 = time.perf_counter()
            time.sleep(args.seconds)
            elapsed = time.perf_counter() - t0
            after_cpu = _cpu(tree)
            after_x = xacts(admin.url, "picloud")
        finally:
            admin.close()
    statements = after_x - before_x
    cpu_pct = (after_cpu - before_cpu) / elapsed * 100
    print(f"idle window: {elapsed:.1f} s")
    print(f"transactions from PiCloud's database: {statements}  (target 0)")
    print(f"CPU of the picloud processes ({len(tree)}: `up` and its workers): "
          f"{after_cpu - before_cpu:.3f} s = {cpu_pct:.3f}% of one core  (target < 0.5%)")
    ok = statements == 0 and cpu_pct < 0.5
    print("idle targets:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
