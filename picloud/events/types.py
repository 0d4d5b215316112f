"""Event types: frozen msgspec structs, one per type, each with a schema version.

``TYPE`` is the name stored in ``events.type``; ``VERSION`` the schema version stored in
``events.schema_version``. To change a type's fields: bump ``VERSION`` and register an upcaster
from the old version (``@upcaster("script.deleted", 1)`` taking and returning the data dict), so
old events decode as the current struct and history is never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True):
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class ScriptVersionUploaded(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "script.version_uploaded"
    name: str
    version: int
    sha256: str
    source: str


class ScriptRolledBack(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "script.rolled_back"
    name: str
    version: int


class ScriptDeleted(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "script.deleted"
    name: str


class ScriptAccessChanged(Event, frozen=True, kw_only=True):
    """``require_key``: invoking the script needs an API token allowed to invoke it."""

    TYPE: ClassVar[str] = "script.access_changed"
    name: str
    require_key: bool


Trigger = Literal["http", "cron", "replay"]


class InvocationRequested(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "invocation.requested"
    invocation_id: str
    script: str
    version: int
    trigger: Trigger
    request: dict[str, Any] | None
    event: dict[str, Any]
    replay_of: str | None = None


class InvocationSucceeded(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "invocation.succeeded"
    invocation_id: str
    script: str
    version: int
    response: dict[str, Any]
    logs: list[Any]
    duration_ms: float
    fuel_used: int
    node: str


class InvocationFailed(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "invocation.failed"
    invocation_id: str
    script: str
    version: int
    error: dict[str, Any]
    logs: list[Any]
    duration_ms: float
    fuel_used: int
    node: str


class ScheduleSet(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "schedule.set"
    name: str
    script: str
    cron: str
    timezone: str
    payload: Any = None


class ScheduleDeleted(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "schedule.deleted"
    name: str


class CronTicked(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "cron.ticked"
    schedule: str
    fire_time: datetime
    invocation_id: str


class TokenCreated(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "token.created"
    token_id: str
    name: str
    scopes: list[str]


class TokenRevoked(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "token.revoked"
    token_id: str


class ReplayRequested(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[str] = "replay.requested"
    invocation_ids: list[str]
    version: int | None = None


class AuditVerified(Event, frozen=True, kw_only=True):
    """Someone checked the log's hash chains (``POST /api/audit/verify``): what was found."""

    TYPE: ClassVar[str] = "audit.verified"
    ok: bool
    events: int
    streams: int
    problems: int
    through_position: int | None = None
    """The highest position checked; ``events`` were found up to it (the next check's anchor)."""


class ProjectionsRebuilt(Event, frozen=True, kw_only=True):
    """The read model was rebuilt from the log (``POST /api/projections/rebuild``)."""

    TYPE: ClassVar[str] = "projections.rebuilt"
    events: int
    position: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        ScriptVersionUploaded,
        ScriptRolledBack,
        ScriptDeleted,
        ScriptAccessChanged,
        InvocationRequested,
        InvocationSucceeded,
        InvocationFailed,
        ScheduleSet,
        ScheduleDeleted,
        CronTicked,
        TokenCreated,
        TokenRevoked,
        ReplayRequested,
        AuditVerified,
        ProjectionsRebuilt,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning data of ``type_name`` v``from_version`` into v+1."""

    def register(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


def encode(event: Event) -> dict[str, Any]:
    """The stored form of an event's data (JSON-ready builtins)."""
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


def decode(type_name: str, data: dict[str, Any], schema_version: int = 1) -> Event:
    """The current struct of a stored event, upcasting old schema versions."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise KeyError(f"unknown event type {type_name!r}")
    version = schema_version
    while version < cls.VERSION:
        step = _UPCASTERS.get((type_name, version))
        if step is None:
            raise ValueError(f"no upcaster for {type_name} v{version}")
        data = step(data)
        version += 1
    return msgspec.convert(data, cls)


def stream_for(event: Event) -> str:
    """The stream an event belongs to, by the naming rule of the contract."""
    match event:
        case (ScriptVersionUploaded(name=n) | ScriptRolledBack(name=n) | ScriptDeleted(name=n)
              | ScriptAccessChanged(name=n)):
            return f"script-{n}"
        case (
            InvocationRequested(invocation_id=i)
            | InvocationSucceeded(invocation_id=i)
            | InvocationFailed(invocation_id=i)
        ):
            return f"invocation-{i}"
        case ScheduleSet(name=n) | ScheduleDeleted(name=n):
            return f"schedule-{n}"
        case CronTicked(schedule=n):
            return f"schedule-{n}"
        case TokenCreated(token_id=t) | TokenRevoked(token_id=t):
            return f"token-{t}"
        case AuditVerified():
            return "audit"
        case ProjectionsRebuilt():
            return "projections"
    raise ValueError(f"no default stream for {type(event).__name__}")
