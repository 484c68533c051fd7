"""Quota windows as properties: every moment lies in exactly one day and one month, in any zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bot.quotas.windows import day_window, month_window

ZONES = st.sampled_from(
    [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Kiritimati",
        "America/St_Johns",
    ]
).map(ZoneInfo)
MOMENTS = st.datetimes(
    min_value=datetime(1999, 1, 1), max_value=datetime(2101, 1, 1), timezones=st.just(UTC)
)


@given(MOMENTS, ZONES)
def test_a_moment_lies_inside_its_day_and_its_month(moment: datetime, zone: ZoneInfo) -> None:
    day, month = day_window(moment, zone), month_window(moment, zone)
    assert day.start <= moment < day.end
    assert month.start <= day.start and day.end <= month.end
    assert day.key == f"day:{moment.astimezone(zone).date().isoformat()}"
    assert month.key == f"month:{moment.astimezone(zone):%Y-%m}"


@given(MOMENTS, ZONES)
def test_days_are_23_to_25_hours_and_start_at_local_midnight(
    moment: datetime, zone: ZoneInfo
) -> None:
    day = day_window(moment, zone)
    assert timedelta(hours=22) <= day.end - day.start <= timedelta(hours=25)
    local_start = day.start.astimezone(zone)
    assert (local_start.hour, local_start.minute) == (0, 0)


@given(MOMENTS, ZONES)
def test_windows_tile_time_without_gaps(moment: datetime, zone: ZoneInfo) -> None:
    day, month = day_window(moment, zone), month_window(moment, zone)
    assert day_window(day.end, zone).start == day.end
    assert day_window(day.start - timedelta(microseconds=1), zone).end == day.start
    following = month_window(month.end, zone)
    assert following.start == month.end and following.key != month.key
    assert following.start.astimezone(zone).day == 1


def test_leap_day_and_month_ends() -> None:
    leap = datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)
    assert day_window(leap).key == "day:2028-02-29"
    assert month_window(leap).end == datetime(2028, 3, 1, tzinfo=UTC)
    assert month_window(datetime(2027, 2, 28, 12, tzinfo=UTC)).end == datetime(
        2027, 3, 1, tzinfo=UTC
    )
    december = month_window(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    assert december.key == "month:2026-12" and december.end == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_zone_moves_the_edges() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    moment = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # already 1 December in Berlin
    assert month_window(moment, berlin).key == "month:2026-12"
    assert month_window(moment).key == "month:2026-11"
    # The spring-forward day in Berlin is 23 hours long.
    dst = day_window(datetime(2026, 3, 29, 12, tzinfo=UTC), berlin)
    assert dst.end - dst.start == timedelta(hours=23)
