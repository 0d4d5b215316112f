"""Event store and projection costs on the embedded PostgreSQL (or PICLOUD_DATABASE_URL).

    python bench/store.py [--n 2000]

Prints: sequential append latency (one event, its own transaction: p50/p99), append
throughput with 16 concurrent writers, read_all throughput, projector catch-up rate on a
backlog of invocation events, live projection lag (append -> read model) p50/p99, rebuild
rate, and audit verify rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from picloud.config import load_settings
from picloud.database import create_pool, migrate, open_database
from picloud.events import Metadata, append, read_all, verify
from picloud.events import types as t
from picloud.projections import Projector, rebuild

META = Metadata(actor="bench", node="bench")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def requested(iid: str) -> t.Event:
    return t.InvocationRequested(
        invocation_id=iid,
        script="hello",
        version=1,
        trigger="http",
        request={"method": "GET", "path": "/", "headers": {}},
        event={"type": "http", "id": iid},
    )


def succeeded(iid: str) -> t.Event:
    return t.InvocationSucceeded(
        invocation_id=iid,
        script="hello",
        version=1,
        response={"status": 200, "body": "hi"},
        logs=[],
        duration_ms=0.4,
        fuel_used=12,
        node="bench",
    )


async def run(url: str, n: int) -> None:
    pool = await create_pool(url, min_size=16, max_size=16)
    try:
        # 1. sequential appends, each its own transaction (commit included)
        lat = []
        async with pool.connection() as conn:
            for _ in range(n):
                iid = str(uuid.uuid4())
                t0 = time.perf_counter()
                await append(
                    conn, f"invocation-{iid}", [requested(iid)], expected_version=0, metadata=META
                )
                lat.append((time.perf_counter() - t0) * 1000)
        print(
            f"append, sequential (1 event + commit): p50 {pct(lat, 0.5):.2f} ms, "
            f"p99 {pct(lat, 0.99):.2f} ms"
        )

        # 2. 16 concurrent writers, requested + succeeded in separate transactions
        async def writer(k: int) -> None:
            async with pool.connection() as conn:
                for _ in range(k):
                    iid = str(uuid.uuid4())
                    await append(
                        conn,
                        f"invocation-{iid}",
                        [requested(iid)],
                        expected_version=0,
                        metadata=META,
                    )
                    await append(
                        conn,
                        f"invocation-{iid}",
                        [succeeded(iid)],
                        expected_version=1,
                        metadata=META,
                    )

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(n // 16) for _ in range(16)))
        dt = time.perf_counter() - t0
        total = 2 * 16 * (n // 16)
        print(f"append, 16 concurrent writers: {total / dt:.0f} appends/s ({total} in {dt:.2f} s)")

        # 3. read_all
        async with pool.connection() as conn:
            t0 = time.perf_counter()
            after, count = 0, 0
            while batch := await read_all(conn, after=after, limit=1000):
                count += len(batch)
                after = batch[-1].position
            dt = time.perf_counter() - t0
        print(f"read_all: {count / dt:.0f} events/s ({count} events)")

        # 4. projector catch-up on the backlog
        projector = Projector(url, batch=500)
        t0 = time.perf_counter()
        task = asyncio.create_task(projector.run())
        await projector.wait_for(after, timeout=300)
        dt = time.perf_counter() - t0
        print(f"projector catch-up: {count / dt:.0f} events/s ({count} events, incl. start)")

        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        # 2b. the same with a projector running: how many events share a batch
        projector = Projector(url)
        task = asyncio.create_task(projector.run())
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT coalesce(max(position), 0) FROM events")
            row = await cur.fetchone()
            await projector.wait_for(row[0] if row else 0, timeout=300)  # the backlog first
        base_batches, base_events = projector.batches, projector.events
        t0 = time.perf_counter()
        await asyncio.gather(*(writer(n // 16) for _ in range(16)))
        dt = time.perf_counter() - t0
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT max(position) FROM events")
            row = await cur.fetchone()
            await projector.wait_for(row[0] if row else 0, timeout=300)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        batches = projector.batches - base_batches
        events = projector.events - base_events
        print(
            f"append, 16 writers + live projector: {total / dt:.0f} appends/s; projector: "
            f"{events} events in {batches} batches ({events / max(batches, 1):.1f}/batch)"
        )

        # 5. live lag: append -> visible in the read model, sequential
        projector = Projector(url)
        task = asyncio.create_task(projector.run())
        await asyncio.sleep(0.3)
        lag = []
        async with pool.connection() as conn:
            for _ in range(min(n, 500)):
                iid = str(uuid.uuid4())
                t0 = time.perf_counter()
                [rec] = await append(
                    conn, f"invocation-{iid}", [requested(iid)], expected_version=0, metadata=META
                )
                await projector.wait_for_event(rec, timeout=10)
                lag.append((time.perf_counter() - t0) * 1000)
        print(
            f"append -> projected (read-after-write): p50 {pct(lag, 0.5):.2f} ms, "
            f"p99 {pct(lag, 0.99):.2f} ms"
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        # 6. rebuild, 7. verify
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            t0 = time.perf_counter()
            result = await rebuild(conn)
            dt = time.perf_counter() - t0
            print(
                f"rebuild: {result.events / dt:.0f} events/s ({result.events} events, {dt:.2f} s)"
            )
            t0 = time.perf_counter()
            report = await verify(conn)
            dt = time.perf_counter() - t0
            print(f"audit verify: {report.events / dt:.0f} events/s, ok={report.ok}")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="picloud-bench-store-") as tmp:
        os.chmod(tmp, 0o755)
        settings = load_settings(home=Path(tmp) / "home")
        with open_database(settings) as db:
            url = db.url
            if not db.embedded:  # an external server: use a database of our own
                name = f"picloud_bench_{os.getpid()}"
                with psycopg.connect(url, autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
                from picloud.database import with_database

                url = with_database(url, name)
            migrate(url)
            asyncio.run(run(url, args.n))


if __name__ == "__main__":
    main()
