"""Queries for jobs and usage counters.

Every state change is one conditional UPDATE whose row count says whether this caller won: a
status only moves forward, a reservation is settled or released once, a delivery is claimed by one
instance. That is what makes duplicate and out-of-order webhooks, and several instances, harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, String, bindparam, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import usage
from storage.compiled_once import built_once, cached_statement
from storage.engine import reader, write, write_one
from storage.models import (
    TERMINAL_RANK,
    Delivery,
    Job,
    JobStatus,
    Reservation,
    UsageCounter,
    utcnow,
)
from storage.rows import from_row
from storage.usage import Hold

DELIVERY_LEASE = timedelta(seconds=20)
"""How long a delivery claim holds unless renewed (its holder renews it every third of this)."""
LEGACY_CLAIM_STALE = timedelta(minutes=10)
"""A claim taken before leases existed (no lease recorded) is taken over at this age, as then."""


class DuplicateRequest(Exception):
    """A job already exists for this command (the platform sent it again): nothing was done."""


@dataclass(frozen=True)
class Finished:
    """A job this caller finished: the row as it now stands, and whether budget alerts fell due."""

    job: Job
    alerts_due: bool


class JobStore:
    """All reads and writes of jobs and usage counters, on one async engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.reader = reader(engine)  # for the blocks that only read

    # ---- admission ------------------------------------------------------------------------

    async def reserve_and_insert(self, job: Job, holds: Sequence[Hold]) -> None:
        """Insert the job and take every hold, atomically; or raise DuplicateRequest (a job
        with the same request key exists) or LimitReached, having changed nothing.

        The insert comes first, so a command sent twice is refused by the unique request key
        before any counter is touched (it is never told it is over a limit by its own first
        copy), and on PostgreSQL a concurrent copy waits for the first one's transaction and
        fails only if that one committed. Holds are taken in the order given (user before
        workspace), so two transactions never wait on each other's rows in opposite orders.
        """
        job.holds = [hold.as_json() for hold in holds]
        try:
            async with write(self.engine) as conn:
                await conn.execute(_INSERT, job.model_dump())
                await usage.reserve(conn, holds, job.estimated_micros)
        except IntegrityError:
            if job.request_key is not None and await self.has_request(job.request_key):
                raise DuplicateRequest(job.request_key) from None
            raise

    async def has_request(self, request_key: str) -> bool:
        """Whether a job was already made for the command with this key."""
        async with self.reader.connect() as conn:
            found = await conn.execute(select(_JOBS.c.id).where(_JOBS.c.request_key == request_key))
            return found.first() is not None

    async def followups_of(
        self, parent_id: str, followup: str, user_id: str
    ) -> tuple[int, datetime | None]:
        """How many jobs `user_id` started from `parent_id`'s `followup` button, and when the
        newest was: a press's request key counts them, so two quick presses are one job."""
        statement = select(func.count(), func.max(_JOBS.c.created_at)).where(
            _JOBS.c.parent_id == parent_id,
            _JOBS.c.followup == followup,
            _JOBS.c.user_id == user_id,
        )
        async with self.reader.connect() as conn:
            count, newest = (await conn.execute(statement)).one()
        if isinstance(newest, str):  # SQLite's max() of a datetime column is its text
            newest = datetime.fromisoformat(newest)
        if newest is not None and newest.tzinfo is None:
            newest = newest.replace(tzinfo=UTC)
        return int(count), newest

    async def counter(self, scope: str, subject: str, period: str) -> UsageCounter | None:
        async with self.reader.connect() as conn:
            row = (
                await conn.execute(
                    select(UsageCounter).where(
                        UsageCounter.scope == scope,
                        UsageCounter.subject == subject,
                        UsageCounter.period == period,
                    )
                )
            ).first()
        return from_row(UsageCounter, row._mapping) if row else None

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(_GET, {"job_id": job_id})).first()
        return _job(row._mapping) if row else None

    async def find_by_prediction(self, prediction_id: str) -> Job | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(_BY_PREDICTION, {"prediction_id": prediction_id})).first()
        return _job(row._mapping) if row else None

    async def unfinished(self, silent_for: timedelta | None = None) -> list[Job]:
        """Jobs not yet terminal (and, with `silent_for`, not updated for that long)."""
        if silent_for is None:
            return await self._select(_UNFINISHED, {})
        return await self._select(_UNFINISHED_SILENT, {"quiet_since": utcnow() - silent_for})

    async def unstarted(self, quiet_since: datetime) -> list[Job]:
        """Jobs recorded but never started (queued, no prediction) and untouched since
        `quiet_since`: the instance that recorded them may have died before their create."""
        return await self._select(_UNSTARTED_QUIET, {"quiet_since": quiet_since})

    async def waiting(self, platform: str, workspace: str) -> list[Job]:
        """A workspace's queued jobs, first come first."""
        condition = (
            (_JOBS.c.platform == platform)
            & (_JOBS.c.workspace == workspace)
            & _JOBS.c.waiting_since.is_not(None)
        )
        async with self.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(Job.__table__)
                    .where(condition)
                    .order_by(_JOBS.c.waiting_since, _JOBS.c.id)
                )
            ).all()
        return [_job(row._mapping) for row in rows]

    async def waiting_count(self, platform: str, workspace: str, user_id: str | None) -> int:
        """How many jobs wait in the queue of this workspace (of this person in it)."""
        condition = (
            (_JOBS.c.platform == platform)
            & (_JOBS.c.workspace == workspace)
            & _JOBS.c.waiting_since.is_not(None)
        )
        if user_id is not None:
            condition = condition & (_JOBS.c.user_id == user_id)
        async with self.reader.connect() as conn:
            found = await conn.execute(select(func.count()).select_from(_JOBS).where(condition))
            return int(found.scalar_one())

    async def waiting_workspaces(self) -> list[tuple[str, str]]:
        """(platform, workspace) of every workspace with a queued job."""
        async with self.reader.connect() as conn:
            return [(row[0], row[1]) for row in (await conn.execute(_WAITING, {})).all()]

    async def promote(self, job: Job, holds: Sequence[Hold]) -> Job | None:
        """Take a queued job out of the queue and reserve for it as for a new job, atomically:
        its place given back, every hold taken (or LimitReached, having changed nothing). None
        when it is no longer queued (another instance promoted or someone canceled it)."""
        now = utcnow()
        taken = [hold.as_json() for hold in holds]
        statement = (
            update(_JOBS)
            .where(_ID, _JOBS.c.waiting_since.is_not(None), _JOBS.c.status_rank == 0)
            .values(waiting_since=None, queue_ahead=None, holds=taken, updated_at=now)
            .returning(*_JOBS.c)
        )
        async with write(self.engine) as conn:
            row = (await conn.execute(statement, {"job_id": job.id})).first()
            if row is None:
                return None
            places = [Hold.from_json(data) for data in job.holds]
            await usage.settle(conn, places, estimate=0, actual=0, give_back_job=True)
            await usage.reserve(conn, holds, job.estimated_micros)
        return _job(row._mapping)

    async def undelivered(self, at: datetime | None = None) -> list[Job]:
        """Finished jobs whose delivery is pending, or claimed by a holder whose lease lapsed
        (by `at`, default now): it died, and another instance may take the delivery over."""
        now = at or utcnow()
        return await self._select(
            _UNDELIVERED, {"claim_now": now, "legacy_claimed_before": now - LEGACY_CLAIM_STALE}
        )

    async def search(
        self,
        *,
        platform: str | None = None,
        workspace: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """The newest jobs first (at most `limit`), narrowed by whichever filters are given:
        one SELECT, for the operator's `conjure jobs`."""
        statement = select(Job.__table__)
        for column, value in (
            (_JOBS.c.platform, platform),
            (_JOBS.c.workspace, workspace),
            (_JOBS.c.user_id, user_id),
            (_JOBS.c.status, status),
            (_JOBS.c.model, model),
        ):
            if value is not None:
                statement = statement.where(column == value)
        if since is not None:
            statement = statement.where(_JOBS.c.created_at >= since)
        statement = statement.order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc()).limit(limit)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_job(row._mapping) for row in rows]

    async def answers(self) -> None:
        """Read one row of the job table (raises when the database does not answer): what the
        health check needs, every few seconds, without counting every job ever run."""
        async with self.reader.connect() as conn:
            await conn.execute(_ANY_JOB, {})

    async def count(self) -> int:
        async with self.reader.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(Job))).scalar_one())

    async def _select(self, statement: Any, params: dict[str, Any]) -> list[Job]:
        """Jobs by one of the sweeps' statements (built once: `_sweep`), oldest first."""
        async with self.reader.connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [_job(row._mapping) for row in rows]

    # ---- lifecycle ------------------------------------------------------------------------

    async def update_fields(self, job_id: str, **values: Any) -> None:
        """Unconditional bookkeeping (destination refs, prediction id before any webhook)."""
        values["updated_at"] = utcnow()
        async with write_one(self.engine) as conn:
            await conn.execute(_update_statement(_names(values)), _params(job_id, values))

    async def merge_destination(self, job_id: str, fields: dict[str, Any]) -> None:
        """Add `fields` to the job's destination, in SQL: a delivery step recorded from a copy
        of the job read earlier (a stream's relay, another instance) keeps what others recorded
        since, where writing the copy's whole destination back would erase it (and a retry
        then post again what those keys said was posted)."""
        values = {"fields": fields, "v_updated_at": utcnow(), "job_id": job_id}
        statement = _merge_destination_statement(self.engine.dialect.name)
        async with write_one(self.engine) as conn:
            await conn.execute(statement, values)

    async def attach_prediction(self, job_id: str, prediction_id: str) -> bool:
        """Record the prediction a create made; False when the job ended without one while the
        create was on its way (its owner canceled it): that prediction must then be stopped."""
        values = {"prediction_id": prediction_id, "updated_at": utcnow()}
        async with write_one(self.engine) as conn:
            result = await conn.execute(_attach_statement(), _params(job_id, values))
        return result.rowcount == 1

    async def touch_unstarted(
        self, job_id: str, seen: datetime, now: datetime, **values: Any
    ) -> bool:
        """Write `values` and `updated_at = now` to a job still unstarted (queued, no
        prediction) whose `updated_at` is still `seen`; False when it changed meanwhile. Who
        starts a job claims it this way just before its create, so an instance taking over a
        job that looked abandoned and the instance still starting it never both create it."""
        values["updated_at"] = now
        params = {**_params(job_id, values), "seen": seen}
        async with write_one(self.engine) as conn:
            result = await conn.execute(_touch_unstarted_statement(_names(values)), params)
        return result.rowcount == 1

    async def advance(self, job_id: str, status: JobStatus, **values: Any) -> Job | None:
        """Move a job to a non-terminal `status` if that is forward: the job as it now stands,
        or None for a stale update."""
        values.update(status=status, status_rank=status.rank, updated_at=utcnow())
        return await self._update_returning(
            _advance_statement(_names(values)), _params(job_id, values)
        )

    async def record_progress(self, job_id: str, progress: int) -> Job | None:
        """Raise the progress of a running job: the job as it now stands, or None when it is
        finished or the progress is not higher."""
        values = {"progress": progress, "updated_at": utcnow()}
        return await self._update_returning(_progress_statement(), _params(job_id, values))

    async def _update_returning(self, statement: Any, params: dict[str, Any]) -> Job | None:
        """Run a conditional UPDATE of one job; the updated row, or None when none matched."""
        async with write_one(self.engine) as conn:
            row = (await conn.execute(statement, params)).first()
        return _job(row._mapping) if row else None

    async def finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        actual_micros: int,
        give_back_job: bool,
        deliver: bool = True,
        claim: bool = False,
        lease: timedelta = DELIVERY_LEASE,
        unstarted_only: bool = False,
        **values: Any,
    ) -> Finished | None:
        """Record the terminal status and settle the reservation in one transaction.

        With `unstarted_only`, only while no prediction is known for the job (a cancel before
        its create: once a prediction is known, it is Replicate's to stop).

        Only the first terminal update for a job changes a row; every later copy gets None and
        does nothing, so a result is charged and delivered once. A job that is not terminal
        still holds its reservation (only this statement releases it), so the same UPDATE
        settles it. With `claim`, the delivery is taken for the caller as well: one transaction
        fewer than finishing and then claiming, and the returned row is the one to deliver.
        """
        now = utcnow()
        values.update(
            status=status,
            status_rank=status.rank,
            actual_micros=actual_micros,
            completed_at=now,
            updated_at=now,
            reservation=Reservation.RELEASED if give_back_job else Reservation.SETTLED,
            waiting_since=None,  # out of the queue, if it was in it
            queue_ahead=None,
        )
        values.update(_delivery(now, deliver=deliver, claim=claim, lease=lease))
        guard = "running_without_prediction" if unstarted_only else "running"
        statement = _terminal_statement(_names(values), guard)
        async with write(self.engine) as conn:
            row = (await conn.execute(statement, _params(job.id, values))).first()
            if row is None:
                return None
            # What the row holds as this UPDATE finished it, not what the caller's copy did:
            # a job can leave the queue (promote: its place given back, its budget held)
            # between the caller's read and this statement.
            finished = _job(row._mapping)
            alerts = await usage.settle(
                conn,
                [Hold.from_json(data) for data in finished.holds],
                estimate=finished.estimated_micros,
                actual=actual_micros,
                give_back_job=give_back_job,
            )
        return Finished(job=finished, alerts_due=bool(alerts))

    async def charge_late(
        self,
        job: Job,
        prediction_id: str,
        actual_micros: int,
        *,
        output: Any = None,
        claim: bool = False,
        lease: timedelta = DELIVERY_LEASE,
    ) -> Finished | None:
        """A terminal webhook for a job that had already failed before its prediction was known
        (its create looked lost): record the prediction and what Replicate billed, once; the
        row as it now stands (and whether budget alerts fell due), or None for a copy already
        recorded.

        With the `output` of a prediction that succeeded, the job becomes the success it turned
        out to be, to be delivered (the person was charged for it): claimed for the caller with
        `claim`, else pending for an instance that serves its platform.
        """
        values: dict[str, Any] = {"prediction_id": prediction_id, "actual_micros": actual_micros}
        if output is not None:
            now = utcnow()
            values.update(
                status=JobStatus.SUCCEEDED,
                output=output,
                error=None,
                progress=100,
                completed_at=now,
                updated_at=now,
                **_delivery(now, deliver=True, claim=claim, lease=lease),
            )
        statement = _terminal_statement(_names(values), "no_prediction")
        async with write(self.engine) as conn:
            row = (await conn.execute(statement, _params(job.id, values))).first()
            if row is None:
                return None
            late = _job(row._mapping)
            holds = [Hold.from_json(d) for d in late.holds]
            alerts = await usage.charge_late(conn, holds, actual_micros)
        return Finished(job=late, alerts_due=bool(alerts))

    async def claim_delivery(self, job_id: str, lease: timedelta = DELIVERY_LEASE) -> bool:
        """Take the delivery of a finished job (pending, or its holder's lease lapsed) for
        `lease`; exactly one caller gets True. Each claim counts an attempt, whose number is
        the claim's identity when it is renewed."""
        now = utcnow()
        async with write_one(self.engine) as conn:
            result = await conn.execute(
                update(Job)
                .where(Job.id == job_id, _claimable(now, now - LEGACY_CLAIM_STALE))
                .values(
                    delivery=Delivery.DELIVERING,
                    delivery_claimed_at=now,
                    delivery_lease_until=now + lease,
                    delivery_attempts=Job.delivery_attempts + 1,
                )
            )
        return result.rowcount == 1

    async def renew_lease(self, job_id: str, attempt: int, lease: timedelta) -> bool:
        """Extend the lease of claim number `attempt`; False when it is no longer held (it
        ended, or lapsed and was taken over)."""
        async with write_one(self.engine) as conn:
            result = await conn.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.delivery == Delivery.DELIVERING,
                    Job.delivery_attempts == attempt,
                )
                .values(delivery_lease_until=utcnow() + lease)
            )
        return result.rowcount == 1

    async def release_delivery(self, job_id: str, error: str, attempt: int | None = None) -> None:
        """Give a claimed delivery back, pending, after an error that should pass (the platform
        down, rate-limited): the sweeper claims it again later. Its attempt stays counted, and
        its destination keeps what later attempts need. With `attempt`, only that claim."""
        now = utcnow()
        held = Job.delivery_attempts == attempt if attempt is not None else True
        async with write_one(self.engine) as conn:
            await conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.delivery == Delivery.DELIVERING, held)
                .values(delivery=Delivery.PENDING, delivery_error=error, updated_at=now)
            )

    async def finish_delivery(
        self, job_id: str, error: str | None = None, attempt: int | None = None
    ) -> None:
        """Mark the delivery done, or failed for good (it is never tried again), and in the same
        UPDATE drop the destination's capabilities (CAPABILITY_KEYS): nothing posts for the job
        any more, and a row that outlives its job should not let its reader post as Conjure.

        A failure is that of claim `attempt` only: a claimant whose lease lapsed must not fail a
        delivery another instance now holds (or has made), which could then never pass."""
        now = utcnow()
        values = {
            "delivery": Delivery.FAILED if error else Delivery.DELIVERED,
            "delivery_error": error,
            "delivered_at": now,
            "updated_at": now,
        }
        claim = error is not None and attempt is not None
        statement = _finish_delivery_statement(self.engine.dialect.name, claim)
        params = _params(job_id, values)
        if claim:
            params["attempt"] = attempt
        async with write_one(self.engine) as conn:
            await conn.execute(statement, params)


