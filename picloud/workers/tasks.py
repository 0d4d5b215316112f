"""The procrastinate app and the invoke task.

The invoke task runs one invocation in the sandbox and, in one transaction, appends
``invocation.succeeded`` or ``invocation.failed`` and completes its own job. The result is
appended with the invocation stream's expected version, so executing the same invocation
twice (a retry after a crash) records one result: the second append conflicts and the job
is completed without a second event.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg_pool
import structlog
from procrastinate import App, PsycopgConnector
from procrastinate.job_context import JobContext

from picloud.events import store, types
from picloud.workers import responses

log = structlog.get_logger("picloud.invoke")

INVOKE_TASK = "picloud.invoke"
FINISH_JOB = "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)"


@dataclass
class Runtime:
    """What the invoke task needs from its process."""

    pool: psycopg_pool.AsyncConnectionPool
    node: str
    async_commit: bool = False
    sources: dict[tuple[str, int], str] = field(default_factory=dict)
    on_result: list[Any] = field(default_factory=list)  # (script, outcome, seconds, sandbox_ms)

    async def source(self, conn: Any, script: str, version: int) -> str:
        key = (script, version)
        cached = self.sources.get(key)
        if cached is not None:
            return cached
        for event in await store.read_stream(conn, f"script-{script}"):
            if event.type == "script.version_uploaded":
                self.sources[(script, int(event.data["version"]))] = event.data["source"]
        if key not in self.sources:
            raise LookupError(f"script {script!r} has no version {version}")
        return self.sources[key]


def create_app(pool: psycopg_pool.AsyncConnectionPool | None = None) -> App:
    """A procrastinate app with PiCloud's tasks. Open it with ``app.open_async(pool)``."""
    app = App(connector=PsycopgConnector())
    app.task(name=INVOKE_TASK, pass_context=True, queue="shared")(invoke)
    return app


def _script_event(requested: dict[str, Any]) -> dict[str, Any]:
    return dict(requested.get("event") or {})


def default_limits() -> Any:
    """The sandbox's limits, with ``PICLOUD_SCRIPT_FUEL`` / ``PICLOUD_SCRIPT_TIMEOUT_S`` /
    ``PICLOUD_SCRIPT_MEMORY_BYTES`` overriding the defaults when set."""
    from picloud.workers.sandbox import Limits

    overrides: dict[str, Any] = {}
    for field_name, var, kind in (("fuel", "PICLOUD_SCRIPT_FUEL", int),
                                  ("timeout_s", "PICLOUD_SCRIPT_TIMEOUT_S", float),
                                  ("memory_bytes", "PICLOUD_SCRIPT_MEMORY_BYTES", int)):
        value = os.environ.get(var)
        if value:
            overrides[field_name] = kind(value)
    return Limits(**overrides)


async def _run_script(source: str, requested: dict[str, Any]) -> Any:
    from picloud.workers.sandbox import get_engine

    variables: dict[str, Any] = {"event": _script_event(requested)}
    request = responses.request_to_script(requested.get("request"))
    if request is not None:
        variables["request"] = request
    engine = get_engine()
    return await asyncio.to_thread(engine.run, source, vars=variables,
                                   limits=default_limits())


def _error_dict(error: Any) -> dict[str, Any]:
    """The recorded error: ``{kind, type, message, line, column}``. ``line`` and ``column`` are
    1-based integers, or ``None`` when the position is unknown (limits: the sandbox says 0)."""
    if error is None:
        return {"kind": "runtime", "type": "Error", "message": "unknown error",
                "line": None, "column": None}
    if isinstance(error, dict):
        return known_positions(dict(error))
    fields = ("kind", "type", "message", "line", "column")
    return known_positions({name: getattr(error, name, None) for name in fields})


def known_positions(error: dict[str, Any]) -> dict[str, Any]:
    """``error`` with a ``line``/``column`` that is not a positive integer made ``None``."""
    for key in ("line", "column"):
        value = error.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            error[key] = None
    return error


async def invoke(context: JobContext, invocation_id: str) -> None:
    worker = context.additional_context["worker"]
    runtime: Runtime = worker.runtime
    job_id = context.job.id
    assert job_id is not None
    stream = f"invocation-{invocation_id}"
    bound = log.bind(invocation_id=invocation_id, job_id=job_id, node=runtime.node)
    async with runtime.pool.connection() as conn:
        events = await store.read_stream(conn, stream)
        if not events:
            bound.error("invocation not found")
            return None  # the worker marks the job failed
        requested = events[0].data
        already = len(events) > 1
        source = None if already else await runtime.source(
            conn, requested["script"], int(requested["version"]))
    script, version = requested["script"], int(requested["version"])
    outcome = "duplicate"
    event: Any = None
    duration_ms = 0.0
    started = time.perf_counter()
    if source is not None:
        try:
            result = await _run_script(source, requested)
            ok, value = bool(result.ok), result.value
            logs = msgspec.to_builtins(list(result.logs or []))
            error = None if ok else _error_dict(result.error)
            duration_ms = float(result.duration_ms)
            fuel = int(result.fuel_used or 0)
        except Exception as exc:  # the sandbox itself failed: recorded as a failure
            bound.exception("sandbox failed")
            ok, value, logs, fuel = False, None, [], 0
            error = {"kind": "internal", "type": type(exc).__name__, "message": str(exc)}
            duration_ms = (time.perf_counter() - started) * 1000
        response: dict[str, Any] = {}
        if ok:
            try:
                response = responses.shape_response(value)
            except responses.ResponseError as exc:  # HTTP cannot carry it: a clear failure
                ok = False
                error = {"kind": "runtime", "type": "ResponseError", "message": str(exc),
                         "line": None, "column": None}
        if ok:
            outcome = "succeeded"
            event = types.InvocationSucceeded(
                invocation_id=invocation_id, script=script, version=version,
                response=response, logs=logs,
                duration_ms=duration_ms, fuel_used=fuel, node=runtime.node)
        else:
            outcome = "failed"
            event = types.InvocationFailed(
                invocation_id=invocation_id, script=script, version=version,
                error=error or {}, logs=logs, duration_ms=duration_ms, fuel_used=fuel,
                node=runtime.node)
    meta = store.Metadata(correlation_id=invocation_id, node=runtime.node)
    async with runtime.pool.connection() as conn:
        try:
            async with conn.transaction():
                if runtime.async_commit:
                    await conn.execute("SET LOCAL synchronous_commit TO off")
                if event is not None:
                    await store.append(conn, stream, [event], expected_version=1, metadata=meta)
                await conn.execute(FINISH_JOB, (job_id,))
        except store.ConcurrencyError:
            # Another execution recorded the result first: complete this job only.
            outcome = "duplicate"
            await conn.execute(FINISH_JOB, (job_id,))
    worker.completed_by_task.add(job_id)
    elapsed = time.perf_counter() - started
    sandbox_ms = duration_ms if event is not None else 0.0
    for callback in runtime.on_result:
        callback(script, outcome, elapsed, sandbox_ms)
    report = bound.debug if outcome == "succeeded" else bound.info
    report("invocation done", script=script, version=version, outcome=outcome,
           ms=round(elapsed * 1000, 2))
    return None
