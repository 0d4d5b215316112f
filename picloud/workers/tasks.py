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
from typing import Any, LiteralString

import msgspec
import psycopg
import psycopg_pool
import structlog
from procrastinate import App, PsycopgConnector, jobs, manager
from procrastinate.job_context import JobContext
from psycopg.types.json import Jsonb

from picloud.events import store, types
from picloud.workers import responses

log = structlog.get_logger("picloud.invoke")

INVOKE_TASK = "picloud.invoke"
FINISH_JOB = "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)"
INLINE_MAX_BYTES = 8000  # a request event up to this size also travels in the job's args
REPLY_MAX_BYTES = 7000  # NOTIFY payloads are limited to 8000 bytes

# The result event, the job's completion and the reply to the waiting ingress in ONE statement:
# one round trip and one (implicit) transaction. Evaluation order: the append (a data-modifying
# CTE), then the reply NOTIFY (only if the append added a row) with the transaction-local mark
# ``picloud.replied`` that tells the job-done trigger not to send its id-only NOTIFY too (it
# does when no reply went: a duplicate, or a result too big for a NOTIFY), then finish_job.
# ``set_config(..., true)`` is transaction-local: with async commit this transaction does not
# wait for its WAL flush (see ``Runtime.async_commit``).
RECORD_RESULT: LiteralString = (
    "WITH appended AS (" + store.append_one_sql() + ")\n"
    "SELECT set_config('synchronous_commit',\n"
    "                  coalesce(%(sync)s, current_setting('synchronous_commit')), true),\n"
    "       (SELECT position FROM appended),\n"
    "       (SELECT pg_notify('picloud_job_done', %(reply)s) FROM appended\n"
    "        WHERE %(reply)s::text IS NOT NULL),\n"
    "       (SELECT set_config('picloud.replied', 'on', true) FROM appended\n"
    "        WHERE %(reply)s::text IS NOT NULL),\n"
    "       procrastinate_finish_job_v1(%(job_id)s, 'succeeded', false)"
)


# The request of an invocation in ONE statement (one round trip, one implicit transaction when
# the connection is idle in autocommit): ``invocation.requested`` is appended (a new stream:
# expected version 0) and, only if it was, the invoke job is deferred with procrastinate's own
# SQL function, as ``defer_async`` does (tests/test_perf_hot_path.py checks the two jobs are
# alike). ``set_config(..., true)`` is transaction-local: see ``request_and_defer``.
REQUEST_AND_DEFER: LiteralString = (
    "WITH appended AS (" + store.append_one_sql() + "),\n"
    "job AS (\n"
    "    SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(\n"
    "        %(queue)s::varchar, %(task)s::varchar, 0, NULL::text, NULL::text,\n"
    "        %(args)s::jsonb, NULL::timestamptz)]::procrastinate_job_to_defer_v1[])) AS id\n"
    "    FROM appended\n"
    ")\n"
    "SELECT set_config('synchronous_commit',\n"
    "                  coalesce(%(sync)s, current_setting('synchronous_commit')), true),\n"
    "       job.id FROM appended, job"
)


async def request_and_defer(conn: Any, stream: str, event: Any, meta: store.Metadata, *,
                            queue: str, args: dict[str, Any], async_commit: bool) -> int:
    """Appends ``event`` as the first of ``stream`` and defers its invoke job with ``args``,
    atomically, in one round trip; returns the job's id. ``async_commit``: the commit does not
    wait for its WAL flush (only when the caller is in its own implicit transaction, or wants
    its whole transaction so). Raises ``store.ConcurrencyError`` if the stream exists."""
    params = {**store.append_one_params(stream, event, 0, meta),
              "queue": queue, "task": INVOKE_TASK, "args": Jsonb(args),
              "sync": "off" if async_commit else None}
    try:
        cur = await conn.execute(REQUEST_AND_DEFER, params)
    except psycopg.errors.UniqueViolation as exc:
        raise store.ConcurrencyError(stream, 0) from exc
    row = await cur.fetchone()
    if row is None:
        raise store.ConcurrencyError(stream, 0)
    return int(row[1])


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


def inline_request(requested: dict[str, Any]) -> dict[str, Any]:
    """The invoke job's extra arguments: the ``invocation.requested`` data itself when it is
    small, so that the worker does not read it back from the log (one round trip less). The
    log stays the source of truth: the job carries a copy of what was appended in the same
    transaction."""
    if len(msgspec.json.encode(requested)) > INLINE_MAX_BYTES:
        return {}
    return {"requested": requested}


