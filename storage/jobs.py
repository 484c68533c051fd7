"""Queries for jobs and usage counters.

Every state change is one conditional UPDATE whose row count says whether this caller won: a
status only moves forward, a reservation is settled or released once, a delivery is claimed by one
instance. That is what makes duplicate and out-of-order webhooks, and several instances, harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.models import (
    TERMINAL_RANK,
    Delivery,
    Job,
    JobStatus,
    Reservation,
    UsageCounter,
    utcnow,
)


@dataclass(frozen=True)
class CounterLimit:
    """One usage counter row to reserve against, and its job limit (0 = unlimited)."""

    scope: str
    subject: str
    period: str
    max_jobs: int


class LimitReached(Exception):
    """A reservation did not fit; `limit` names the counter that refused it."""

    def __init__(self, limit: CounterLimit) -> None:
        super().__init__(f"{limit.scope} limit of {limit.max_jobs} jobs reached for {limit.period}")
        self.limit = limit


class JobStore:
    """All reads and writes of jobs and usage counters, on one async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---- admission ------------------------------------------------------------------------

    async def reserve_and_insert(self, job: Job, limits: Sequence[CounterLimit]) -> None:
        """Reserve one job on every counter and insert the job, atomically, or raise LimitReached.

        Counters are taken in the order given (user before workspace), so two transactions never
        wait on each other's rows in opposite orders.
        """
        async with self.engine.begin() as conn:
            for limit in limits:
                await self._ensure_counter(conn, limit)
                condition = UsageCounter.jobs < limit.max_jobs if limit.max_jobs > 0 else true()
                result = await conn.execute(
                    update(UsageCounter)
                    .where(
                        UsageCounter.scope == limit.scope,
                        UsageCounter.subject == limit.subject,
                        UsageCounter.period == limit.period,
                        condition,
                    )
                    .values(
                        jobs=UsageCounter.jobs + 1,
                        reserved_micros=UsageCounter.reserved_micros + job.estimated_micros,
                        updated_at=utcnow(),
                    )
                )
                if result.rowcount != 1:
                    raise LimitReached(limit)  # leaving the block rolls everything back
            await conn.execute(Job.__table__.insert().values(**_row(job)))

    async def _ensure_counter(self, conn: AsyncConnection, limit: CounterLimit) -> None:
        values = {
            "scope": limit.scope,
            "subject": limit.subject,
            "period": limit.period,
            "jobs": 0,
            "reserved_micros": 0,
            "spent_micros": 0,
            "updated_at": utcnow(),
        }
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        await conn.execute(
            insert(UsageCounter)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["scope", "subject", "period"])
        )

    async def counter(self, scope: str, subject: str, period: str) -> UsageCounter | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(UsageCounter).where(
                        UsageCounter.scope == scope,
                        UsageCounter.subject == subject,
                        UsageCounter.period == period,
                    )
                )
            ).first()
        return UsageCounter.model_validate(row._mapping) if row else None

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(Job.__table__).where(Job.id == job_id))).first()
        return _job(row._mapping) if row else None

    async def find_by_prediction(self, prediction_id: str) -> Job | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(Job.__table__).where(Job.prediction_id == prediction_id))
            ).first()
        return _job(row._mapping) if row else None

    async def unfinished(self) -> list[Job]:
        """Jobs not yet terminal: on start-up they are polled (or their create resolved)."""
        return await self._select(Job.status_rank < TERMINAL_RANK)

    async def undelivered(self, stale_after: timedelta) -> list[Job]:
        """Finished jobs whose delivery is pending, or was claimed so long ago its owner died."""
        cutoff = utcnow() - stale_after
        return await self._select(
            (Job.delivery == Delivery.PENDING)
            | ((Job.delivery == Delivery.DELIVERING) & (Job.delivery_claimed_at < cutoff))
        )

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(Job))).scalar_one())

    async def _select(self, condition: Any) -> list[Job]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(Job.__table__).where(condition).order_by(Job.created_at))
            ).all()
        return [_job(row._mapping) for row in rows]

    # ---- lifecycle ------------------------------------------------------------------------

    async def update_fields(self, job_id: str, **values: Any) -> None:
        """Unconditional bookkeeping (destination refs, prediction id before any webhook)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Job).where(Job.id == job_id).values(updated_at=utcnow(), **values)
            )

    async def advance(self, job_id: str, status: JobStatus, **values: Any) -> bool:
        """Move a job to a non-terminal `status` if that is forward; False for stale updates."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.status_rank < status.rank)
                .values(status=status, status_rank=status.rank, updated_at=utcnow(), **values)
            )
        return result.rowcount == 1

    async def record_progress(self, job_id: str, progress: int) -> bool:
        """Raise the progress of a running job; False when it is finished or not higher."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status_rank < TERMINAL_RANK,
                    (Job.progress.is_(None)) | (Job.progress < progress),  # type: ignore[union-attr]
                )
                .values(progress=progress, updated_at=utcnow())
            )
        return result.rowcount == 1

    async def finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        actual_micros: int,
        give_back_job: bool,
        deliver: bool = True,
        **values: Any,
    ) -> bool:
        """Record the terminal status and settle the reservation in one transaction.

        Only the first terminal update for a job changes a row; every later copy returns False
        and does nothing, so a result is charged and delivered once.
        """
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(Job)
                .where(Job.id == job.id, Job.status_rank < TERMINAL_RANK)
                .values(
                    status=status,
                    status_rank=status.rank,
                    actual_micros=actual_micros,
                    completed_at=now,
                    updated_at=now,
                    delivery=Delivery.PENDING if deliver else Delivery.NONE,
                    **values,
                )
            )
            if result.rowcount != 1:
                return False
            settled = await conn.execute(
                update(Job)
                .where(Job.id == job.id, Job.reservation == Reservation.HELD)
                .values(reservation=Reservation.RELEASED if give_back_job else Reservation.SETTLED)
            )
            if settled.rowcount == 1:
                await conn.execute(
                    update(UsageCounter)
                    .where(UsageCounter.scope == "user", UsageCounter.period == job.usage_period)
                    .where(UsageCounter.subject.in_(_subjects(job)))  # type: ignore[attr-defined]
                    .values(
                        jobs=UsageCounter.jobs - (1 if give_back_job else 0),
                        reserved_micros=UsageCounter.reserved_micros - job.estimated_micros,
                        spent_micros=UsageCounter.spent_micros + actual_micros,
                        updated_at=now,
                    )
                )
        return True

    async def claim_delivery(self, job_id: str, stale_after: timedelta) -> bool:
        """Take the delivery of a finished job; exactly one caller gets True."""
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    (Job.delivery == Delivery.PENDING)
                    | (
                        (Job.delivery == Delivery.DELIVERING)
                        & (Job.delivery_claimed_at < now - stale_after)
                    ),
                )
                .values(
                    delivery=Delivery.DELIVERING,
                    delivery_claimed_at=now,
                    delivery_attempts=Job.delivery_attempts + 1,
                )
            )
        return result.rowcount == 1

    async def finish_delivery(self, job_id: str, error: str | None = None) -> None:
        await self.update_fields(
            job_id,
            delivery=Delivery.FAILED if error else Delivery.DELIVERED,
            delivery_error=error,
            delivered_at=utcnow(),
        )


def _subjects(job: Job) -> list[str]:
    return [user_subject(job.platform, job.workspace, job.user_id)]


def user_subject(platform: str, workspace: str, user_id: str) -> str:
    """The usage-counter key of a user within one workspace or guild."""
    return f"{platform}:{workspace}:{user_id}"


def _row(job: Job) -> dict[str, Any]:
    return job.model_dump()


def _job(mapping: Any) -> Job:
    return Job.model_validate(dict(mapping))


def day_period(moment: datetime) -> str:
    return f"day:{moment:%Y-%m-%d}"
