"""The tables. Money is integer micro-dollars; times are aware UTC datetimes.

Every micro-dollar column is a BIGINT: PostgreSQL's INTEGER stops at 2^31 - 1 micro-dollars
($2,147.48), which one month's budget or spend, or one long by-the-second run, can pass.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage import clock


def utcnow() -> datetime:
    """Aware UTC now (SQLModel's UTCDateTime refuses naive values, so nothing is ambiguous), by
    the database's clock (storage.clock): what instances compare, they read alike."""
    return clock.now()


class JobStatus(StrEnum):
    """A job's state; the rank orders them so that a status only ever moves forward."""

    QUEUED = "queued"
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @property
    def terminal(self) -> bool:
        return self.rank == TERMINAL_RANK


TERMINAL_RANK = 3
_RANKS = {
    JobStatus.QUEUED: 0,
    JobStatus.STARTING: 1,
    JobStatus.PROCESSING: 2,
    JobStatus.SUCCEEDED: TERMINAL_RANK,
    JobStatus.FAILED: TERMINAL_RANK,
    JobStatus.CANCELED: TERMINAL_RANK,
    JobStatus.ABORTED: TERMINAL_RANK,
}


class Delivery(StrEnum):
    """Where the result stands on its way to the chat: claimed by exactly one instance."""

    NONE = "none"  # not finished yet
    PENDING = "pending"  # finished; waiting for an instance to claim the delivery
    DELIVERING = "delivering"  # claimed, until delivery_lease_until unless renewed
    DELIVERED = "delivered"
    FAILED = "failed"


class Reservation(StrEnum):
    """The job's hold on the usage counters: settled or released exactly once."""

    HELD = "held"
    SETTLED = "settled"
    RELEASED = "released"


class Job(SQLModel, table=True):
    """One command run: who asked where, what ran, what it cost, where the result went."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_status_rank", "status_rank"),
        Index("ix_job_delivery", "delivery"),
        Index("ix_job_user", "platform", "workspace", "user_id"),
        # One job per command however often the platform sends it (Slack's retries, a gateway
        # redelivering an interaction, two instances both receiving it): the database says no.
        Index("uq_job_request_key", "request_key", unique=True),
        Index("ix_job_parent", "parent_id", "followup", "user_id"),
        Index("ix_job_waiting", "platform", "workspace", "waiting_since"),
    )

    id: str = Field(primary_key=True, max_length=32)
    platform: str = Field(max_length=32)
    workspace: str = Field(max_length=64)
    channel: str = Field(max_length=64)
    user_id: str = Field(max_length=64)
    user_name: str | None = Field(default=None, max_length=128)
    # The platform's id of the command ("slack:<trigger_id>", "discord:<interaction id>");
    # None where there is none (the console). Unique, so a command sent twice runs once.
    request_key: str | None = Field(default=None, max_length=128)
    # A job started by a button on another job's message: that job, and which button
    # ("reroll", "upscale:2", "vary:1"). None for a job typed as a command.
    parent_id: str | None = Field(default=None, max_length=32)
    followup: str | None = Field(default=None, max_length=16)
    command: str = Field(max_length=32)
    model: str = Field(max_length=64)
    model_ref: str = Field(max_length=200)
    prompt: str
    input: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    destination: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )

    status: str = Field(default=JobStatus.QUEUED, max_length=16)
    # Set while the job waits for one of its person's (or workspace's) jobs-in-flight slots:
    # the queue's order. It holds no reservation then, only its place (JobStore.promote).
    waiting_since: datetime | None = None
    queue_ahead: int | None = None  # jobs ahead of it in its person's queue, as last shown
    status_rank: int = 0
    progress: int | None = None
    prediction_id: str | None = Field(default=None, max_length=64, index=True)
    error: str | None = None
    output: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    predict_time: float | None = None

    outputs_expected: int = 1
    estimated_micros: int = Field(default=0, sa_type=BigInteger)
    actual_micros: int | None = Field(default=None, sa_type=BigInteger)
    usage_period: str = Field(max_length=32)
    # The usage-counter rows this job holds, with the limits in force when it was admitted:
    # settling walks exactly these, whatever the configuration says by then.
    holds: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    reservation: str = Field(default=Reservation.HELD, max_length=16)

    delivery: str = Field(default=Delivery.NONE, max_length=16)
    delivery_claimed_at: datetime | None = None
    # The claim's lease: its holder renews it while delivering; once it has lapsed, the holder
    # is taken for dead and another instance may claim the delivery.
    delivery_lease_until: datetime | None = None
    delivery_attempts: int = 0
    delivery_error: str | None = None

    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    delivered_at: datetime | None = None

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)

    @property
    def duration_seconds(self) -> float | None:
        """Wall time from the command to the terminal status."""
        if self.completed_at is None:
            return None
        return (self.completed_at - self.created_at).total_seconds()


class UsageCounter(SQLModel, table=True):
    """Usage of one subject in one window; created on first use, so nothing needs resetting.

    `period` is a window key ("day:2026-11-23", "month:2026-11") or "live" for jobs in flight,
    whose row counts running jobs in `jobs`.
    """

    __tablename__ = "usage_counter"
    __table_args__ = (UniqueConstraint("scope", "subject", "period", name="uq_usage_counter_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)  # "user" or "workspace"
    subject: str = Field(max_length=200)  # "slack:T123:U456"
    period: str = Field(max_length=32)  # "day:2026-11-23"
    jobs: int = 0
    reserved_micros: int = Field(default=0, sa_type=BigInteger)
    spent_micros: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = Field(default_factory=utcnow)


class QuotaOverride(SQLModel, table=True):
    """An admin's limits for one user or workspace; None falls back to the configured default."""

    __tablename__ = "quota_override"
    __table_args__ = (UniqueConstraint("scope", "subject", name="uq_quota_override_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)
    subject: str = Field(max_length=200)
    jobs_per_day: int | None = None
    usd_per_month_micros: int | None = Field(default=None, sa_type=BigInteger)
    max_in_flight: int | None = None
    updated_by: str | None = Field(default=None, max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)


class BudgetAlert(SQLModel, table=True):
    """An outbox row: a budget crossed a threshold in a window. Unique, so it fires once."""

    __tablename__ = "budget_alert"
    __table_args__ = (
        UniqueConstraint("scope", "subject", "period", "threshold", name="uq_budget_alert_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(max_length=16)
    subject: str = Field(max_length=200)
    period: str = Field(max_length=32)
    threshold: int  # percent: 80 or 100
    spent_micros: int = Field(sa_type=BigInteger)
    limit_micros: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    # A sender's claim: it posts the alert before this. Past it the sender is taken for dead
    # (killed between its claim and its post) and another sends the alert (storage.quotas).
    claimed_until: datetime | None = None


class AuditEntry(SQLModel, table=True):
    """Who changed what: every admin action, for the audit trail."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=200)  # "slack:T1:U1", or "cli"
    action: str = Field(max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ConfirmationStatus(StrEnum):
    """Where a question "this will cost about $X: run it?" stands; it moves on once."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    DECLINED = "declined"


class Confirmation(SQLModel, table=True):
    """A command waiting for its person to confirm its price (bot.confirm): everything needed
    to submit it as typed, and nothing reserved. Kept in the database, not in memory, so the
    button works after a restart and on any instance; its own table, so no limit, sweeper or
    report that reads jobs ever counts it."""

    __tablename__ = "confirmation"
    __table_args__ = (Index("ix_confirmation_expires", "expires_at"),)

    id: str = Field(primary_key=True, max_length=32)
    platform: str = Field(max_length=32)
    workspace: str = Field(max_length=64)
    channel: str = Field(max_length=64)
    user_id: str = Field(max_length=64)
    user_name: str | None = Field(default=None, max_length=128)
    parent_id: str | None = Field(default=None, max_length=32)  # a follow-up's (Re-roll)
    followup: str | None = Field(default=None, max_length=16)
    command: str = Field(max_length=32)
    model: str = Field(max_length=64)
    prompt: str
    input: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outputs: int = 1
    estimate_micros: int = Field(default=0, sa_type=BigInteger)
    status: str = Field(default=ConfirmationStatus.PENDING, max_length=16)
    job_id: str | None = Field(default=None, max_length=32)  # the job its Run it started
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(default_factory=utcnow)


class SafetyRule(SQLModel, table=True):
    """A workspace's banned word or pattern (bot.safety): a command whose prompt matches it is
    refused before anything is reserved or created."""

    __tablename__ = "safety_rule"
    __table_args__ = (
        UniqueConstraint("platform", "workspace", "kind", "value", name="uq_safety_rule_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=32)
    workspace: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # "word" or "pattern"
    value: str = Field(max_length=200)
    created_by: str = Field(max_length=200)  # "slack:T1:U1", or "cli"
    created_at: datetime = Field(default_factory=utcnow)


class EndedAdminSession(SQLModel, table=True):
    """An admin page session ended by logging out (bot.admin.auth): a cookie of it is refused
    on every instance, though its signature and age still pass. Kept by a hash of the session's
    id, until a while after it would have lapsed anyway (storage.admin_sessions)."""

    __tablename__ = "ended_admin_session"
    __table_args__ = (Index("ix_ended_admin_session_valid_until", "valid_until"),)

    session_hash: str = Field(primary_key=True, max_length=64)  # SHA-256, hex
    valid_until: datetime  # when the cookie would have lapsed (its issue time + 12 hours)
