"""Queries for commands waiting for their person to confirm the price (storage.models.Confirmation).

A question moves on once, by one conditional UPDATE: pending to confirmed (Run it) or declined
(Cancel). Two presses of Run it race there and one wins; the job it starts has its own unique
request key besides, so even a press that read the row before the other's update ends as one job.
"""

from __future__ import annotations

from datetime import datetime, timedelta

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
        job_id: str | None = None,
    ) -> bool:
        """Move a pending, unexpired question to `status`; False when it was not (any more)."""
        statement = (
            update(_TABLE)
            .where(
                _TABLE.c.id == confirmation_id,
                _TABLE.c.status == ConfirmationStatus.PENDING,
                _TABLE.c.expires_at > now,
            )
            .values(status=status.value, job_id=job_id)
        )
        async with write(self.engine) as conn:
            return (await conn.execute(statement)).rowcount == 1
