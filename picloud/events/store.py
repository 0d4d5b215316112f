"""The event store: append with optimistic concurrency, never-skip reads, queries, verification.

Design
------
* Streams are hash chains: an event's hash covers the previous hash *in its stream* and the
  event (stream, version, type, schema version, data, metadata, time). Appends to one stream
  are already serialised by the stream's version, so the chain costs no extra waiting; appends
  to different streams never wait on each other (a single global chain would make every append
  hold one lock until its transaction commits). Deleting or changing an event breaks its
  stream's chain or leaves a version gap; ``verify_chain`` finds both.
* ``read_all`` never skips a late commit: it orders by (transaction id, position) and reads only
  transactions below the snapshot's xmin (see ``queries.sql``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, LiteralString

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from picloud.events.types import Event, decode, encode
from picloud.sqlfile import Queries

Q = Queries("picloud.events")
GENESIS_HASH = "0" * 64

# The control-plane actions that make up the audit log.
AUDIT_TYPES: tuple[str, ...] = (
    "script.version_uploaded",
    "script.rolled_back",
    "script.deleted",
    "script.access_changed",
    "schedule.set",
    "schedule.deleted",
    "token.created",
    "token.revoked",
    "replay.requested",
    "audit.verified",
    "projections.rebuilt",
)


class Metadata(msgspec.Struct):
    actor: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    node: str | None = None


class RecordedEvent(msgspec.Struct):
    position: int
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    time: datetime
    hash: str
    schema_version: int = 1
    xid: int = 0
    """The appending transaction's id: read order is (xid, position)."""

    def decode(self) -> Event:
        """The event as its current struct (old schema versions upcast)."""
        return decode(self.type, self.data, self.schema_version)


class ConcurrencyError(Exception):
    """The stream is not at the expected version (another writer appended first)."""

    def __init__(self, stream: str, expected: int | None, actual: int | None = None) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        detail = f", it is at {actual}" if actual is not None else ""
        super().__init__(f"stream {stream!r}: expected version {expected}{detail}")


Conn = psycopg.AsyncConnection[Any]


async def append(
    conn: Conn,
    stream: str,
    events: Sequence[Event],
    *,
    expected_version: int | None,
    metadata: Metadata,
) -> list[RecordedEvent]:
    """Append ``events`` to ``stream`` in the caller's transaction (one is opened if none is).

    ``expected_version``: ``None`` appends after whatever is there (concurrent appends to the
    stream are serialised by a transaction lock on the stream); ``0`` requires that the stream
    does not exist; ``n`` requires that its last version is ``n``; otherwise ``ConcurrencyError``.
    After a ``ConcurrencyError`` the caller's transaction must be rolled back. The commit sends
    NOTIFY ``picloud_events`` with the highest position (a trigger does it).
    """
    if not events:
        raise ValueError("append needs at least one event")
    if expected_version is not None and expected_version < 0:
        raise ValueError("expected_version must be None or >= 0")
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if idle and conn.autocommit and expected_version is not None and len(events) == 1:
        # One INSERT statement is atomic by itself: no BEGIN/COMMIT round trips.
        return await _append(conn, stream, events, expected_version, metadata)
    if idle:
        async with conn.transaction():
            return await _append(conn, stream, events, expected_version, metadata)
    return await _append(conn, stream, events, expected_version, metadata)


async def _append(
    conn: Conn,
    stream: str,
    events: Sequence[Event],
    expected_version: int | None,
    metadata: Metadata,
) -> list[RecordedEvent]:
    meta = Jsonb(msgspec.to_builtins(metadata))
    recorded: list[RecordedEvent] = []
    expected = expected_version
    async with conn.cursor() as cur:
        if expected is None:
            await cur.execute(Q.lock_stream, {"stream": stream})
        for event in events:
            params = {
                "stream": stream,
                "expected": expected,
                "type": event.TYPE,
                "schema_version": event.VERSION,
                "data": Jsonb(encode(event)),
                "metadata": meta,
            }
            try:
                await cur.execute(Q.append_one, params)
            except psycopg.errors.UniqueViolation as exc:
                raise ConcurrencyError(stream, expected) from exc
            row = await cur.fetchone()
            if row is None:
                raise ConcurrencyError(stream, expected, await _head_version(conn, stream))
            position, version, time, hash_, data, meta_back, xid = row
            recorded.append(
                RecordedEvent(
                    position=position,
                    stream=stream,
                    version=version,
                    type=event.TYPE,
                    data=data,
                    metadata=meta_back,
                    time=time,
                    hash=hash_,
                    schema_version=event.VERSION,
                    xid=int(xid),
                )
            )
            expected = version
    return recorded


