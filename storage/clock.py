"""The clock every instance's claims and leases are measured by: the database's.

Instances on one PostgreSQL database hand work to each other by time: a delivery's lease lapses
at a moment written by its claimant and read by the others, a start claim is stale once it is
older than some seconds. Each instance writing its own machine's time, a clock 20 s ahead (a VM
resumed from a pause, time sync off) takes a lease still held for lapsed and posts the result a
second time. So each instance measures how far its clock is from the database server's
(`sync`, at start-up and every `RESYNC_EVERY`) and `now()` is its own clock corrected by that:
the instances then agree to within a query's round trip, whatever their machines' clocks say.
SQLite is one machine's file, read by processes of that machine: its clock is the machine's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.errors import UNANSWERED

log = logging.getLogger(__name__)

RESYNC_EVERY = 600.0  # seconds: a machine's clock drifts slowly, or jumps (then within this)
RETRY_AFTER = 10.0  # seconds: after a measurement the database did not answer
START_WAIT = 5.0  # seconds a start-up waits for the measurement (a host dropping packets)
WORTH_SAYING = timedelta(seconds=1)  # a difference this large is logged: the machine's time
# sync is off, and its logs and the platforms' timestamps disagree with the other instances'

_offset = timedelta(0)  # the database's clock minus this machine's


def local_now() -> datetime:
    """This machine's clock (aware UTC)."""
    return datetime.now(UTC)


def now() -> datetime:
    """The database's time, as this machine's clock and the last measured offset give it."""
    return local_now() + _offset


def offset() -> timedelta:
    return _offset


def set_offset(value: timedelta) -> None:
    global _offset
    _offset = value


async def sync(engine: AsyncEngine) -> timedelta:
    """Measure this machine's clock against the database server's, and use the difference from
    now on; returns it. On SQLite, none. Raises what the database raises (the caller decides
    whether a start-up may go on without it)."""
    if engine.dialect.name != "postgresql":
        return _offset
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # the connection made and checked: not timed
        before, sent = local_now(), time.perf_counter()
        server = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        round_trip = timedelta(seconds=time.perf_counter() - sent)
    measured = server - (before + round_trip / 2)
    if abs(measured) >= WORTH_SAYING and abs(measured - _offset) >= WORTH_SAYING:
        log.warning(
            "this machine's clock is %.1f s %s the database's; Conjure times claims and leases "
            "by the database's (fix this machine's time sync)",
            abs(measured.total_seconds()),
            "behind" if measured > timedelta(0) else "ahead of",
        )
    set_offset(measured)
    return measured


async def sync_or_say(engine: AsyncEngine) -> bool:
    """`sync`, or say why not and keep the last offset: a database that does not answer just now
    (a worker started as the server restarts) is for the job path to report and to recover from,
    not a reason to refuse to start. Whether it was measured."""
    try:
        async with asyncio.timeout(START_WAIT):
            await sync(engine)
    except UNANSWERED as exc:
        log.warning(
            "the database's clock was not measured (%s); tried again soon", type(exc).__name__
        )
        return False
    return True


async def keep_synced(
    engine: AsyncEngine, every: float = RESYNC_EVERY, *, first: float | None = None
) -> None:
    """`sync` every `every` seconds (the first time after `first`) until cancelled; a failed
    measurement keeps the last one and is tried again after RETRY_AFTER."""
    wait = every if first is None else first
    while True:
        await asyncio.sleep(wait)
        try:
            await sync(engine)
        except Exception as exc:  # whatever it was, measured again: a keeper never just stops
            log.warning("the database's clock was not measured (%s)", type(exc).__name__)
            wait = RETRY_AFTER
        else:
            wait = every
