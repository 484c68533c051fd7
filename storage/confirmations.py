"""Queries for commands waiting for their person to confirm the price (storage.models.Confirmation).

A question moves on once, by one conditional UPDATE: pending to confirmed (Run it) or declined
(Cancel). Run it claims the question before it submits, so a Cancel pressed while the job starts
loses (and says so) rather than answering "nothing ran" beside a job that runs. The job has its own
unique request key besides, so presses that submit again (after a crash) still end as one job.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import reader, write
from storage.models import Confirmation, ConfirmationStatus, utcnow
from storage.rows import from_row

KEPT_FOR = timedelta(days=1)  # answered or expired questions are deleted after this

_TABLE = Confirmation.__table__  # type: ignore[attr-defined]


class ConfirmationStore:
    """Reads and writes of pending confirmations, on the jobs' engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)

    async def add(self, confirmation: Confirmation) -> None:
        """Record a question, and forget those long past (no sweeper needed for a table that
        grows only when people are asked)."""
        async with write(self.engine) as conn:
            await conn.execute(_TABLE.insert().values(**confirmation.model_dump()))
            await conn.execute(delete(_TABLE).where(_TABLE.c.expires_at < utcnow() - KEPT_FOR))

    async def get(self, confirmation_id: str) -> Confirmation | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(select(_TABLE).where(_TABLE.c.id == confirmation_id))).first()
        return from_row(Confirmation, row._mapping) if row else None

    async def settle(
        self,
        confirmation_id: str,
        status: ConfirmationStatus,
        now: datetime,
    ) -> bool:
        """Move a pending, unexpired question to `status`; False when it was not (any more)."""
        statement = (
            update(_TABLE)
            .where(
                _TABLE.c.id == confirmation_id,
                _TABLE.c.status == ConfirmationStatus.PENDING,
                _TABLE.c.expires_at > now,
            )
            .values(status=status.value)
        )
        async with write(self.engine) as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def record_job(self, confirmation_id: str, job_id: str) -> None:
        """Note the job a confirmed question started (for the presses that come later)."""
        statement = (
            update(_TABLE).where(*_claimed_without_a_job(confirmation_id)).values(job_id=job_id)
        )
        async with write(self.engine) as conn:
            await conn.execute(statement)

    async def reopen(self, confirmation_id: str) -> None:
        """Put a question claimed by Run it back to pending when its job was refused (a limit
        reached): nothing started, so its buttons still work."""
        statement = (
            update(_TABLE)
            .where(*_claimed_without_a_job(confirmation_id))
            .values(status=ConfirmationStatus.PENDING.value)
        )
        async with write(self.engine) as conn:
            await conn.execute(statement)


def _claimed_without_a_job(confirmation_id: str) -> tuple[Any, ...]:
    """A question Run it has claimed whose job is not recorded (yet, or ever: it was refused)."""
    return (
        _TABLE.c.id == confirmation_id,
        _TABLE.c.status == ConfirmationStatus.CONFIRMED,
        _TABLE.c.job_id.is_(None),
    )