def append_one_sql() -> LiteralString:
    """The single-event append statement (``append_one``), for callers that embed it in a
    larger statement (as a CTE); its parameters come from :func:`append_one_params`."""
    return Q.append_one


def append_one_params(stream: str, event: Event, expected_version: int,
                      metadata: Metadata) -> dict[str, Any]:
    return {
        "stream": stream,
        "expected": expected_version,
        "type": event.TYPE,
        "schema_version": event.VERSION,
        "data": Jsonb(encode(event)),
        "metadata": Jsonb(msgspec.to_builtins(metadata)),
    }


async def _head_version(conn: Conn, stream: str) -> int | None:
    try:
        async with conn.cursor() as cur:
            await cur.execute(Q.stream_head, {"stream": stream})
            row = await cur.fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else 0


def _recorded(row: Sequence[Any]) -> RecordedEvent:
    position, stream, version, type_, data, metadata, time, hash_, schema_version, xid = row
    return RecordedEvent(
        position=position,
        stream=stream,
        version=version,
        type=type_,
        data=data,
        metadata=metadata,
        time=time,
        hash=hash_,
        schema_version=schema_version,
        xid=int(xid),
    )


async def read_all(conn: Conn, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
    """Up to ``limit`` events after position ``after``, in the order every reader sees them.

    ``after`` is 0 or the position of an event this function returned before (a checkpoint).
    The order is (transaction id, position): positions are not always increasing, but an
    event that commits after this call always comes after everything it returned, so a reader
    that resumes from its last position never skips one. Events of transactions that started
    before an older, still running transaction are held back until it ends (see
    ``withheld_after``).
    """
    async with conn.cursor() as cur:
        await cur.execute(Q.read_all, {"after": after, "limit": limit})
        return [_recorded(row) for row in await cur.fetchall()]


async def read_batch(
    conn: Conn, *, after: int = 0, limit: int = 1000
) -> tuple[list[RecordedEvent], bool]:
    """``read_all`` and ``withheld_after`` in one round trip: (events, some are held back)."""
    async with conn.cursor() as cur:
        await cur.execute(Q.read_batch, {"after": after, "limit": limit})
        rows = await cur.fetchall()
    held = bool(rows and rows[0][0])
    return [_recorded(row[1:]) for row in rows if row[1] is not None], held


async def withheld_after(conn: Conn, *, after: int = 0) -> bool:
    """True if committed events after ``after`` exist that ``read_all`` does not return yet."""
    async with conn.cursor() as cur:
        await cur.execute(Q.withheld_after, {"after": after})
        row = await cur.fetchone()
        return bool(row and row[0])


async def xid_of(conn: Conn, position: int) -> int | None:
    """The transaction id of the event at ``position`` (None if there is none visible)."""
    async with conn.cursor() as cur:
        await cur.execute(Q.xid_of, {"position": position})
        row = await cur.fetchone()
        return int(row[0]) if row else None


async def read_stream(conn: Conn, stream: str) -> list[RecordedEvent]:
    """Every event of ``stream``, in version order."""
    async with conn.cursor() as cur:
        await cur.execute(Q.read_stream, {"stream": stream})
        return [_recorded(row) for row in await cur.fetchall()]


async def query_events(
    conn: Conn,
    *,
    type: str | Sequence[str] | None = None,
    stream: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[RecordedEvent]:
    """Events matching every filter given, by position (for ``/api/events`` and ``/api/audit``).

    ``type`` is a type name, a list of them, or a prefix ending in ``.`` or ``.*``
    (``"script.*"``); ``since`` is inclusive, ``until`` exclusive; ``after`` pages by position.
    """
    types: list[str] | None = None
    prefix: str | None = None
    if isinstance(type, str):
        if type.endswith(".*"):
            prefix = type[:-1]
        elif type.endswith("."):
            prefix = type
        else:
            types = [type]
    elif type is not None:
        types = list(type)
    params = {
        "types": types,
        "type_prefix": prefix,
        "stream": stream,
        "actor": actor,
        "since": since,
        "until": until,
        "after": after,
        "limit": max(0, limit),
    }
    async with conn.cursor() as cur:
        # Not prepared: optional filters are `(%(x)s IS NULL OR ...)`, which only a plan
        # made for the actual values simplifies (and then uses the matching index).
        await cur.execute(Q.query_events, params, prepare=False)
        return [_recorded(row) for row in await cur.fetchall()]


# --- verification ---------------------------------------------------------------------------


class StoredRow(msgspec.Struct, frozen=True):
    """An event as stored, with its jsonb values in PostgreSQL's canonical text form."""

    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    data_text: str
    metadata_text: str
    time_us: int
    hash: str


class ChainProblem(msgspec.Struct, frozen=True):
    position: int | None
    stream: str
    version: int
    problem: str


class VerifyReport(msgspec.Struct):
    events: int
    streams: int
    problems: list[ChainProblem]
    through_position: int = 0
    """The highest position checked: ``events`` is how many events there were up to it."""

    @property
    def ok(self) -> bool:
        return not self.problems


class Anchor(msgspec.Struct, frozen=True):
    """What an earlier check counted: ``count`` events at positions up to ``position``."""

    position: int
    count: int
    time: datetime


def event_hash(prev: str, row: StoredRow) -> str:
    """The hash ``picloud_event_hash`` computes in SQL, recomputed independently here."""
    text = "\n".join(
        (
            prev,
            row.stream,
            str(row.version),
            row.type,
            str(row.schema_version),
            row.data_text,
            row.metadata_text,
            str(row.time_us),
        )
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChainVerifier:
    """Checks stored events fed stream by stream in version order.

    Reports a version that does not follow its predecessor (events removed) and a hash that
    does not match the event and its predecessor's hash (an event changed). The chain goes
    on from the stored hash, so one changed event is reported once.
    """

    def __init__(self, anchor: Anchor | None = None) -> None:
        self.problems: list[ChainProblem] = []
        self.events = 0
        self.streams = 0
        self.anchor = anchor
        self.through_position = 0
        self._anchored = 0  # events found at positions up to the anchor's
        self._stream: str | None = None
        self._prev_hash = GENESIS_HASH
        self._prev_version = 0

    def feed(self, row: StoredRow) -> None:
        self.events += 1
        self.through_position = max(self.through_position, row.position)
        if self.anchor is not None and row.position <= self.anchor.position:
            self._anchored += 1
        if row.stream != self._stream:
            self._stream, self._prev_hash, self._prev_version = row.stream, GENESIS_HASH, 0
            self.streams += 1
        if row.version != self._prev_version + 1:
            self.problems.append(
                ChainProblem(
                    row.position,
                    row.stream,
                    row.version,
                    f"version {row.version} follows {self._prev_version}: events missing",
                )
            )
        if event_hash(self._prev_hash, row) != row.hash:
            self.problems.append(
                ChainProblem(
                    row.position,
                    row.stream,
                    row.version,
                    "hash does not match the event: changed after it was appended",
                )
            )
        self._prev_hash, self._prev_version = row.hash, row.version

    def report(self) -> VerifyReport:
        problems = list(self.problems)
        anchor = self.anchor
        if anchor is not None and self._anchored < anchor.count:
            # A late commit can only add events below the anchor, never take them away.
            problems.append(ChainProblem(
                None, "*", 0,
                f"{anchor.count - self._anchored} of the {anchor.count} events up to position "
                f"{anchor.position} counted by the check of {anchor.time.isoformat()} are gone "
                "(whole streams, or the newest events of streams, removed)"))
        return VerifyReport(events=self.events, streams=self.streams, problems=problems,
                            through_position=self.through_position)


async def _last_anchor(conn: Conn) -> Anchor | None:
    """The count the newest ``audit.verified`` event recorded, if any (the log's anchor: a
    stream's chain cannot show that the whole stream, or its newest events, were removed)."""
    cur = await conn.execute(Q.last_audit_anchor)
    row = await cur.fetchone()
    if row is None:
        return None
    data, time = row
    return Anchor(int(data["through_position"]), int(data["events"]), time)


def verify_chain(rows: Iterable[StoredRow]) -> VerifyReport:
    """Check stored events given stream by stream in version order (see ``ChainVerifier``)."""
    verifier = ChainVerifier()
    for row in rows:
        verifier.feed(row)
    return verifier.report()


async def verify(conn: Conn, *, batch: int = 2000) -> VerifyReport:
    """Verify every stream's chain (``picloud audit verify``), streaming the log.

    Opens its own transaction (a server-side cursor needs one) if the connection is idle.
    """
    async with conn.transaction(), conn.cursor(name="picloud_verify") as cur:
        verifier = ChainVerifier(await _last_anchor(conn))
        await cur.execute(Q.all_events_for_verify)
        while rows := await cur.fetchmany(batch):
            for r in rows:
                verifier.feed(StoredRow(*r))
    return verifier.report()
