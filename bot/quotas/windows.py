"""Quota windows: the day and the month a moment falls in, in the configured time zone.

Windows are named by their local calendar date ("day:2026-11-23", "month:2026-11"), so a counter
row for a new window is simply created on first use and no reset job exists to go wrong. Their
edges are computed in the zone and returned in UTC, which handles DST days of 23 or 25 hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class Window:
    key: str  # "day:2026-11-23" / "month:2026-11"
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC; exclusive


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def day_window(moment: datetime, zone: ZoneInfo = UTC_ZONE) -> Window:
    """The local calendar day containing `moment` (an aware datetime)."""
    local = moment.astimezone(zone).date()
    return Window(
        key=f"day:{local.isoformat()}",
        start=_local_midnight(local, zone),
        end=_local_midnight(local + timedelta(days=1), zone),
    )


def month_window(moment: datetime, zone: ZoneInfo = UTC_ZONE) -> Window:
    """The local calendar month containing `moment`."""
    local = moment.astimezone(zone).date()
    first = local.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Window(
        key=f"month:{first:%Y-%m}",
        start=_local_midnight(first, zone),
        end=_local_midnight(following, zone),
    )
