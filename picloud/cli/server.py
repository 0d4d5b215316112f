"""Server-side commands: ``picloud up`` (runtime); ``db``, ``projections``, ``audit verify``
(data). Each command lives in its own ``_register_*`` and ``cmd_*`` pair."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    _register_up(subparsers)


# -- up (runtime) ---------------------------------------------------------------------------
def _register_up(subparsers: Any) -> None:
    p = subparsers.add_parser("up", help="start every role of PiCloud on this machine")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--node", default=None, help="this node's name (default: the host name)")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL URL (default: $PICLOUD_DATABASE_URL, else embedded)")
    p.add_argument("--roles", default="ingress,worker,scheduler,projector",
                   help="comma-separated roles this node carries")
    p.add_argument("--concurrency", type=int, default=4, help="invocations run at once")
    p.set_defaults(handler=cmd_up)


def _say(message: str) -> None:
    print(f"picloud: {message}", file=sys.stderr, flush=True)


def admin_token(home: Path, configured: str | None) -> tuple[str, str | None]:
    """(token, where it was printed from): the configured one, or stored under ``home``.

    A generated token is written to ``home/admin.token`` with mode 0600 and reported once.
    """
    if configured:
        return configured, None
    path = home / "admin.token"
    if path.exists():
        return path.read_text().strip(), None
    home.mkdir(parents=True, exist_ok=True)
    token = "pc_admin_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, str(path)


def cmd_up(args: argparse.Namespace) -> int:
    from picloud.config import load_settings
    from picloud.database import migrate, open_database
    from picloud.workers.logs import configure_logging

    overrides: dict[str, Any] = {}
    for key in ("host", "port", "node", "database_url"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    settings = load_settings(**overrides)
    configure_logging()
    started = time.perf_counter()
    home = Path(settings.home)
    _say(f"home {home.resolve()}")
    if settings.database_url is None:
        _say("starting the embedded PostgreSQL...")
    with open_database(settings) as db:
        _say(f"database ready ({time.perf_counter() - started:.1f} s); applying migrations...")
        migrate(db.url)
        token, generated = admin_token(home, settings.admin_token)
        if generated:
            _say(f"generated the admin token (stored in {generated}, mode 0600):")
            print(token, flush=True)
        roles = [r.strip() for r in args.roles.split(",") if r.strip()]
        settings = load_settings(**overrides, admin_token=token)
        profile = os.environ.get("PICLOUD_PROFILE")
        if not profile:
            return asyncio.run(_run_node(settings, db.url, roles, args.concurrency, started))
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            return asyncio.run(_run_node(settings, db.url, roles, args.concurrency, started))
        finally:
            profiler.disable()
            profiler.dump_stats(profile)


async def _run_node(settings: Any, url: str, roles: list[str], concurrency: int,
                    started: float) -> int:
    from picloud.ingress.node import Node

    node = Node(settings, url, roles=roles, concurrency=concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    serving: asyncio.Task[None] | None = None
    if "ingress" in roles:
        serving = asyncio.create_task(node.serve(settings.host, settings.port))
        await asyncio.sleep(0.05)
        _say(f"roles {', '.join(roles)} on node {settings.node}")
        _say(f"ready in {time.perf_counter() - started:.1f} s: "
             f"http://{settings.host}:{settings.port}  (Ctrl-C stops)")
    else:
        _say(f"roles {', '.join(roles)} on node {settings.node}: ready")
    waiters = [asyncio.create_task(stop.wait())]
    if serving is not None:
        waiters.append(serving)
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    _say("stopping: finishing in-flight invocations...")
    await node.stop()
    if serving is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
    _say("stopped")
    return 0
