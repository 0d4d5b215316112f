"""Cron expressions: 5 fields (minute first), or 6 with **seconds first**. No PiCloud imports,
so both the scheduler (workers) and the projections can use it."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


class CronError(ValueError):
    """A cron expression or time zone that is not valid."""


def _fields(expr: str) -> int:
    return len(expr.split())


def validate(expr: str, timezone: str = "UTC") -> None:
    """Raise ``CronError`` unless ``expr`` has 5 or 6 valid fields and ``timezone`` exists."""
    n = _fields(expr)
    if n not in (5, 6):
        raise CronError(f"a cron expression has 5 or 6 fields (seconds first), not {n}")
    if not croniter.is_valid(expr, second_at_beginning=(n == 6)):
        raise CronError(f"not a valid cron expression: {expr!r}")
    _zone(timezone)


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone: {timezone!r}") from exc


def next_fire(expr: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in UTC (evaluated in ``timezone``)."""
    validate(expr, timezone)
    start = after.astimezone(_zone(timezone))
    it = croniter(expr, start, second_at_beginning=(_fields(expr) == 6))
    fire: datetime = it.get_next(datetime)
    return fire.astimezone(UTC)