def user_subject(platform: str, workspace: str, user_id: str) -> str:
    """The usage-counter key of a user within one workspace or guild."""
    return f"{platform}:{workspace}:{user_id}"


def workspace_subject(platform: str, workspace: str) -> str:
    """The usage-counter key of a whole Slack workspace or Discord guild."""
    return f"{platform}:{workspace}"


# ---- statements ---------------------------------------------------------------------------
# Built once per set of columns and cached: building an UPDATE and its cache key anew cost more
# CPU than SQLite spends running it. Values travel as bind parameters named "v_<column>".

_JOBS = Job.__table__
_ID = _JOBS.c.id == bindparam("job_id")
_GET = built_once(select(_JOBS).where(_ID))
_RUNNING = _JOBS.c.status_rank < TERMINAL_RANK


def _names(values: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(values))


def _params(job_id: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job_id, **{f"v_{name}": value for name, value in values.items()}}


def _set(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(f"v_{name}", type_=_JOBS.c[name].type) for name in names}


@cached_statement
def _update_statement(names: tuple[str, ...]) -> Any:
    return update(_JOBS).where(_ID).values(_set(names))


_UNSTARTED = (_JOBS.c.status_rank == 0) & _JOBS.c.prediction_id.is_(None)


def _sweep(condition: Any) -> Any:
    """A sweep's read, oldest job first, built once: what SQLAlchemy works out for a statement
    built at each call (its compilation, once per engine) is then worked out once a process."""
    return built_once(select(_JOBS).where(condition).order_by(_JOBS.c.created_at))


