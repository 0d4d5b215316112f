"""Server-side commands: ``picloud up`` and ``picloud db migrate``, the two that work without a
running server (on the database directly). Everything else speaks the API (``client.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from picloud.config import Settings, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_up(subparsers)
    register_db(subparsers)


def _database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="PiCloud's home folder (PICLOUD_HOME, default ./.picloud)")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (PICLOUD_DATABASE_URL); without it, the embedded database",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(home=args.home, database_url=args.database_url)


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        print(text)


# --- picloud db migrate -----------------------------------------------------------------------


def register_db(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    migrate_parser = db_sub.add_parser(
        "migrate", help="upgrade the database schema to the latest revision"
    )
    _database_options(migrate_parser)
    migrate_parser.set_defaults(handler=cmd_db_migrate)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from picloud.database import current_revision, migrate, open_database

    with open_database(_settings(args)) as db:
        before = current_revision(db.url)
        migrate(db.url)
        after = current_revision(db.url)
    _print(
        args,
        {"from": before, "to": after},
        f"database at revision {after}" + ("" if before == after else f" (was {before})"),
    )
    return 0


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
    p.add_argument("--worker-processes", type=int, default=None, metavar="N",
                   help="run the worker role in N child processes, restarted if they exit "
                        "(0: in this process; default 1 with two cores or more, else 0)")
    p.set_defaults(handler=cmd_up)


WORKER_CHILD_ENV = "PICLOUD_WORKER_CHILD"  # set in the worker processes `up` starts


def _say(message: str) -> None:
    """Progress for the person who ran `picloud up`; its worker processes stay quiet (the
    parent reports their exits)."""
    if not os.environ.get(WORKER_CHILD_ENV):
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
        elif settings.admin_token:
            _say("admin token: the one PICLOUD_ADMIN_TOKEN gives")
        else:
            _say(f"admin token: in {(home / 'admin.token').resolve()} (generated on first start)")
        roles = [r.strip() for r in args.roles.split(",") if r.strip()]
        settings = load_settings(**overrides, admin_token=token)
        if args.worker_processes is None:
            args.worker_processes = default_worker_processes(roles)
        metrics_dir = (_share_metrics(home) if args.worker_processes > 0 and "worker" in roles
                       else None)
        try:
            return _serve(settings, db.url, roles, args, started)
        finally:
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(settings: Any, url: str, roles: list[str], args: argparse.Namespace,
           started: float) -> int:
    """Runs the node until it stops; under cProfile when ``PICLOUD_PROFILE`` names a file."""
    def run() -> int:
        return asyncio.run(_run_node(settings, url, roles, args.concurrency, started,
                                     args.worker_processes))

    profile = os.environ.get("PICLOUD_PROFILE")
    if not profile:
        return run()
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return run()
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


def default_worker_processes(roles: list[str]) -> int:
    """One worker process beside the HTTP process where there are two cores or more: the
    Python of the two halves then runs in parallel (measured by bench/e2e.py). A node
    without HTTP runs its worker itself."""
    if "worker" not in roles or "ingress" not in roles:
        return 0
    return 1 if (os.cpu_count() or 1) >= 2 else 0


def _share_metrics(home: Path) -> Path | None:
    """Worker child processes count invocations too: prometheus_client's multiprocess mode,
    in a fresh folder of this process's (removed on exit), lets /metrics add them up. Set
    before prometheus_client is first imported; children inherit it. A folder the user set in
    PROMETHEUS_MULTIPROC_DIR is theirs to manage."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = home / "metrics" / str(os.getpid())
    for old in path.parent.glob("*") if path.parent.is_dir() else ():
        if not old.name.isdigit() or not _alive(int(old.name)):  # left by a killed `up`
            shutil.rmtree(old, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the parent dies, even by SIGKILL (Linux; elsewhere
    an orphaned worker goes on serving its queues until stopped)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _forget_process_metrics(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid)


class WorkerProcess:
    """A child process carrying this node's worker role (same node name and queues), started
    again if it exits before :meth:`stop` (at most once a second)."""

    def __init__(self, settings: Any, url: str, concurrency: int) -> None:
        self.cmd = [sys.executable, "-m", "picloud", "up", "--roles", "worker",
                    "--node", settings.node, "--database-url", url,
                    "--concurrency", str(concurrency), "--worker-processes", "0"]
        self.env = {**os.environ, "PICLOUD_HOME": str(settings.home), WORKER_CHILD_ENV: "1"}
        self.env.pop("PICLOUD_PROFILE", None)
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name="picloud-worker-process")

    async def _keep_running(self) -> None:
        while not self.stopping:
            began = time.monotonic()
            # Its own session: a Ctrl-C at the terminal reaches the parent only, which stops
            # HTTP first and then its children, in order.
            self.proc = await asyncio.create_subprocess_exec(*self.cmd, env=self.env,
                                                             preexec_fn=_die_with_parent,
                                                             start_new_session=True)
            code = await self.proc.wait()
            if self.stopping:
                return
            self.restarts += 1
            _forget_process_metrics(self.proc.pid)
            _say(f"worker process {self.proc.pid} exited ({code}); starting another")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))

    async def stop(self) -> None:
        """SIGTERM: the child finishes its running invocations, then exits."""
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        if self._task is not None:
            await self._task
        if self.proc is not None and self.proc.returncode is None:
            await self.proc.wait()


