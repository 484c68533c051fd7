"""Reads and writes behind quota administration: overrides, usage, reports, alerts, audit.

An override column holds NULL where the admin set nothing (the configured default applies), and
otherwise a limit written as `storage.usage.store_limit` says: 0 unlimited (what 0 always meant
here), -1 none allowed, n at most n.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, desc, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.audit import audit_row
from storage.compiled_once import built_once, cached_statement
from storage.engine import reader, write
from storage.limit_change import Default, LimitChange
from storage.models import AuditEntry, BudgetAlert, Job, QuotaOverride, UsageCounter, utcnow
from storage.rows import from_row
from storage.usage import store_limit

OVERRIDE_FIELDS = ("jobs_per_day", "usd_per_month_micros", "max_in_flight")
ALERT_LEASE = timedelta(minutes=2)
"""How long a sender's lease on an alert holds: longer than a post with its client's retries
(Slack's tries take up to 30 s each), so a live sender is not doubled; past it the sender is
taken for dead and the alert goes to another."""


def _stored(change: LimitChange) -> int | None:
    return None if isinstance(change, Default) else store_limit(change)


def _audited(change: LimitChange) -> int | str:
    """The change as the audit trail shows it, in the words an admin types."""
    if isinstance(change, Default):
        return "default"
    return "unlimited" if change is None else change


@dataclass(frozen=True)
class SpendRow:
    """One line of a report: a user or a model, its job count and its spend."""

    name: str
    jobs: int
    spent_micros: int


@dataclass(frozen=True)
class JobSpend:
    """One job's part of a month's spend."""

    created_at: datetime
    platform: str
    workspace: str
    user_id: str
    model: str
    spent_micros: int


class QuotaStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)  # for the blocks that only read

    async def override(self, scope: str, subject: str) -> QuotaOverride | None:
        return (await self.overrides_of([(scope, subject)])).get((scope, subject))

    async def overrides_of(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], QuotaOverride]:
        """The overrides of these (scope, subject) pairs that exist, in one read (a command
        needs its user's and its workspace's)."""
        params = {}
        for index, (scope, subject) in enumerate(keys):
            params[f"scope_{index}"], params[f"subject_{index}"] = scope, subject
        async with self.reader.connect() as conn:
            rows = (await conn.execute(_overrides_statement(len(keys)), params)).all()
        found = [from_row(QuotaOverride, row._mapping) for row in rows]
        return {(row.scope, row.subject): row for row in found}

    async def overrides(self) -> list[QuotaOverride]:
        async with self.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(QuotaOverride.__table__).order_by(
                        QuotaOverride.scope, QuotaOverride.subject
                    )
                )
            ).all()
        return [from_row(QuotaOverride, row._mapping) for row in rows]

    async def set_override(
        self, scope: str, subject: str, changes: Mapping[str, LimitChange], actor: str
    ) -> QuotaOverride:
        """Upsert the given fields (others keep their value) and write the audit entry."""
        unknown = set(changes) - set(OVERRIDE_FIELDS)
        if unknown:
            raise ValueError(f"unknown override fields: {sorted(unknown)}")
        audited = {field: _audited(change) for field, change in changes.items()}
        stored = {field: _stored(change) for field, change in changes.items()}
        now = utcnow()
        async with write(self.engine) as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            statement = insert(QuotaOverride).values(
                scope=scope, subject=subject, updated_by=actor, updated_at=now, **stored
            )
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["scope", "subject"],
                    set_={"updated_by": actor, "updated_at": now, **stored},
                )
            )
            await conn.execute(
                audit_row(actor, "quota.set", {"scope": scope, "subject": subject, **audited}, now)
            )
        result = await self.override(scope, subject)
        assert result is not None
        return result

    async def counters(
        self, scope: str, subject: str, periods: list[str]
    ) -> dict[str, UsageCounter]:
        async with self.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(UsageCounter.__table__).where(
                        UsageCounter.scope == scope,
                        UsageCounter.subject == subject,
                        UsageCounter.period.in_(periods),  # type: ignore[attr-defined]
                    )
                )
            ).all()
        counters = [from_row(UsageCounter, row._mapping) for row in rows]
        return {counter.period: counter for counter in counters}

    async def spend_by(
        self, column: str, start: datetime, end: datetime, where: dict[str, str], limit: int = 10
    ) -> list[SpendRow]:
        """Jobs and spend per `column` ("user_id" or "model") for jobs created in [start, end)."""
        key = getattr(Job, column)
        spent = func.coalesce(func.sum(func.coalesce(Job.actual_micros, 0)), 0)
        query = (
            select(key, func.count().label("jobs"), spent.label("spent"))
            .where(Job.created_at >= start, Job.created_at < end)
            .where(*(getattr(Job, name) == value for name, value in where.items()))
            .group_by(key)
            .order_by(desc("spent"), desc("jobs"), key)
            .limit(limit)
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [SpendRow(str(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def spend_rows(self, start: datetime, end: datetime) -> list[JobSpend]:
        """Each job created in [start, end): when, where, who, which model, what it cost (the
        admin page adds them up per day in the configured time zone, and per name)."""
        query = select(
            Job.created_at, Job.platform, Job.workspace, Job.user_id, Job.model, Job.actual_micros
        ).where(Job.created_at >= start, Job.created_at < end)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [JobSpend(row[0], row[1], row[2], row[3], row[4], int(row[5] or 0)) for row in rows]

    async def audit(self, limit: int | None = 50) -> list[AuditEntry]:
        async with self.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(AuditEntry.__table__).order_by(desc(AuditEntry.id)).limit(limit)
                )
            ).all()
        return [from_row(AuditEntry, row._mapping) for row in rows]

    # ---- the alert outbox -----------------------------------------------------------------
    # A sender leases an alert (lease_alert), posts it, then records it sent (alert_sent) or,
    # on a failure it sees, gives it back (release_alert). A sender killed between its lease
    # and its post leaves only the lease, which lapses: another sender posts the alert then.
    # One killed after its post landed but before alert_sent is sent again on takeover: an
    # admin told twice beats one never told that a budget ran out.

    async def unsent_alerts(self) -> list[BudgetAlert]:
        """Alerts not sent and held by no live sender (never leased, or the lease lapsed)."""
        async with self.reader.connect() as conn:
            found = await conn.execute(_UNSENT, {"now": utcnow()})
        return [from_row(BudgetAlert, row._mapping) for row in found.all()]

    async def lease_alert(self, alert_id: int) -> datetime | None:
        """Claim an alert for ALERT_LEASE; of the live senders exactly one gets the lease (when
        it lapses: its identity, for release_alert) and posts it, the others None (the
        conditional UPDATE decides)."""
        now = utcnow()
        until = now + ALERT_LEASE
        async with write(self.engine) as conn:
            result = await conn.execute(
                update(BudgetAlert)
                .where(BudgetAlert.id == alert_id, _unclaimed(now))
                .values(claimed_until=until)
            )
        return until if result.rowcount == 1 else None

    async def alert_sent(self, alert_id: int) -> None:
        """Record a leased alert posted, so no sender takes it over."""
        async with write(self.engine) as conn:
            await conn.execute(
                update(BudgetAlert)
                .where(BudgetAlert.id == alert_id, BudgetAlert.sent_at.is_(None))  # type: ignore[union-attr]
                .values(sent_at=utcnow(), claimed_until=None)
            )

    async def release_alert(self, alert_id: int, lease: datetime) -> None:
        """Give back the `lease` (lease_alert's) on an alert after a failed post: the next sweep
        sends it. Only while that lease holds it: a sender whose post outlasted its lease must
        not clear the lease of the sender that took the alert over (a third would post it)."""
        async with write(self.engine) as conn:
            await conn.execute(
                update(BudgetAlert)
                .where(
                    BudgetAlert.id == alert_id,
                    BudgetAlert.sent_at.is_(None),  # type: ignore[union-attr]
                    BudgetAlert.claimed_until == lease,  # type: ignore[arg-type]
                )
                .values(claimed_until=None)
            )


def _unclaimed(now: Any) -> Any:
    """An alert a sender may take at `now` (a time, or its bind): not sent, and not leased or its
    lease lapsed."""
    table = BudgetAlert.__table__.c  # type: ignore[attr-defined]
    lapsed = table.claimed_until.is_(None) | (table.claimed_until < now)
    return table.sent_at.is_(None) & lapsed


_UNSENT = built_once(  # every sender reads it every few seconds: built once
    select(BudgetAlert.__table__)
    .where(_unclaimed(bindparam("now", type_=BudgetAlert.__table__.c.claimed_until.type)))
    .order_by(BudgetAlert.id)
)


@cached_statement
def _overrides_statement(count: int) -> Any:
    """The overrides of `count` (scope, subject) pairs, built once per count."""
    table = QuotaOverride.__table__.c
    return select(QuotaOverride.__table__).where(
        or_(
            *(
                (table.scope == bindparam(f"scope_{i}"))
                & (table.subject == bindparam(f"subject_{i}"))
                for i in range(count)
            )
        )
    )
