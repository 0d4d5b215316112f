"""The litestar app: public invoke endpoints and the control-plane API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from litestar import HttpMethod, Litestar, Request, Response, route
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from picloud.events import store, types
from picloud.ingress import auth
from picloud.ingress.directory import current_version
from picloud.ingress.services import SHARED_QUEUE, Services, now, plain, valid_name
from picloud.ingress.waiter import Reply
from picloud.projections import queries
from picloud.workers import cron, responses
from picloud.workers.tasks import known_positions

log = structlog.get_logger("picloud.ingress")

# Every method reaches the script (PICLOUD.md: ANY /fn/...). HEAD runs it and sends no body;
# OPTIONS is the script's too (declaring it keeps litestar from answering it by itself).
INVOKE_METHODS: list[HttpMethod] = [
    HttpMethod.GET, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE,
    HttpMethod.HEAD, HttpMethod.OPTIONS]


class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response[Any]:
    return Response(content=msgspec.json.encode(body), status_code=status,
                    media_type="application/json", headers=dict(headers or {}))


def _services(request: Request[Any, Any, Any]) -> Services:
    return request.app.state["services"]  # type: ignore[no-any-return]


# -- errors ---------------------------------------------------------------------------------
def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _json(exc.body, exc.status)


def _auth_error(request: Request[Any, Any, Any], exc: auth.AuthError) -> Response[Any]:
    headers = {"www-authenticate": "Bearer"} if exc.status == 401 else {}
    return _json({"error": exc.message}, exc.status, headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _json({"error": exc.detail}, exc.status_code, exc.headers)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", path=request.url.path, exc_info=exc)
    return _json({"error": "internal error"}, HTTP_500_INTERNAL_SERVER_ERROR)


async def _principal(request: Request[Any, Any, Any], scope: str) -> auth.Principal:
    svc = _services(request)
    header = request.headers.get("authorization")
    async with svc.pool.connection() as conn:
        principal = await auth.authenticate(conn, header, svc.admin_hash)
    if not principal.allows(scope):
        raise auth.AuthError(403, f"this token lacks the {scope!r} scope")
    return principal


def _meta(principal: auth.Principal, svc: Services) -> store.Metadata:
    return store.Metadata(actor=principal.actor, node=svc.settings.node)


async def _body_json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad JSON", detail=str(exc)) from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _check_name(name: str, what: str = "script") -> None:
    if not valid_name(name):
        raise ApiError(400, f"bad {what} name {name!r}: lower-case letters, digits and '-', "
                            "starting with a letter or digit, at most 63")


def _field(row: Any, *names: str) -> Any:
    for name in names:
        if isinstance(row, Mapping):
            if name in row:
                return row[name]
        elif hasattr(row, name):
            return getattr(row, name)
    return None


# -- invoke ---------------------------------------------------------------------------------
def _query(request: Request[Any, Any, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        out[key] = value
    return out


async def _invoke(request: Request[Any, Any, Any], name: str, path: str) -> Response[Any]:
    svc = _services(request)
    started = time.perf_counter()
    if not valid_name(name):
        raise ApiError(404, f"no script named {name!r}")
    body = await request.body()
    headers = responses.strip_credentials({k.lower(): v for k, v in request.headers.items()})
    if not svc.from_trusted_proxy(request.client.host if request.client else None):
        headers = responses.strip_forwarding(headers)
    stored = responses.request_to_event(
        request.method, "/" + path if path else "", _query(request), headers, body)
    respond_async = "respond-async" in request.headers.get("prefer", "").lower()
    script = await svc.scripts.lookup(name)
    if script is None:
        raise ApiError(404, f"no script named {name!r}")
    if script.require_key:
        await _check_invoke_key(request, svc, name)
    version = script.version
    async with svc.pool.connection() as conn:
        inv_id, job_id, done = await svc.request_invocation(
            conn, script=name, version=version, trigger="http", request=stored,
            event_data={"method": request.method, "path": stored["path"]},
            wait=not respond_async)
    structlog.contextvars.bind_contextvars(invocation_id=inv_id)
    log.debug("invocation requested", script=name, version=version, job_id=job_id)
    if respond_async or done is None:
        return _json({"invocation_id": inv_id, "status_url": f"/api/invocations/{inv_id}"},
                     202, {"x-picloud-invocation": inv_id})
    try:
        await asyncio.wait_for(done, svc.settings.invoke_timeout_s)
    except TimeoutError:
        svc.waiter.forget(job_id)
        svc.metrics.invocations.labels(name, "timeout").inc()
        return _json({"invocation_id": inv_id,
                      "error": {"type": "timeout", "kind": "timeout",
                                "message": f"no answer within {svc.settings.invoke_timeout_s} s"
                                           "; the invocation is recorded when it ends"},
                      "status_url": f"/api/invocations/{inv_id}"},
                     504, {"x-picloud-invocation": inv_id})
    reply = done.result()
    result: Any
    if isinstance(reply, Reply):  # the completion NOTIFY carried the result
        result = reply.result
    else:
        async with svc.pool.connection() as conn:
            events = await store.read_stream(conn, f"invocation-{inv_id}")
        result = ({"type": events[-1].type, "data": events[-1].data}
                  if len(events) > 1 else None)
    svc.metrics.latency.labels(name).observe(time.perf_counter() - started)
    return _result_response(inv_id, result, head=request.method == "HEAD")


async def _check_invoke_key(request: Request[Any, Any, Any], svc: Services, name: str) -> None:
    """A script that requires a key answers only callers whose bearer token may invoke it."""
    header = request.headers.get("authorization")
    async with svc.pool.connection() as conn:
        principal = await auth.authenticate(conn, header, svc.admin_hash)
    if not principal.may_invoke(name):
        raise auth.AuthError(403, f"this token may not invoke {name!r}")


def _result_response(inv_id: str, result: dict[str, Any] | None,
                     head: bool = False) -> Response[Any]:
    """The HTTP answer for a result event ``{"type", "data"}`` (``None``: no result)."""
    headers = {"x-picloud-invocation": inv_id}
    if result is None:
        return _json({"invocation_id": inv_id,
                      "error": {"type": "internal", "kind": "internal",
                                "message": "the invocation ended without a result"}},
                     500, headers)
    if result["type"] == "invocation.failed":
        error = known_positions(dict(result["data"].get("error") or {}))
        return _json({"invocation_id": inv_id, "error": error}, 500, headers)
    response = result["data"]["response"]
    headers.update({k: v for k, v in (response.get("headers") or {}).items()
                    if k not in responses.FRAMING_HEADERS})
    headers["x-picloud-invocation"] = inv_id
    media = headers.pop("content-type", None)
    if media and media.startswith("text/") and "charset=utf-8" in media.lower():
        media = media.split(";", 1)[0]  # litestar adds "; charset=utf-8" to text types
    body = b"" if head else responses.response_body(response)
    return Response(content=body, status_code=response["status"], headers=headers,
                    media_type=media)


@route("/fn/{name:str}", http_method=INVOKE_METHODS, status_code=200)
async def invoke_root(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    return await _invoke(request, name, "")


@route("/fn/{name:str}/{path:path}", http_method=INVOKE_METHODS, status_code=200)
async def invoke_path(request: Request[Any, Any, Any], name: FromPath[str],
                      path: FromPath[str]) -> Response[Any]:
    return await _invoke(request, name, path.lstrip("/"))


# -- scripts --------------------------------------------------------------------------------
async def _source_of(request: Request[Any, Any, Any]) -> str:
    raw = await request.body()
    ctype = request.headers.get("content-type", "")
    if "json" in ctype:
        data = await _body_json(request)
        source = data.get("source")
        if not isinstance(source, str):
            raise ApiError(400, "the JSON body needs a string 'source'")
        return source
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "the script is not UTF-8 text") from exc


def _diagnostics(source: str) -> list[dict[str, Any]]:
    from picloud.workers.sandbox import get_engine

    found = get_engine().check(source)
    out = []
    for d in found or []:
        out.append({"line": _field(d, "line"), "column": _field(d, "column"),
                    "message": _field(d, "message")})
    return out


@route("/api/scripts/{name:str}", http_method=["PUT"], status_code=201)
async def put_script(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "write")
    svc = _services(request)
    _check_name(name)
    source = await _source_of(request)
    diagnostics = await asyncio.to_thread(_diagnostics, source)
    if diagnostics:
        return _json({"error": "syntax error", "diagnostics": diagnostics}, 422)
    digest = hashlib.sha256(source.encode()).hexdigest()
    stream = f"script-{name}"
    for _attempt in range(3):
        async with svc.pool.connection() as conn:
            try:
                async with conn.transaction():
                    events = await store.read_stream(conn, stream)
                    uploads = [e for e in events if e.type == "script.version_uploaded"]
                    current = _current_from_stream(events)
                    if current is not None and current[1] == digest:
                        return _json({"name": name, "version": current[0], "sha256": digest,
                                      "url": f"/fn/{name}"}, 200)
                    version = len(uploads) + 1
                    recorded = await store.append(
                        conn, stream,
                        [types.ScriptVersionUploaded(name=name, version=version, sha256=digest,
                                                     source=source)],
                        expected_version=len(events), metadata=_meta(principal, svc))
            except store.ConcurrencyError:
                continue
        await svc.wait_projected(recorded[-1])
        return _json({"name": name, "version": version, "sha256": digest,
                      "url": f"/fn/{name}"}, 201)
    raise ApiError(409, "concurrent uploads; try again")


def _current_from_stream(events: list[store.RecordedEvent]) -> tuple[int, str] | None:
    """(version, sha256) the script's stream says is current, None if deleted or empty."""
    shas: dict[int, str] = {}
    current: tuple[int, str] | None = None
    for e in events:
        if e.type == "script.version_uploaded":
            shas[int(e.data["version"])] = e.data["sha256"]
            current = (int(e.data["version"]), e.data["sha256"])
        elif e.type == "script.rolled_back":
            v = int(e.data["version"])
            current = (v, shas.get(v, ""))
        elif e.type == "script.deleted":
            current = None
    return current