def _at(name: str) -> Any:
    return bindparam(name, type_=_JOBS.c.updated_at.type)


_BY_PREDICTION = built_once(
    select(_JOBS).where(_JOBS.c.prediction_id == bindparam("prediction_id"))
)
_UNFINISHED = _sweep(_RUNNING)
_UNFINISHED_SILENT = _sweep(_RUNNING & (_JOBS.c.updated_at < _at("quiet_since")))
_UNSTARTED_QUIET = _sweep(
    _UNSTARTED
    & _JOBS.c.waiting_since.is_(None)  # one in the queue waits on purpose: it is not lost
    & (_JOBS.c.updated_at < _at("quiet_since"))
)


@cached_statement
def _attach_statement() -> Any:
    """Record a create's prediction, unless the job ended without one meanwhile (canceled)."""
    open_or_known = (_JOBS.c.status_rank < TERMINAL_RANK) | _JOBS.c.prediction_id.is_not(None)
    return update(_JOBS).where(_ID, open_or_known).values(_set(("prediction_id", "updated_at")))


_INSERT = built_once(_JOBS.insert())
_ANY_JOB = built_once(select(_JOBS.c.id).limit(1))
_WAITING = built_once(
    select(_JOBS.c.platform, _JOBS.c.workspace).where(_JOBS.c.waiting_since.is_not(None)).distinct()
)


