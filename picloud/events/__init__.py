"""The event store: append-only, hash-chained per stream, read in commit-safe order.

Imports nothing else of PiCloud's but ``picloud.sqlfile``.
"""

from picloud.events.store import (
    AUDIT_TYPES,
    ConcurrencyError,
    Metadata,
    RecordedEvent,
    append,
    query_events,
    read_all,
    read_stream,
    verify,
    verify_chain,
)
from picloud.events.types import Event, decode, encode, stream_for

__all__ = [
    "AUDIT_TYPES",
    "ConcurrencyError",
    "Event",
    "Metadata",
    "RecordedEvent",
    "append",
    "decode",
    "encode",
    "query_events",
    "read_all",
    "read_stream",
    "stream_for",
    "verify",
    "verify_chain",
]
