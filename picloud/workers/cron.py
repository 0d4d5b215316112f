"""Cron expressions: 5 fields, or 6 with seconds first (pure functions)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


class CronError(ValueError):
    """A cron expression or a time zone that cannot be used."""


def validate(cron: str, timezone: str = "UTC") -> None:
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise CronError(f"a cron expression has 5 or 6 fields (seconds first), not {len(fields)}")
    if not croniter.is_valid(cron, second_at_beginning=len(fields) == 6):
        raise CronError(f"invalid cron expression {cron!r}")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {timezone!r}") from exc


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (an aware datetime), in UTC."""
    validate(cron, timezone)
    tz = ZoneInfo(timezone)
    six = len(cron.split()) == 6
    it = croniter(cron, after.astimezone(tz), second_at_beginning=six)
    fire: datetime = it.get_next(datetime)
    if fire <= after:  # croniter works in whole seconds
        fire = croniter(cron, after.astimezone(tz) + timedelta(seconds=1),
                        second_at_beginning=six).get_next(datetime)
    return fire.astimezone(ZoneInfo("UTC"))