@cached_statement
def _touch_unstarted_statement(names: tuple[str, ...]) -> Any:
    unchanged = _JOBS.c.updated_at == bindparam("seen", type_=_JOBS.c.updated_at.type)
    return update(_JOBS).where(_ID, _UNSTARTED, unchanged).values(_set(names))


@cached_statement
def _advance_statement(names: tuple[str, ...]) -> Any:
    forward = _JOBS.c.status_rank < bindparam("v_status_rank")
    return update(_JOBS).where(_ID, forward).values(_set(names)).returning(*_JOBS.c)


@cached_statement
def _progress_statement() -> Any:
    progress = _JOBS.c.progress
    higher = progress.is_(None) | (progress < bindparam("v_progress"))
    return (
        update(_JOBS)
        .where(_ID, _RUNNING, higher)
        .values(_set(("progress", "updated_at")))
        .returning(*_JOBS.c)
    )


# The row a terminal UPDATE may change: a job still running, or one given up on before its
# prediction was known (a late result). Named, because the statements are cached by name.
_GUARDS = {
    "running": _RUNNING,
    "no_prediction": _JOBS.c.prediction_id.is_(None),
    "running_without_prediction": _RUNNING & _JOBS.c.prediction_id.is_(None),
}


def _claimable(now: Any, legacy_claimed_before: Any) -> Any:
    """A delivery that may be claimed at `now`: pending, or held by a lease that lapsed (a claim
    from before leases: made before `legacy_claimed_before`)."""
    delivering = _JOBS.c.delivery == Delivery.DELIVERING
    lease = _JOBS.c.delivery_lease_until
    lapsed = (lease < now) | (
        lease.is_(None) & (_JOBS.c.delivery_claimed_at < legacy_claimed_before)
    )
    return (_JOBS.c.delivery == Delivery.PENDING) | (delivering & lapsed)


