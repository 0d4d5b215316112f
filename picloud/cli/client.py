"""Client commands: they speak the control-plane API (``PICLOUD_URL``, else the URL that
``picloud up`` wrote to ``$PICLOUD_HOME/server.json``, else http://127.0.0.1:8000; the token
from ``PICLOUD_TOKEN``, ``PICLOUD_ADMIN_TOKEN`` or ``$PICLOUD_HOME/admin.token``). ``--json``
prints the API's JSON; tables otherwise."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

LONG_TIMEOUT = httpx.Timeout(10.0, read=3600.0)
"""For calls that walk the whole log (verify, rebuild): a large log takes a while."""


class ClientError(Exception):
    """A failed call, said in one line; ``exit_code`` is the command's exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _token() -> str | None:
    for var in ("PICLOUD_TOKEN", "PICLOUD_ADMIN_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    path = _home() / "admin.token"
    if path.exists():
        return path.read_text().strip()
    return None


def _home() -> Path:
    return Path(os.environ.get("PICLOUD_HOME") or ".picloud")


def _url() -> str:
    if os.environ.get("PICLOUD_URL"):
        return os.environ["PICLOUD_URL"].rstrip("/")
    try:
        url = json.loads((_home() / "server.json").read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        url = None
    return str(url or "http://127.0.0.1:8000").rstrip("/")


def _client(with_token: bool = True) -> httpx.Client:
    """A client of the server; ``with_token=False`` for public ``/fn/`` calls, which must
    never carry the control-plane token (a script is not trusted with it)."""
    headers = {}
    token = _token() if with_token else None
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=_url(), headers=headers, timeout=60.0)


def _unreachable(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from the PiCloud API at {_url()} in time ({type(exc).__name__})"
    return (f"cannot reach the PiCloud API at {_url()} ({exc or type(exc).__name__}); is "
            "`picloud up` running? PICLOUD_URL, else $PICLOUD_HOME/server.json, says where")


def _auth_hint(status: int) -> str:
    if status == 401:
        return (" (the CLI sends PICLOUD_TOKEN, else PICLOUD_ADMIN_TOKEN, else "
                f"{_home() / 'admin.token'}{'' if _token() else ': none is set'})")
    if status == 403:
        return " (create a token with that scope: `picloud tokens create NAME --scopes ...`)"
    return ""


def _call(method: str, path: str, *, exit_code: int = 1, **kwargs: Any) -> Any:
    """The API's JSON answer; ``ClientError(exit_code=...)`` if unreachable or refused."""
    with _client() as c:
        try:
            r = c.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(_unreachable(exc), exit_code) from exc
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = {"error": r.text}
        raise ClientError(f"{r.status_code}: {_error_text(body)}{_auth_hint(r.status_code)}",
                          exit_code)
    if r.status_code == 204 or not r.content:
        return None
    return r.json()


def _error_text(body: Any) -> str:
    if not isinstance(body, dict):
        return str(body)
    text = str(body.get("error", body))
    for d in body.get("diagnostics") or []:
        text += f"\n  line {d.get('line')}, column {d.get('column')}: {d.get('message')}"
    return text


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict | list):
        return json.dumps(v)[:60]
    return str(v)


def _out(args: argparse.Namespace, data: Any, columns: list[str] | None = None) -> None:
    if args.json or columns is None:
        print(json.dumps(data, indent=2, default=str))
    else:
        rows = data.get("items", []) if isinstance(data, dict) and "items" in data else data
        if isinstance(rows, dict):
            rows = [rows]
        print(_table(rows, columns))


def _handler(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except ClientError as exc:
            print(f"picloud: {exc}", file=sys.stderr)
            return exc.exit_code
    return run


# -- commands -------------------------------------------------------------------------------
def cmd_deploy(args: argparse.Namespace) -> int:
    path = Path(args.file)
    name = args.name or path.stem
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    out = _call("PUT", f"/api/scripts/{name}", content=source,
                headers={"content-type": "text/plain"})
    if args.require_key is not None:
        access = _call("PUT", f"/api/scripts/{name}/access",
                       json={"require_key": args.require_key})
        out["require_key"] = access["require_key"]
    if str(out.get("url", "")).startswith("/"):
        out["url"] = _url() + out["url"]  # absolute, in text and in --json alike
    if args.json:
        _out(args, out)
    else:
        access = {True: " (requires a key)", False: " (public)"}.get(out.get("require_key"), "")
        print(f"deployed {out['name']} version {out['version']}: {out['url']}{access}")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    path = f"/fn/{args.name}" + (f"/{args.path.lstrip('/')}" if args.path else "")
    kwargs: dict[str, Any] = {}
    if args.data is not None:
        kwargs["content"] = args.data.encode()
        try:
            json.loads(args.data)
            kwargs["headers"] = {"content-type": "application/json"}
        except ValueError:
            kwargs["headers"] = {"content-type": "text/plain"}
    if args.key:
        kwargs["headers"] = {**kwargs.get("headers", {}), "authorization": f"Bearer {args.key}"}
    method = args.method or ("POST" if args.data is not None else "GET")
    with _client(with_token=False) as c:
        try:
            r = c.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {_url()}: {exc}") from exc
    inv_id = r.headers.get("x-picloud-invocation")
    if inv_id is None and r.status_code >= 400:  # refused before any invocation: say why
        try:
            message = _error_text(r.json())
        except ValueError:
            message = r.text
        raise ClientError(f"{r.status_code}: {message}")
    if args.json:
        print(json.dumps({"status": r.status_code,
                          "invocation_id": r.headers.get("x-picloud-invocation"),
                          "headers": dict(r.headers), "body": r.text}, indent=2))
    else:
        print(r.text)
        print(f"[{r.status_code}] invocation {r.headers.get('x-picloud-invocation')}",
              file=sys.stderr)
    return 0 if r.status_code < 400 else 1


INV_COLUMNS = ["id", "script", "version", "trigger", "status", "duration_ms",
               "requested_at"]


def _rounded(data: Any) -> Any:
    """The table's copy of a list: durations in ms with one decimal."""
    items = []
    for item in data.get("items", []):
        d = item.get("duration_ms")
        items.append({**item, "duration_ms": round(d, 1) if isinstance(d, float) else d})
    return {**data, "items": items}


def cmd_invocations(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit)}
    if args.script:
        params["script"] = args.script
    if args.failed:
        params["status"] = "failed"
    if args.since:
        params["since"] = args.since
    data = _call("GET", "/api/invocations", params=params)
    _out(args, data if args.json else _rounded(data), INV_COLUMNS)
    return 0


def _print_logs(inv: dict[str, Any], as_json: bool = False) -> None:
    for line in inv.get("logs") or []:
        if as_json:  # one JSON object a line: the log entry with its invocation
            entry = line if isinstance(line, dict) else {"text": str(line)}
            print(json.dumps({"invocation_id": inv.get("id"), **entry}, default=str))
            continue
        text = line.get("text") if isinstance(line, dict) else str(line)
        print(f"{inv.get('id', '')[:8]} {text}")


RESULT_TYPES = "invocation.succeeded,invocation.failed"
FOLLOW_WAIT_S = "10"  # one long poll; the server answers at once when something matches


def _follow(params: dict[str, str], after: str | None,
            first: dict[str, str] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Each answer of ``/api/events/follow`` (events in an order that never skips a late
    commit), forever. The server holds each request until an event matches or the wait ends,
    so an idle follower makes one request per wait, not a busy loop."""
    extra = dict(first or {})
    while True:
        query = {**params, **extra, "wait": FOLLOW_WAIT_S}
        if after is not None:
            query["after"] = after
        data = _call("GET", "/api/events/follow", params=query)
        after, extra = data["next_cursor"], {}
        yield data.get("items", [])
        sys.stdout.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    _call("GET", f"/api/scripts/{args.name}")  # an unknown script is an error (404), not silence
    follow = {"type": RESULT_TYPES, "script": args.name}
    cursor = None
    if args.follow:  # where the log ends now: results after it are followed, none missed
        cursor = _call("GET", "/api/events/follow", params={**follow, "wait": "0"})["next_cursor"]
    seen: set[str] = set()
    data = _call("GET", "/api/invocations", params={"script": args.name, "limit": "50"})
    for inv in reversed(data.get("items", [])):
        if inv.get("status") == "pending":
            continue
        seen.add(inv.get("id", ""))
        if "logs" not in inv:
            inv = _call("GET", f"/api/invocations/{inv['id']}")
        _print_logs(inv, args.json)
    if not args.follow:
        return 0
    sys.stdout.flush()
    for events in _follow(follow, cursor):
        for e in events:
            inv_id = e["data"].get("invocation_id", "")
            if inv_id not in seen:  # a result listed above already
                _print_logs({"id": inv_id, "logs": e["data"].get("logs")}, args.json)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    version: Any = args.version
    if version is not None and version.isdigit():
        version = int(version)
    if args.id:
        out = _call("POST", f"/api/invocations/{args.id}/replay", json={"version": version})
        if args.json:
            _out(args, out)
        else:
            print(f"replayed {args.id} as {out['invocation_id']}")
        return 0
    if not args.script:
        raise ClientError("give an invocation id, or --script NAME")
    body = {"script": args.script, "status": "failed" if args.failed else args.status,
            "since": args.since, "until": args.until, "version": version}
    out = _call("POST", "/api/replays", json=body)
    if args.json:
        _out(args, out)
    else:
        print(f"replay {out['replay_id']}: {len(out['items'])} invocations")
        for item in out["items"]:
            print(f"  {item['replay_of']} -> {item['invocation_id']}")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    if args.action in (None, "list"):
        _out(args, _call("GET", "/api/schedules"),
             ["name", "script", "cron", "timezone", "next_fire_time"])
    elif args.action == "set":
        if not (args.name and args.script and args.cron):
            raise ClientError("schedules set NAME --script S --cron EXPR")
        payload = json.loads(args.payload) if args.payload else None
        out = _call("PUT", f"/api/schedules/{args.name}",
                    json={"script": args.script, "cron": args.cron,
                          "timezone": args.timezone, "payload": payload})
        _out(args, out) if args.json else print(
            f"schedule {out['name']}: {out['cron']} -> {out['script']}, "
            f"next {out['next_fire_time']}")
    elif args.action == "get":
        _out(args, _call("GET", f"/api/schedules/{args.name}"))
    elif args.action == "delete":
        _call("DELETE", f"/api/schedules/{args.name}")
        print(f"deleted schedule {args.name}")
    return 0


EVENT_COLUMNS = ["position", "time", "type", "stream", "actor"]


def _event_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "actor": (e.get("metadata") or {}).get("actor")} for e in items]


def cmd_audit(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("actor", args.actor), ("since", args.since),
                                ("action", args.type), ("target", args.target),
                                ("limit", str(args.limit))) if v}
    data = _call("GET", "/api/audit", params=params)
    data["items"] = _event_rows(data.get("items", []))
    _out(args, data, EVENT_COLUMNS)
    return 0


def _print_event(e: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(e, default=str))
    else:
        actor = (e.get("metadata") or {}).get("actor") or ""
        print(f"{e['position']:>8} {e['time']} {e['type']:<26} {e['stream']} {actor}")


def cmd_events(args: argparse.Namespace) -> int:
    if args.follow or args.action == "tail":
        params = {"type": args.type} if args.type else {}
        after = str(args.after) if args.after is not None else None
        for items in _follow(params, after, first={"last": str(args.last)}):
            for e in items:
                _print_event(e, args.json)
        return 0  # not reached: it follows until stopped (Ctrl-C: exit 130)
    params = {"limit": "500"}
    if args.after is not None:
        params["after"] = str(args.after)
    if args.type:
        params["type"] = args.type
    for e in _call("GET", "/api/events", params=params).get("items", []):
        _print_event(e, args.json)
    return 0


PROBLEM_COLUMNS = ["position", "stream", "version", "problem"]


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Exit 0: every chain verifies; 1: problems found; 2: the check could not run."""
    report = _call("POST", "/api/audit/verify", exit_code=2, timeout=LONG_TIMEOUT)
    if args.json:
        _out(args, report)
    else:
        if report["problems"]:
            print(_table(report["problems"], PROBLEM_COLUMNS))
        status = "OK" if report["ok"] else f"FAILED: {len(report['problems'])} problem(s)"
        print(f"{status}: {report['events']} events in {report['streams']} streams checked")
    return 0 if report["ok"] else 1


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    out = _call("POST", "/api/projections/rebuild", timeout=LONG_TIMEOUT)
    if args.json:
        _out(args, out)
    else:
        print(f"read model rebuilt from {out['events']} events "
              f"(checkpoint at position {out['position']})")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    if args.action == "create":
        out = _call("POST", "/api/tokens", json={"name": args.name,
                                                  "scopes": args.scopes.split(",")})
        _out(args, out) if args.json else print(
            f"token {out['token_id']} ({','.join(out['scopes'])}): {out['token']}")
    elif args.action == "revoke":
        _call("DELETE", f"/api/tokens/{args.name}")
        print(f"revoked {args.name}")
    return 0


def _sub(parent: argparse.ArgumentParser, dest: str, name: str, fn: Any, help: str,
         required: bool = False) -> None:
    """``parent NAME``: a sub-command with its own ``--json`` (``parent --json NAME`` too)."""
    sub = parent.add_subparsers(dest=dest, metavar="COMMAND", required=required)
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    p.set_defaults(handler=_handler(fn))
    if required:
        parent.set_defaults(json=False)


def register(subparsers: Any) -> None:
    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=_handler(fn))
        return p

    p = add("deploy", cmd_deploy, "upload a script as a new version")
    p.add_argument("file")
    p.add_argument("--name", help="script name (default: the file name without .rhai)")
    access = p.add_mutually_exclusive_group()
    access.add_argument("--require-key", dest="require_key", action="store_const", const=True,
                        help="callers need a token with scope invoke, invoke:NAME or write")
    access.add_argument("--public", dest="require_key", action="store_const", const=False,
                        help="anyone may call it (the default for a new script)")
    p = add("invoke", cmd_invoke, "call a script over HTTP")
    p.add_argument("name")
    p.add_argument("path", nargs="?", default="")
    p.add_argument("--data", "-d", help="request body (JSON is sent as application/json)")
    p.add_argument("--method", "-X")
    p.add_argument("--key", help="a token that may invoke the script (for one that requires "
                                 "a key; never the admin token)")
    p = add("logs", cmd_logs, "print a script's log lines")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true",
                   help="then print each new invocation's lines as it ends (Ctrl-C stops)")
    p = add("invocations", cmd_invocations, "list invocations")
    p.add_argument("--script")
    p.add_argument("--failed", action="store_true")
    p.add_argument("--since")
    p.add_argument("--limit", type=int, default=50)
    p = add("replay", cmd_replay, "replay one invocation, or many")
    p.add_argument("id", nargs="?")
    p.add_argument("--script")
    p.add_argument("--failed", action="store_true")
    p.add_argument("--status", default="failed")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--version", help="'current' (default), 'original' or a version number")
    p = add("schedules", cmd_schedules, "list, set, get or delete cron schedules")
    p.add_argument("action", nargs="?", choices=["list", "set", "get", "delete"])
    p.add_argument("name", nargs="?")
    p.add_argument("--script")
    p.add_argument("--cron", help="5 fields, or 6 with seconds first")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--payload", help="JSON payload")
    p = add("audit", cmd_audit, "who changed what; 'audit verify' checks the hash chains")
    p.add_argument("--actor")
    p.add_argument("--since")
    p.add_argument("--type")
    p.add_argument("--target")
    p.add_argument("--limit", type=int, default=100)
    _sub(p, "audit_command", "verify", cmd_audit_verify,
         "check every stream's hash chain (exit 1 if an event was changed or removed)")
    p = subparsers.add_parser("projections", help="the read model")
    _sub(p, "projections_command", "rebuild", cmd_projections_rebuild,
         "empty the read model and rebuild it from the event log", required=True)
    p = add("events", cmd_events, "print the event log ('events tail' follows it)")
    p.add_argument("action", nargs="?", choices=["tail"])
    p.add_argument("--after", type=int, help="from this event position on")
    p.add_argument("--type", help="an event type, or a prefix such as 'invocation.*'")
    p.add_argument("-f", "--follow", action="store_true", help="same as 'events tail'")
    p.add_argument("--last", type=int, default=10,
                   help="'tail' starts with this many of the newest events (default 10)")
    p = add("tokens", cmd_tokens, "create or revoke API tokens")
    p.add_argument("action", choices=["create", "revoke"])
    p.add_argument("name", help="token name (create) or id (revoke)")
    p.add_argument("--scopes", default="read",
                   help="comma-separated: read, write, admin, invoke, or invoke:NAME for one "
                        "script (default read)")
