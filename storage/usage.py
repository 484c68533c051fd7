"""Usage counters, holds and budget alerts: the statements that make quotas hold.

Admission is one conditional UPDATE per counter row (`... WHERE spent + reserved + :est <= limit`),
inside the transaction that inserts the job, in a fixed order (user before workspace), so no
interleaving of concurrent commands on any number of processes can pass a limit (quotas.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, bindparam, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.compiled_once import cached_statement
from storage.models import BudgetAlert, QuotaOverride, UsageCounter, utcnow

LIVE = "live"
ALERT_THRESHOLDS = (80, 100)

# How a limit is written where it is stored (an admin's override, a job's list of holds): 0 means
# unlimited, as it always has there, so rows written before 0 came to mean "none allowed" keep
# their meaning without a data migration; -1 means none allowed; n > 0 at most n. In Python a
# limit is None for unlimited and 0 for none allowed; these two functions are the only bridge.
STORED_UNLIMITED = 0
STORED_NONE_ALLOWED = -1


def store_limit(limit: int | None) -> int:
    """A limit as stored: None (unlimited) -> 0, 0 (none allowed) -> -1, n -> n."""
    if limit is None:
        return STORED_UNLIMITED
    if limit < 0:
        raise ValueError(f"a limit cannot be negative: {limit}")
    return STORED_NONE_ALLOWED if limit == 0 else limit


def load_limit(stored: int) -> int | None:
    """A stored limit back in Python's terms: 0 -> None (unlimited), -1 -> 0 (none allowed).

    Any other negative value was never written; read as none allowed, the safe side."""
    if stored == STORED_UNLIMITED:
        return None
    return max(stored, 0)


class HoldKind(StrEnum):
    JOBS = "jobs"  # jobs started in a day window
    USD = "usd"  # micro-dollars reserved and spent in a month window
    IN_FLIGHT = "in_flight"  # jobs running now (period "live")


@dataclass(frozen=True)
class Hold:
    """One counter row a job reserves against, and the limit in force (None = unlimited,
    0 = none allowed). Stored in the job as JSON, the limit written as `store_limit` says."""

    kind: HoldKind
    scope: str  # "user" or "workspace"
    subject: str
    period: str
    limit: int | None

    def as_json(self) -> dict[str, Any]:
        # Written out rather than `dataclasses.asdict`, whose deep copy cost ~10 us a hold on
        # every command's way to its ack.
        return {
            "kind": str(self.kind),
            "scope": self.scope,
            "subject": self.subject,
            "period": self.period,
            "limit": store_limit(self.limit),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hold:
        return cls(
            kind=HoldKind(data["kind"]),
            scope=data["scope"],
            subject=data["subject"],
            period=data["period"],
            limit=load_limit(int(data["limit"])),
        )


class LimitReached(Exception):
    """A reservation did not fit; `hold` names the counter and limit that refused it."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(f"{hold.scope} {hold.kind} limit {hold.limit} reached ({hold.period})")
        self.hold = hold


async def ensure_counter(conn: AsyncConnection, scope: str, subject: str, period: str) -> None:
    """Create the counter row if it is not there yet (INSERT ... ON CONFLICT DO NOTHING)."""
    values = {"c_scope": scope, "c_subject": subject, "c_period": period, "c_now": utcnow()}
    await conn.execute(_new_counter_statement(conn.dialect.name == "postgresql"), values)


