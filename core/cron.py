"""When a schedule's ticks fall: cron text (``croniter``) in a time zone, or a fixed interval.

Pure functions of a schedule's definition and a moment; the scheduler and the API both
use them, so a 422 at creation and the firing agree on what the text means.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MIN_EVERY = 1.0  # seconds: a finer interval is a busy loop, not a schedule
MAX_EVERY = 366 * 24 * 3600.0


def cron_problem(text: str) -> str | None:
    """Why ``text`` is not a cron expression this product runs, or None."""
    fields = text.split()
    if not text.startswith("@") and len(fields) != 5:
        return "a cron expression has 5 fields: minute hour day-of-month month day-of-week"
    if not croniter.is_valid(text):
        return f"{text!r} is not a valid cron expression"
    return None


def timezone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')"
    return None


def every_problem(seconds: float) -> str | None:
    if not math.isfinite(seconds) or not MIN_EVERY <= seconds <= MAX_EVERY:
        return f"every must be between {MIN_EVERY:g} and {MAX_EVERY:g} seconds"
    return None


def first_tick(cron: str | None, every: float | None, timezone: str, now: datetime) -> datetime:
    """The first tick after ``now`` of a new schedule (an interval counts from ``now``)."""
    if every is not None:
        return now + timedelta(seconds=every)
    assert cron is not None
    return _cron_after(cron, timezone, now)


def tick_after(
    cron: str | None, every: float | None, timezone: str, tick: datetime, now: datetime
) -> datetime:
    """The first tick later than both ``tick`` and ``now``; an interval keeps its grid."""
    if every is not None:
        step = timedelta(seconds=every)
        if tick + step > now:
            return tick + step
        missed = math.floor((now - tick) / step)
        return tick + step * (missed + 1)
    assert cron is not None
    return _cron_after(cron, timezone, max(tick, now))


def next_of(cron: str | None, every: float | None, timezone: str, tick: datetime) -> datetime:
    """The tick right after ``tick``."""
    if every is not None:
        return tick + timedelta(seconds=every)
    assert cron is not None
    return _cron_after(cron, timezone, tick)


def _cron_after(cron: str, timezone: str, moment: datetime) -> datetime:
    local = moment.astimezone(ZoneInfo(timezone))
    return croniter(cron, local).get_next(datetime).astimezone(UTC)