@route("/api/scripts", http_method=["GET"], status_code=200)
async def list_scripts(request: Request[Any, Any, Any]) -> Response[Any]:
    await _principal(request, "read")
    async with _services(request).pool.connection() as conn:
        items = await queries.list_scripts(conn)
    return _json({"items": plain(items), "next_cursor": None})


@route("/api/scripts/{name:str}", http_method=["GET"], status_code=200)
async def get_script(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    await _principal(request, "read")
    async with _services(request).pool.connection() as conn:
        row = await queries.get_script(conn, name)
    if row is None:
        raise ApiError(404, f"no script named {name!r}")
    return _json(plain(row))


@route("/api/scripts/{name:str}/versions", http_method=["GET"], status_code=200)
async def list_versions(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    await _principal(request, "read")
    async with _services(request).pool.connection() as conn:
        items = await queries.list_versions(conn, name)
    if not items:
        raise ApiError(404, f"no script named {name!r}")
    return _json({"items": plain(items), "next_cursor": None})


async def _change_script(request: Request[Any, Any, Any], principal: auth.Principal, name: str,
                         event_for: Callable[[list[store.RecordedEvent]], types.Event]) -> None:
    """Appends ``event_for(the script's events)`` to an existing script's stream, as
    ``principal``, and waits until this node's read model has it."""
    svc = _services(request)
    async with svc.pool.connection() as conn, conn.transaction():
        events = await store.read_stream(conn, f"script-{name}")
        if _current_from_stream(events) is None:
            raise ApiError(404, f"no script named {name!r}")
        recorded = await store.append(conn, f"script-{name}", [event_for(events)],
                                      expected_version=len(events),
                                      metadata=_meta(principal, svc))
    await svc.wait_projected(recorded[-1])


@route("/api/scripts/{name:str}/rollback", http_method=["POST"], status_code=200)
async def rollback(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "write")
    version = (await _body_json(request)).get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ApiError(400, "the body needs an integer 'version'")

    def rolled_back(events: list[store.RecordedEvent]) -> types.Event:
        if not any(e.type == "script.version_uploaded" and int(e.data["version"]) == version
                   for e in events):
            raise ApiError(404, f"script {name!r} has no version {version}")
        return types.ScriptRolledBack(name=name, version=version)

    await _change_script(request, principal, name, rolled_back)
    return _json({"name": name, "version": version})


@route("/api/scripts/{name:str}/access", http_method=["PUT"], status_code=200)
async def set_access(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    """``{"require_key": true}``: only callers with a token allowed to invoke the script
    (scopes ``invoke``, ``invoke:NAME``, ``write`` or ``admin``) may call it; ``false``: public."""
    principal = await _principal(request, "write")
    require_key = (await _body_json(request)).get("require_key")
    if not isinstance(require_key, bool):
        raise ApiError(400, "the body needs a boolean 'require_key'")
    await _change_script(request, principal, name,
                         lambda _: types.ScriptAccessChanged(name=name, require_key=require_key))
    return _json({"name": name, "require_key": require_key})


@route("/api/scripts/{name:str}", http_method=["DELETE"], status_code=200)
async def delete_script(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "write")
    await _change_script(request, principal, name, lambda _: types.ScriptDeleted(name=name))
    return Response(content=b"", status_code=204)


# -- invocations and replay -----------------------------------------------------------------
def _parse_time(value: str | None, what: str) -> datetime | None:
    """An ISO time, or a duration back from now: ``90s``, ``15m``, ``1h``, ``2d``."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return now() - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(400, f"bad {what}: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=now().tzinfo)


def _limit(value: str | None, default: int = 50) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise ApiError(400, "limit must be an integer from 1 to 1000")
    return int(value)


INVOCATION_STATUSES = ("pending", "succeeded", "failed")
MAX_POSITION = (1 << 63) - 1  # event positions are bigint


def _position(value: str | None, what: str) -> str | None:
    """A cursor/position parameter: digits that fit a bigint, else 400."""
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > MAX_POSITION:
        raise ApiError(400, f"{what} must be an event position (a non-negative integer), "
                            f"not {value[:40]!r}")
    return value


def _status(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in INVOCATION_STATUSES:
        raise ApiError(400, f"bad status {str(value)[:40]!r}: one of "
                            f"{', '.join(INVOCATION_STATUSES)}")
    return str(value)


@route("/api/invocations", http_method=["GET"], status_code=200)
async def list_invocations(request: Request[Any, Any, Any]) -> Response[Any]:
    await _principal(request, "read")
    q = request.query_params
    status, cursor = _status(q.get("status")), _position(q.get("cursor"), "cursor")
    async with _services(request).pool.connection() as conn:
        items, cursor = await queries.list_invocations(
            conn, script=q.get("script"), status=status,
            since=_parse_time(q.get("since"), "since"), until=_parse_time(q.get("until"), "until"),
            limit=_limit(q.get("limit")), cursor=cursor)
    return _json({"items": [_scrubbed(i) for i in plain(items)], "next_cursor": cursor})


def _scrubbed(record: Any) -> Any:
    """An invocation row or event data with its request's credential headers removed (the
    ingress drops them before storing; this also covers events recorded before it did), and
    an error's unknown line/column as null (older events say 0)."""
    if isinstance(record, dict) and isinstance(record.get("error"), dict):
        record = {**record, "error": known_positions(dict(record["error"]))}
    if isinstance(record, dict) and isinstance(record.get("request"), dict):
        req = record["request"]
        if isinstance(req.get("headers"), dict):
            record = {**record, "request": {
                **req, "headers": responses.strip_credentials(req["headers"])}}
    return record


@route("/api/invocations/{inv_id:str}", http_method=["GET"], status_code=200)
async def get_invocation(request: Request[Any, Any, Any], inv_id: FromPath[str]) -> Response[Any]:
    await _principal(request, "read")
    svc = _services(request)
    async with svc.pool.connection() as conn:
        row = await queries.get_invocation(conn, inv_id)
        events = [] if row is not None else await store.read_stream(conn, f"invocation-{inv_id}")
    if events:
        # Not in the read model yet (the projector batches) but in the log: wait for the
        # projection of what the log holds now, so that an id just answered is found.
        with contextlib.suppress(TimeoutError):
            await svc.wait_projected(events[-1])
        async with svc.pool.connection() as conn:
            row = await queries.get_invocation(conn, inv_id)
    if row is None:
        raise ApiError(404, f"no invocation {inv_id!r}")
    return _json(_scrubbed(plain(row)))


async def _replay(svc: Services, conn: Any, original: str, version_choice: Any,
                  meta: store.Metadata) -> str:
    events = await store.read_stream(conn, f"invocation-{original}")
    if not events:
        raise ApiError(404, f"no invocation {original!r}")
    req = events[0].data
    if version_choice in (None, "current"):
        version = await current_version(conn, req["script"])
        if version is None:
            raise ApiError(404, f"script {req['script']!r} no longer exists")
    elif version_choice == "original":
        version = int(req["version"])
    elif isinstance(version_choice, int) and not isinstance(version_choice, bool):
        version = version_choice
    else:
        raise ApiError(400, "version must be 'current', 'original' or an integer")
    event = dict(req.get("event") or {})
    inv_id, _, _ = await svc.request_invocation(
        conn, script=req["script"], version=version, trigger="replay",
        request=req.get("request"), event_data=dict(event.get("data") or {}),
        replay_of=original, metadata=meta, queue=SHARED_QUEUE)
    return inv_id


@route("/api/invocations/{inv_id:str}/replay", http_method=["POST"], status_code=202)
async def replay_one(request: Request[Any, Any, Any], inv_id: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "write")
    svc = _services(request)
    data = await _body_json(request)
    replay_id = str(uuid.uuid4())
    async with svc.pool.connection() as conn, conn.transaction():
        meta = _meta(principal, svc)
        meta = store.Metadata(actor=meta.actor, node=meta.node, correlation_id=replay_id)
        new_id = await _replay(svc, conn, inv_id, data.get("version"), meta)
        await store.append(
            conn, f"replay-{replay_id}",
            [types.ReplayRequested(invocation_ids=[inv_id], version=_version_int(data))],
            expected_version=0, metadata=meta)
    return _json({"invocation_id": new_id, "replay_of": inv_id}, 202)


def _version_int(data: dict[str, Any]) -> int | None:
    v = data.get("version")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


@route("/api/replays", http_method=["POST"], status_code=202)
async def replay_many(request: Request[Any, Any, Any]) -> Response[Any]:
    principal = await _principal(request, "write")
    svc = _services(request)
    data = await _body_json(request)
    script = data.get("script")
    if not isinstance(script, str):
        raise ApiError(400, "the body needs a 'script'")
    status = _status(data.get("status", "failed"))
    since = _parse_time(data.get("since"), "since")
    until = _parse_time(data.get("until"), "until")
    originals: list[str] = []
    async with svc.pool.connection() as conn:
        cursor = None
        while True:
            items, cursor = await queries.list_invocations(
                conn, script=script, status=status, since=since, until=until, limit=500,
                cursor=cursor)
            originals.extend(str(_field(i, "invocation_id", "id")) for i in items)
            if not cursor or len(originals) >= 10000:
                break
        replay_id = str(uuid.uuid4())
        meta = _meta(principal, svc)
        meta = store.Metadata(actor=meta.actor, node=meta.node, correlation_id=replay_id)
        new_ids: list[dict[str, str]] = []
        async with conn.transaction():
            await store.append(
                conn, f"replay-{replay_id}",
                [types.ReplayRequested(invocation_ids=originals, version=_version_int(data))],
                expected_version=0, metadata=meta)
            for original in originals:
                new_id = await _replay(svc, conn, original, data.get("version"), meta)
                new_ids.append({"invocation_id": new_id, "replay_of": original})
    return _json({"replay_id": replay_id, "items": new_ids, "next_cursor": None}, 202)


# -- schedules ------------------------------------------------------------------------------
SCHEDULES_CHANNEL = "picloud_schedules"


@route("/api/schedules/{name:str}", http_method=["PUT"], status_code=200)
async def put_schedule(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "write")
    svc = _services(request)
    _check_name(name, "schedule")
    data = await _body_json(request)
    script, expr = data.get("script"), data.get("cron")
    timezone = data.get("timezone") or "UTC"
    payload = data.get("payload")
    if not isinstance(script, str) or not isinstance(expr, str) or not isinstance(timezone, str):
        raise ApiError(400, "the body needs 'script' and 'cron' strings")
    _check_name(script)
    try:
        cron.validate(expr, timezone)
    except cron.CronError as exc:
        raise ApiError(422, str(exc)) from exc
    async with svc.pool.connection() as conn, conn.transaction():
        if _current_from_stream(await store.read_stream(conn, f"script-{script}")) is None:
            raise ApiError(404, f"no script named {script!r}")
        recorded = await store.append(
            conn, f"schedule-{name}",
            [types.ScheduleSet(name=name, script=script, cron=expr, timezone=timezone,
                               payload=payload)],
            expected_version=None, metadata=_meta(principal, svc))
        await conn.execute("SELECT pg_notify(%s, %s)", (SCHEDULES_CHANNEL, name))
    await svc.wait_projected(recorded[-1])
    async with svc.pool.connection() as conn:
        row = await queries.get_schedule(conn, name)
    if row is not None:  # the same shape as GET /api/schedules/{name}
        return _json(plain(row))
    return _json({"name": name, "script": script, "cron": expr, "timezone": timezone,
                  "payload": payload,
                  "next_fire_time": cron.next_fire(expr, timezone, now()).isoformat()})


@route("/api/schedules", http_method=["GET"], status_code=200)
async def list_schedules(request: Request[Any, Any, Any]) -> Response[Any]:
    await _principal(request, "read")
    async with _services(request).pool.connection() as conn:
        items = await queries.list_schedules(conn)
    return _json({"items": plain(items), "next_cursor": None})


@route("/api/schedules/{name:str}", http_method=["GET"], status_code=200)
async def get_schedule(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    await _principal(request, "read")
    async with _services(request).pool.connection() as conn:
        row = await queries.get_schedule(conn, name)
    if row is None:
        raise ApiError(404, f"no schedule named {name!r}")
    return _json(plain(row))


@route("/api/schedules/{name:str}", http_method=["DELETE"], status_code=200)
async def delete_schedule(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "write")
    svc = _services(request)
    async with svc.pool.connection() as conn, conn.transaction():
        events = await store.read_stream(conn, f"schedule-{name}")
        if not events or events[-1].type == "schedule.deleted":
            raise ApiError(404, f"no schedule named {name!r}")
        recorded = await store.append(
            conn, f"schedule-{name}", [types.ScheduleDeleted(name=name)],
            expected_version=len(events), metadata=_meta(principal, svc))
        await conn.execute("SELECT pg_notify(%s, %s)", (SCHEDULES_CHANNEL, name))
    await svc.wait_projected(recorded[-1])
    return Response(content=b"", status_code=204)


# -- tokens ---------------------------------------------------------------------------------
@route("/api/tokens", http_method=["POST"], status_code=201)
async def create_token(request: Request[Any, Any, Any]) -> Response[Any]:
    principal = await _principal(request, "admin")
    svc = _services(request)
    data = await _body_json(request)
    name = data.get("name")
    scopes = data.get("scopes", ["read"])
    if not isinstance(name, str) or not name:
        raise ApiError(400, "the body needs a 'name'")
    if not isinstance(scopes, list) or not scopes or not all(map(auth.valid_scope, scopes)):
        raise ApiError(400, f"scopes must be a non-empty list of {list(auth.SCOPES)} or "
                            "'invoke:NAME'")
    token = auth.new_token()
    token_id = hashlib.sha256(token.encode() + b"id").hexdigest()[:16]
    async with svc.pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO api_tokens (id, name, token_hash, scopes) VALUES (%s, %s, %s, %s)",
            (token_id, name, auth.hash_token(token), scopes))
        await store.append(
            conn, f"token-{token_id}",
            [types.TokenCreated(token_id=token_id, name=name, scopes=scopes)],
            expected_version=0, metadata=_meta(principal, svc))
    return _json({"token_id": token_id, "name": name, "scopes": scopes, "token": token}, 201)


@route("/api/tokens/{token_id:str}", http_method=["DELETE"], status_code=200)
async def revoke_token(request: Request[Any, Any, Any], token_id: FromPath[str]) -> Response[Any]:
    principal = await _principal(request, "admin")
    svc = _services(request)
    async with svc.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (token_id,))
        if cur.rowcount == 0:
            raise ApiError(404, f"no active token {token_id!r}")
        await store.append(conn, f"token-{token_id}", [types.TokenRevoked(token_id=token_id)],
                           expected_version=None, metadata=_meta(principal, svc))
    return Response(content=b"", status_code=204)


# -- events, audit, health, metrics ---------------------------------------------------------
def _event_out(e: store.RecordedEvent) -> dict[str, Any]:
    return {"position": e.position, "stream": e.stream, "version": e.version, "type": e.type,
            "data": _scrubbed(e.data), "metadata": e.metadata, "time": e.time.isoformat(),
            "hash": e.hash}


async def _events_query(request: Request[Any, Any, Any], audit_only: bool) -> Response[Any]:
    await _principal(request, "read")
    q = request.query_params
    after = _position(q.get("after") or q.get("cursor"), "after")
    limit = _limit(q.get("limit"), 100)
    kind: Any = q.get("type") or q.get("action")
    if audit_only and kind is None:
        kind = list(store.AUDIT_TYPES)
    kwargs: dict[str, Any] = {
        "type": kind, "stream": q.get("stream"),
        "actor": q.get("actor"), "since": _parse_time(q.get("since"), "since"),
        "until": _parse_time(q.get("until"), "until"),
        "after": int(after) if after else None, "limit": limit}
    target = q.get("target")
    out: list[dict[str, Any]] = []
    async with _services(request).pool.connection() as conn:
        while len(out) < limit:
            page = await store.query_events(conn, **kwargs)
            for e in page:
                if audit_only and not e.metadata.get("actor"):
                    continue
                if target and target not in e.stream:
                    continue
                out.append(_event_out(e))
            if len(page) < kwargs["limit"] or not (audit_only or target):
                break
            kwargs["after"] = page[-1].position
    out = out[:limit]
    cursor = str(out[-1]["position"]) if len(out) == limit else None
    return _json({"items": out, "next_cursor": cursor})


@route("/api/events", http_method=["GET"], status_code=200)
async def events(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _events_query(request, audit_only=False)


@route("/api/audit", http_method=["GET"], status_code=200)
async def audit(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _events_query(request, audit_only=True)


@route("/healthz", http_method=["GET"], status_code=200)
async def healthz(request: Request[Any, Any, Any]) -> Response[Any]:
    """200 while this node can answer invocations: its LISTEN connection (completions, script
    changes) is up; else 503, so a load balancer takes it out. No database round trip."""
    svc = _services(request)
    up = svc.waiter.listener.connected
    return _json({"status": "ok" if up else "unavailable", "node": svc.settings.node,
                  "listener": up}, 200 if up else 503)


@route("/metrics", http_method=["GET"], status_code=200)
async def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
    svc = _services(request)
    with contextlib.suppress(Exception):
        async with svc.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT queue_name, count(*) FROM procrastinate_jobs WHERE status = 'todo' "
                "GROUP BY queue_name")
            svc.metrics.set_queue_depths({q: n for q, n in await cur.fetchall()})
            cur = await conn.execute(
                "SELECT coalesce((SELECT max(position) FROM events), 0) - "
                "coalesce((SELECT min(position) FROM projection_checkpoints), 0)")
            row = await cur.fetchone()
            svc.metrics.projection_lag.set(max(0, row[0] if row else 0))
    svc.metrics.pending.set(svc.waiter.pending)
    return Response(content=svc.metrics.render(), status_code=200,
                    media_type="text/plain; version=0.0.4")


# -- audit verify, projections rebuild (control plane, admin) -------------------------------
@route("/api/audit/verify", http_method=["POST"], status_code=200)
async def audit_verify(request: Request[Any, Any, Any]) -> Response[Any]:
    """Checks every stream's hash chain; the check itself is recorded (``audit.verified``)."""
    principal = await _principal(request, "admin")
    svc = _services(request)
    async with svc.pool.connection() as conn:
        report = await store.verify(conn)
        await store.append(
            conn, "audit",
            [types.AuditVerified(ok=report.ok, events=report.events, streams=report.streams,
                                 problems=len(report.problems),
                                 through_position=report.through_position or None)],
            expected_version=None, metadata=_meta(principal, svc))
    return _json({"ok": report.ok, **plain(report)})


@route("/api/projections/rebuild", http_method=["POST"], status_code=200)
async def projections_rebuild(request: Request[Any, Any, Any]) -> Response[Any]:
    """Empties the read model and folds the whole log again (``projections.rebuilt``).

    ``rebuild`` holds the projector's apply lock in one transaction: a running projector
    waits, then its batch's checkpoint compare-and-set fails and it goes on from the rebuilt
    checkpoint, so every event is in the model once. Readers wait for the commit.
    """
    from picloud.projections.runner import rebuild

    principal = await _principal(request, "admin")
    svc = _services(request)
    async with svc.pool.connection() as conn:
        result = await rebuild(conn)
        # After the commit, in a transaction of its own: appended inside the rebuild's
        # transaction, the event would carry an xid older than what the rebuild read and
        # sort before its checkpoint (the projector would never see it).
        recorded = await store.append(
            conn, "projections",
            [types.ProjectionsRebuilt(events=result.events, position=result.position)],
            expected_version=None, metadata=_meta(principal, svc))
    with contextlib.suppress(TimeoutError):
        await svc.wait_projected(recorded[-1])
    return _json(plain(result))


# -- following the log (long poll) ----------------------------------------------------------
FOLLOW_WAIT_S = 10.0
"""Default and longest wait of one follow request: short enough that a stopping server, which
lets requests in flight finish, is not held up for long by a follower."""

# The newest events in read_all's order ((xid, position), only transactions below the
# snapshot's xmin): a follower starting after them never skips an event committed later.
_FOLLOW_START = ("SELECT position FROM events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) "
                 "ORDER BY xid DESC, position DESC LIMIT 1 OFFSET %s")


# Follow requests waiting on each listener (their wake-up events), and the listeners whose
# server is stopping: a stopping server waits for the requests in flight, so it ends these.
_FOLLOWERS: weakref.WeakKeyDictionary[Any, set[asyncio.Event]] = weakref.WeakKeyDictionary()
_ENDED: weakref.WeakSet[Any] = weakref.WeakSet()


def end_follows(listener: Any) -> None:
    """Ends the follow requests waiting on ``listener`` (a node's), now and from now on: they
    answer at once with what they have. For a node that stops serving HTTP."""
    _ENDED.add(listener)
    for woke in _FOLLOWERS.get(listener, ()):
        woke.set()


def _type_filter(value: str | None) -> Any:
    """``type=a.b,c.*``: a predicate on an event type (exact names, or prefixes with ``.*``)."""
    if not value:
        return lambda _t: True
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    exact = {w for w in wanted if not w.endswith((".*", "."))}
    prefixes = tuple(w.rstrip("*") for w in wanted if w.endswith((".*", ".")))
    return lambda t: t in exact or (bool(prefixes) and t.startswith(prefixes))


def _follow_params(q: Any) -> tuple[int | None, int, float, int]:
    """(after, last, wait, limit) of a follow request; 400 for a bad one."""
    after = _position(q.get("after") or q.get("cursor"), "after")
    last = q.get("last") or "0"
    if not last.isdigit() or int(last) > 1000:
        raise ApiError(400, "last must be an integer from 0 to 1000")
    try:
        wait = float(q.get("wait", FOLLOW_WAIT_S))
    except ValueError as exc:
        raise ApiError(400, "wait must be a number of seconds") from exc
    if not 0 <= wait <= FOLLOW_WAIT_S:
        raise ApiError(400, f"wait must be from 0 to {FOLLOW_WAIT_S:g} seconds")
    return (int(after) if after is not None else None, int(last), wait,
            _limit(q.get("limit"), 500))


async def _follow_start(conn: Any, last: int) -> int:
    cur = await conn.execute(_FOLLOW_START, (last,))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0  # fewer events than ``last``: from the start


@route("/api/events/follow", http_method=["GET"], status_code=200)
async def follow_events(request: Request[Any, Any, Any]) -> Response[Any]:
    """The log in the order a reader never skips a late commit, as a long poll.

    ``after``: the ``next_cursor`` of the previous answer (without it: from the end, or
    ``last`` events before it). Answers as soon as events matching ``type`` (names or
    ``prefix.*``, comma-separated) and ``script`` are there, else after ``wait`` seconds
    with none; ``next_cursor`` moves past every event read, matching or not. Waits on the
    process's LISTEN connection: nothing is queried while no event is appended.
    """
    await _principal(request, "read")
    svc = _services(request)
    q = request.query_params
    after, last, wait, limit = _follow_params(q)
    wanted, script = _type_filter(q.get("type")), q.get("script")
    woke = asyncio.Event()

    def on_event(_channel: str, _payload: str) -> None:
        woke.set()

    listener = svc.waiter.listener
    await listener.subscribe("picloud_events", on_event)  # before reading: no lost wake-up
    followers = _FOLLOWERS.setdefault(listener, set())
    followers.add(woke)
    try:
        async with svc.pool.connection() as conn:
            if after is None:
                after = await _follow_start(conn, last)
            elif after and await store.xid_of(conn, after) is None:  # read_all would restart
                raise ApiError(400, f"after must be a position that a follow answer gave as "
                                    f"next_cursor: no event at {after}")
        items, after = await _follow(svc, after, limit, 0 if listener in _ENDED else wait, woke,
                                     lambda e: wanted(e.type) and (
                                         script is None or e.data.get("script") == script))
    finally:
        followers.discard(woke)
        listener.unsubscribe("picloud_events", on_event)
    return _json({"items": items, "next_cursor": str(after)})


async def _follow(svc: Services, after: int, limit: int, wait: float, woke: asyncio.Event,
                  match: Any) -> tuple[list[dict[str, Any]], int]:
    """Reads after ``after`` until something matches or ``wait`` s pass (or the server
    stops: ``end_follows``): (items, cursor)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    listener = svc.waiter.listener
    delay = 0.005
    while True:
        woke.clear()
        async with svc.pool.connection() as conn:
            events, held = await store.read_batch(conn, after=after, limit=limit)
        if events:
            after = events[-1].position
            items = [_event_out(e) for e in events if match(e)]
            if items or loop.time() >= deadline:
                return items, after
            continue
        rest = deadline - loop.time()
        if rest <= 0 or listener in _ENDED:
            return [], after
        if held:  # committed events behind an older transaction, whose end may not NOTIFY
            await asyncio.sleep(min(delay, rest))
            delay = min(delay * 2, 0.2)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woke.wait(), rest)


ROUTES = [
    invoke_root, invoke_path, put_script, list_scripts, get_script, list_versions, rollback,
    set_access,
    delete_script, list_invocations, get_invocation, replay_one, replay_many, put_schedule,
    list_schedules, get_schedule, delete_schedule, create_token, revoke_token, events, audit,
    healthz, metrics, audit_verify, projections_rebuild, follow_events,
]


def create_app(services: Services) -> Litestar:
    """The HTTP app of one node; ``services`` is wired by :class:`picloud.ingress.node.Node`."""
    return Litestar(
        route_handlers=ROUTES,
        state=_state(services),
        request_max_body_size=services.settings.max_body_bytes,
        exception_handlers={
            ApiError: _api_error,
            auth.AuthError: _auth_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        openapi_config=None,
        logging_config=None,
    )


def _state(services: Services) -> Any:
    from litestar.datastructures import State

    return State({"services": services})


__all__ = ["ApiError", "create_app"]
