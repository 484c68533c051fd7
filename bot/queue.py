"""The queue at the jobs-in-flight limit: who may wait, and the places a waiting job holds.

A person whose jobs in flight are at their limit (Midjourney's relax mode) has the job queued
instead of refused, up to CONJURE_USER_MAX_QUEUED waiting (and CONJURE_WORKSPACE_MAX_QUEUED in
one workspace). A waiting job reserves nothing but its place: its budget and daily count are
taken when it leaves the queue (JobService.start_waiting), as for a new job.
"""

from __future__ import annotations

from bot.config import Settings
from bot.quotas.limits import USER, WORKSPACE
from storage.jobs import user_subject, workspace_subject
from storage.models import Job
from storage.usage import Hold, HoldKind

QUEUE = "queue"  # the usage-counter period that counts a subject's waiting jobs


def queueable(refused_by: Hold, settings: Settings) -> bool:
    """Whether a job refused by `refused_by` may wait instead: only for a slot (a limit on
    jobs in flight that is not 0, so one will free), and only where queueing is on."""
    return (
        refused_by.kind is HoldKind.IN_FLIGHT
        and refused_by.period != QUEUE
        and refused_by.limit not in (None, 0)
        and settings.conjure_user_max_queued > 0
        and settings.conjure_workspace_max_queued > 0
    )


def queue_places(job: Job, settings: Settings) -> list[Hold]:
    """The counters a waiting job holds a place on (user first: the lock order), each given
    back when it leaves the queue, started, canceled or refused."""
    return [
        Hold(
            HoldKind.IN_FLIGHT,
            USER,
            user_subject(job.platform, job.workspace, job.user_id),
            QUEUE,
            settings.conjure_user_max_queued,
        ),
        Hold(
            HoldKind.IN_FLIGHT,
            WORKSPACE,
            workspace_subject(job.platform, job.workspace),
            QUEUE,
            settings.conjure_workspace_max_queued,
        ),
    ]


def queue_full(place: Hold) -> str:
    """Why a job that could have waited was refused all the same."""
    if place.scope == USER:
        return f"You also have {place.limit} jobs waiting, the most Conjure queues for you."
    return f"This workspace also has {place.limit} jobs waiting, the most Conjure queues for it."