_UNDELIVERED = _sweep(_claimable(_at("claim_now"), _at("legacy_claimed_before")))


def _delivery(now: Any, *, deliver: bool, claim: bool, lease: timedelta) -> dict[str, Any]:
    """A finished job's delivery columns: none, pending, or claimed by the caller."""
    if not deliver:
        return {"delivery": Delivery.NONE}
    if claim:
        return {
            "delivery": Delivery.DELIVERING,
            "delivery_claimed_at": now,
            "delivery_lease_until": now + lease,
        }
    return {"delivery": Delivery.PENDING}


@cached_statement
def _terminal_statement(names: tuple[str, ...], guard: str) -> Any:
    """The UPDATE that makes a job terminal where `guard` holds; setting a claim counts it."""
    values = _set(names)
    if "delivery_claimed_at" in names:
        values["delivery_attempts"] = _JOBS.c.delivery_attempts + 1
    return update(_JOBS).where(_ID, _GUARDS[guard]).values(values).returning(*_JOBS.c)


# What an adapter may keep in a destination that lets its holder post as Conjure: Slack's
# response_url, a Discord interaction's token. Where the messages are (channel, thread ts,
# message id) stays, to find them again.
CAPABILITY_KEYS = ("response_url", "token")


@cached_statement
def _finish_delivery_statement(dialect: str, claim: bool = False) -> Any:
    """The UPDATE that ends a delivery and strips CAPABILITY_KEYS from the destination, in SQL
    (so it cannot undo a concurrent change to the rest of the destination); with `claim`, only
    while the delivery is still that claim's (delivering, at its attempt)."""
    names = ("delivered_at", "delivery", "delivery_error", "updated_at")
    column = _JOBS.c.destination
    if dialect == "postgresql":
        stripped: Any = cast(column, JSONB)
        for key in CAPABILITY_KEYS:
            stripped = stripped.op("-")(literal(key, String))
        stripped = cast(stripped, JSON)
    else:
        stripped = func.json_remove(column, *(f"$.{key}" for key in CAPABILITY_KEYS))
    where = [_ID]
    if claim:
        attempt = bindparam("attempt", type_=_JOBS.c.delivery_attempts.type)
        where += [_JOBS.c.delivery == Delivery.DELIVERING, _JOBS.c.delivery_attempts == attempt]
    return update(_JOBS).where(*where).values({**_set(names), "destination": stripped})


@cached_statement
def _merge_destination_statement(dialect: str) -> Any:
    """The UPDATE that adds keys to the destination (top level: JSON merge patch on SQLite,
    jsonb `||` on PostgreSQL)."""
    column, fields = _JOBS.c.destination, bindparam("fields", type_=JSON)
    if dialect == "postgresql":
        merged: Any = cast(cast(column, JSONB).op("||")(cast(fields, JSONB)), JSON)
    else:
        merged = func.json_patch(column, fields)
    return update(_JOBS).where(_ID).values({**_set(("updated_at",)), "destination": merged})


def _job(mapping: Any) -> Job:
    return from_row(Job, mapping)