# procrastinate's fetch_job query, committed asynchronously: losing a fetch (a crash before its
# WAL flush) only gives the job back to the queue, and any later commit that waits for its
# flush (the job's result, sync mode) flushes the fetch with it. So no fetch waits for fsync.
FETCH_JOB_ASYNC_COMMIT: LiteralString = (
    "SELECT set_config('synchronous_commit', 'off', true) AS async_commit,"
    " id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name,"
    " attempts, worker_id"
    " FROM procrastinate_fetch_job_v2(%(queues)s::varchar[], %(worker_id)s)"
)


class JobManager(manager.JobManager):
    """procrastinate's job manager, whose fetch does not wait for its WAL flush."""

    async def fetch_job(self, queues: Any, worker_id: int) -> jobs.Job | None:
        row = await self.connector.execute_query_one_async(
            query=FETCH_JOB_ASYNC_COMMIT, queues=queues, worker_id=worker_id)
        row.pop("async_commit", None)
        if row["id"] is None:
            return None
        return jobs.Job.from_row(row)


def create_app(pool: psycopg_pool.AsyncConnectionPool | None = None) -> App:
    """A procrastinate app with PiCloud's tasks. Open it with ``app.open_async(pool)``."""
    app = App(connector=PsycopgConnector())
    app.job_manager = JobManager(app.connector)
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


def reply_payload(job_id: int, event: Any) -> str | None:
    """The NOTIFY that hands the result to the waiting ingress (so that it does not read it
    back), or ``None`` when it would not fit in a NOTIFY (the ingress then reads the log)."""
    payload = msgspec.json.encode({"job_id": job_id, "status": "succeeded",
                                   "result": {"type": event.TYPE,
                                              "data": types.encode(event)}}).decode()
    return payload if len(payload.encode()) <= REPLY_MAX_BYTES else None


async def record_result(conn: Any, stream: str, event: Any, meta: store.Metadata, job_id: int,
                        *, async_commit: bool = False) -> bool:
    """Appends the result event (expected version 1) and completes the job, atomically, in one
    round trip; ``False`` when another execution had already recorded the result (the job is
    then completed without a second event). ``conn`` must be in autocommit mode and idle."""
    params = {**store.append_one_params(stream, event, 1, meta),
              "sync": "off" if async_commit else None,
              "reply": reply_payload(job_id, event), "job_id": job_id}
    try:
        cur = await conn.execute(RECORD_RESULT, params)
        row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        # A concurrent execution committed the result meanwhile: nothing was done.
        await conn.execute(FINISH_JOB, (job_id,))
        return False
    # No position: the stream had moved on (the result was there); the job was completed.
    return row is not None and row[1] is not None


async def invoke(context: JobContext, invocation_id: str,
                 requested: dict[str, Any] | None = None, sync_result: bool = False) -> None:
    """Runs one invocation. ``requested``: its request event's data (else read from the log);
    ``sync_result``: its caller waits for the answer, so the result's commit waits for its WAL
    flush (which makes the request, committed without waiting, durable too)."""
    worker = context.additional_context["worker"]
    runtime: Runtime = worker.runtime
    job_id = context.job.id
    assert job_id is not None
    stream = f"invocation-{invocation_id}"
    bound = log.bind(invocation_id=invocation_id, job_id=job_id, node=runtime.node)
    source = None
    if requested is not None and requested.get("invocation_id") == invocation_id:
        # The request came with the job: no read. A result recorded already (a retry) shows
        # as a conflict when recording, and nothing is recorded twice.
        key = (requested["script"], int(requested["version"]))
        source = runtime.sources.get(key)
    else:
        requested = None
    already = False  # a result is recorded already (a retry): complete the job only
    if source is None:
        async with runtime.pool.connection() as conn:
            if requested is None:
                events = await store.read_stream(conn, stream)
                if not events:
                    bound.error("invocation not found")
                    return None  # the worker marks the job failed
                requested = events[0].data
                already = len(events) > 1
            if not already:
                source = await runtime.source(conn, requested["script"],
                                              int(requested["version"]))
    assert requested is not None
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
        if event is None:
            await conn.execute(FINISH_JOB, (job_id,))
        elif not await record_result(conn, stream, event, meta, job_id,
                                     async_commit=runtime.async_commit and not sync_result):
            # Another execution recorded the result first: this job was completed only.
            outcome = "duplicate"
    worker.completed_by_task.add(job_id)
    elapsed = time.perf_counter() - started
    sandbox_ms = duration_ms if event is not None else 0.0
    for callback in runtime.on_result:
        callback(script, outcome, elapsed, sandbox_ms)
    report = bound.debug if outcome == "succeeded" else bound.info
    report("invocation done", script=script, version=version, outcome=outcome,
           ms=round(elapsed * 1000, 2))
    return None
