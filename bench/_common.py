"""Shared by the benchmarks: start ``picloud up`` in a subprocess, a small HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def picloud_up(home: Path | None = None, extra_env: dict[str, str] | None = None,
               args: list[str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str,
                                                                 Path]]:
    """Runs ``picloud up`` on a free port; yields (process, base URL, home)."""
    tmp = None
    if home is None:
        tmp = tempfile.mkdtemp(prefix="picloud-bench-")
        home = Path(tmp) / "home"
    port = free_port()
    env = {**os.environ, "PICLOUD_HOME": str(home), "PICLOUD_ADMIN_TOKEN": TOKEN,
           **(extra_env or {})}
    log = open(home.parent / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "picloud", "up", "--port", str(port), *(args or [])],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("picloud up exited:\n" + (home.parent / "up.log").read_text())
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("picloud up did not become ready")
            time.sleep(0.1)
        yield proc, url, home
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)


class Conn:
    """One keep-alive HTTP/1.1 connection; just enough to time requests cheaply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        chunked = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.lower() == "content-length":
                length = int(v)
            elif k.lower() == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
            return status, body
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def sequential(host: str, port: int, path: str, n: int) -> tuple[list[float], int]:
    conn = await Conn.open(host, port)
    times: list[float] = []
    failed = 0
    for _ in range(n):
        t = time.perf_counter()
        status, _ = await conn.get(path)
        times.append((time.perf_counter() - t) * 1000)
        failed += status >= 400
    conn.close()
    return times, failed


async def concurrent(host: str, port: int, path: str, clients: int,
                     seconds: float) -> tuple[int, int, float, list[float]]:
    conns = [await Conn.open(host, port) for _ in range(clients)]
    done = 0
    failed = 0
    times: list[float] = []
    stop = time.perf_counter() + seconds

    async def run(c: Conn) -> None:
        nonlocal done, failed
        while time.perf_counter() < stop:
            t = time.perf_counter()
            status, _ = await c.get(path)
            times.append((time.perf_counter() - t) * 1000)
            done += 1
            failed += status >= 400

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return done, failed, elapsed, times


class CpuMeter:
    """CPU time (user + system, from /proc) of a ``picloud up`` process tree and of the
    PostgreSQL server under ``pgdata`` (its backends), per request, over a window. Linux only:
    elsewhere it reports nothing."""

    def __init__(self, root_pid: int, pgdata: Path) -> None:
        self.root_pid = root_pid
        self.pgdata = pgdata
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.before: dict[int, tuple[str, float]] = {}
        self.per_request: dict[str, float] = {}
        self.wall = 0.0
        self.requests = 0

    def _stat(self, pid: int) -> tuple[int, float]:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick

    def _postmaster(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None  # an external server: not measured

    def _sample(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        postmaster = self._postmaster()
        if not Path("/proc").is_dir():
            return out
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    parents[int(entry.name)], times[int(entry.name)] = self._stat(int(entry.name))
        for pid, cpu in times.items():
            if pid == self.root_pid:
                out[pid] = ("picloud up (HTTP, projector, scheduler)", cpu)
            elif parents.get(pid) == self.root_pid:
                out[pid] = ("worker process(es)", cpu)
            elif postmaster is not None and postmaster in (pid, parents.get(pid)):
                out[pid] = ("PostgreSQL", cpu)
        return out

    def start(self) -> None:
        self.before = self._sample()
        self.wall = time.perf_counter()

    def stop(self, requests: int) -> None:
        after = self._sample()
        self.wall = time.perf_counter() - self.wall
        self.requests = max(1, requests)
        totals: dict[str, float] = {}
        for pid, (group, cpu) in after.items():
            totals[group] = totals.get(group, 0.0) + cpu - self.before.get(pid, (group, 0.0))[1]
        self.per_request = totals

    def report(self) -> list[str]:
        if not self.per_request:
            return ["(not measured: needs Linux /proc)"]
        lines = []
        total = 0.0
        for group, cpu in sorted(self.per_request.items(), key=lambda kv: -kv[1]):
            total += cpu
            lines.append(f"{group:<42} {cpu * 1000 / self.requests:6.2f} ms"
                         f"   ({cpu / self.wall * 100:5.1f}% of one core)")
        lines.append(f"{'all of them':<42} {total * 1000 / self.requests:6.2f} ms"
                     f"   ({total / self.wall * 100:5.1f}% of one core, {os.cpu_count()} cores)")
        return lines


def stats_line(label: str, times: list[float]) -> str:
    return (f"{label:<28} p50 {percentile(times, 50):7.2f} ms   p99 {percentile(times, 99):7.2f} ms"
            f"   mean {sum(times) / max(1, len(times)):7.2f} ms")


__all__ = ["Any"]