async def _run_node(settings: Any, url: str, roles: list[str], concurrency: int,
                    started: float, worker_processes: int = 0) -> int:
    from picloud.ingress.node import Node

    children: list[WorkerProcess] = []
    local_roles = list(roles)
    if worker_processes > 0 and "worker" in roles:
        local_roles.remove("worker")
        children = [WorkerProcess(settings, url, concurrency) for _ in range(worker_processes)]
        for child in children:
            child.start()
    node = Node(settings, url, roles=local_roles, concurrency=concurrency,
                local_worker="worker" in roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    def on_signal() -> None:
        for child in children:
            child.stopping = True  # an exit from now on is not restarted
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await node.start()
    serving: asyncio.Task[None] | None = None
    server_file: Path | None = None
    if "ingress" in roles:
        serving = asyncio.create_task(node.serve(settings.host, settings.port))
        await asyncio.sleep(0.05)
        where = (f" (the worker in {len(children)} child process"
                 f"{'es' if len(children) > 1 else ''})" if children else "")
        _say(f"roles {', '.join(roles)} on node {settings.node}{where}")
        _say(f"ready in {time.perf_counter() - started:.1f} s: "
             f"http://{settings.host}:{settings.port}  (Ctrl-C stops)")
        server_file = write_server_file(Path(settings.home), settings.host, settings.port)
    else:
        _say(f"roles {', '.join(roles)} on node {settings.node}: ready")
    waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
    if serving is not None:
        waiters.append(serving)
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    _say("stopping: finishing in-flight requests and invocations...")
    # HTTP first (granian finishes the requests in flight, whose invocations still run),
    # then the scheduler, the worker (waits for its running jobs) and the rest.
    from picloud.ingress.app import end_follows

    end_follows(node.listener)  # long polls (logs -f, events tail) answer now, not at their end
    await node.stop_http()
    if serving is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(serving, settings.invoke_timeout_s + 5)
    await asyncio.gather(*(child.stop() for child in children))
    await node.stop()
    if server_file is not None:
        remove_server_file(server_file)
    _say("stopped")
    return 0


SERVER_FILE = "server.json"


def write_server_file(home: Path, host: str, port: int) -> Path:
    """``home/server.json``: where this node's API answers, for the CLI on this machine when
    ``PICLOUD_URL`` is not set. Removed on a clean stop."""
    connect = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in connect and not connect.startswith("["):
        connect = f"[{connect}]"
    path = home / SERVER_FILE
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": f"http://{connect}:{port}", "pid": os.getpid()}) + "\n")
    tmp.replace(path)
    return path


def remove_server_file(path: Path) -> None:
    """Removes ``path`` if this process wrote it (another ``up`` may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