@cached_statement
def _new_counter_statement(postgres: bool) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING of an empty counter, built once per dialect."""
    table = UsageCounter.__table__.c
    insert = pg_insert if postgres else sqlite_insert
    return (
        insert(UsageCounter.__table__)
        .values(
            scope=bindparam("c_scope"),
            subject=bindparam("c_subject"),
            period=bindparam("c_period"),
            jobs=0,
            reserved_micros=0,
            spent_micros=0,
            updated_at=bindparam("c_now", type_=table.updated_at.type),
        )
        .on_conflict_do_nothing(index_elements=["scope", "subject", "period"])
    )


async def reserve(conn: AsyncConnection, holds: Sequence[Hold], estimate: int) -> None:
    """Take every hold or raise LimitReached; the caller's transaction rolls back on raise.

    The UPDATE comes first: a counter row exists for all but a window's first job, so the
    INSERT ... ON CONFLICT DO NOTHING that creates it runs only when the UPDATE found no row.
    """
    for hold in holds:
        statement = _reserve_statement(hold.kind is HoldKind.USD, hold.limit is not None)
        values = {
            "r_scope": hold.scope,
            "r_subject": hold.subject,
            "r_period": hold.period,
            "r_limit": hold.limit or 0,
            "r_estimate": estimate,
            "r_now": utcnow(),
        }
        result = await conn.execute(statement, values)
        if result.rowcount != 1:
            await ensure_counter(conn, hold.scope, hold.subject, hold.period)
            result = await conn.execute(statement, values)
        if result.rowcount != 1:
            raise LimitReached(hold)


@cached_statement
def _reserve_statement(usd: bool, limited: bool) -> Any:
    """The conditional UPDATE of one hold, built once (building it anew for every hold of every
    command cost a quarter of its CPU): `usd` reserves the estimate, else one job; `limited`
    checks the limit."""
    table = UsageCounter.__table__.c
    if usd:
        # Micro-dollars are BIGINT: a bind typed INTEGER is cast to 32 bits on PostgreSQL.
        estimate = bindparam("r_estimate", type_=BigInteger)
        fits = table.spent_micros + table.reserved_micros + estimate <= bindparam(
            "r_limit", type_=BigInteger
        )
        change = {"reserved_micros": table.reserved_micros + estimate}
    else:
        fits = table.jobs + 1 <= bindparam("r_limit", type_=Integer)  # a limit of 0: none fit
        change = {"jobs": table.jobs + 1}
    return (
        update(UsageCounter.__table__)
        .where(
            table.scope == bindparam("r_scope"),
            table.subject == bindparam("r_subject"),
            table.period == bindparam("r_period"),
            fits if limited else true(),
        )
        .values(updated_at=bindparam("r_now", type_=table.updated_at.type), **change)
    )


async def settle(
    conn: AsyncConnection,
    holds: Sequence[Hold],
    *,
    estimate: int,
    actual: int,
    give_back_job: bool,
) -> list[BudgetAlert]:
    """Undo the holds and record what was spent; returns budget alerts newly due.

    `estimate` is what was reserved (the job's cost ceiling) and comes back; `actual` is what
    Replicate billed and is added to the spend as it is, even past the ceiling or the limit:
    an overrun then blocks the next reservation, as it should."""
    alerts: list[BudgetAlert] = []
    now = utcnow()
    for hold in holds:
        if hold.kind is HoldKind.USD:
            alerts += await _settle_usd(conn, hold, estimate, actual, now)
        elif hold.kind is HoldKind.IN_FLIGHT or give_back_job:
            await conn.execute(_give_back_job_statement(), {**_row(hold), "s_now": now})
    return alerts


def _row(hold: Hold) -> dict[str, Any]:
    """The counter row a hold names, as the settle statements' parameters."""
    return {"s_scope": hold.scope, "s_subject": hold.subject, "s_period": hold.period}


async def _settle_usd(
    conn: AsyncConnection, hold: Hold, estimate: int, actual: int, now: datetime
) -> list[BudgetAlert]:
    """Give `estimate` back and add `actual` to a money counter; the alerts that fall due."""
    params = {**_row(hold), "s_estimate": estimate, "s_actual": actual, "s_now": now}
    settled = (await conn.execute(_settle_usd_statement(), params)).first()
    limit = _budget_now(hold, settled)
    if settled is None or not limit or actual <= 0:  # no alert without a budget, or spend
        return []
    return await _raise_alerts(conn, hold, limit, settled[0])


def _settled_row() -> Any:
    table = UsageCounter.__table__.c
    return and_(
        table.scope == bindparam("s_scope"),
        table.subject == bindparam("s_subject"),
        table.period == bindparam("s_period"),
    )


@cached_statement
def _settle_usd_statement() -> Any:
    """Release the estimate and add what was spent; returns the new spend and the budget an
    admin has set since, if any (built once: one statement, where a read of it would add one)."""
    table = UsageCounter.__table__.c
    override = QuotaOverride.__table__.c
    budget_set = (
        select(override.usd_per_month_micros)
        .where(override.scope == bindparam("s_scope"), override.subject == bindparam("s_subject"))
        .scalar_subquery()
    )
    return (
        update(UsageCounter.__table__)
        .where(_settled_row())
        .values(
            reserved_micros=table.reserved_micros - bindparam("s_estimate", type_=BigInteger),
            spent_micros=table.spent_micros + bindparam("s_actual", type_=BigInteger),
            updated_at=bindparam("s_now", type_=table.updated_at.type),
        )
        .returning(table.spent_micros, budget_set)
    )


def _budget_now(hold: Hold, settled: Any) -> int | None:
    """The budget a settlement's alerts are measured against: the one in force now. An admin
    may have changed it since the job reserved (the hold keeps the one it was admitted by):
    lowered under what a running job then spends, the admins must still hear it was reached."""
    if settled is None or settled[1] is None:  # (spent, budget set): by place, as compiled once
        return hold.limit  # no admin's budget: the configured default, as at admission
    return load_limit(int(settled[1]))


@cached_statement
def _give_back_job_statement() -> Any:
    """One job fewer on a counter: a job that finished (in flight) or never ran (built once)."""
    table = UsageCounter.__table__.c
    return (
        update(UsageCounter.__table__)
        .where(_settled_row())
        .values(jobs=table.jobs - 1, updated_at=bindparam("s_now", type_=table.updated_at.type))
    )


async def charge_late(
    conn: AsyncConnection, holds: Sequence[Hold], actual: int
) -> list[BudgetAlert]:
    """Record spend that Replicate billed after the job's holds were already released; returns
    budget alerts newly due (late spend reaches a threshold as any other does)."""
    alerts: list[BudgetAlert] = []
    now = utcnow()
    for hold in holds:
        if hold.kind is HoldKind.USD:
            alerts += await _settle_usd(conn, hold, 0, actual, now)
    return alerts


async def _raise_alerts(
    conn: AsyncConnection, hold: Hold, limit: int, spent: int
) -> list[BudgetAlert]:
    """Insert an alert for each threshold reached; the unique key makes each fire once a window."""
    due: list[BudgetAlert] = []
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for threshold in ALERT_THRESHOLDS:
        line = limit * threshold // 100
        if line <= spent:
            alert = BudgetAlert(
                scope=hold.scope,
                subject=hold.subject,
                period=hold.period,
                threshold=threshold,
                spent_micros=spent,
                limit_micros=limit,
            )
            values = alert.model_dump(exclude={"id"})
            result = await conn.execute(
                insert(BudgetAlert)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["scope", "subject", "period", "threshold"])
            )
            if result.rowcount == 1:
                due.append(alert)
    return due
