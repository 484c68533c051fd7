"""The moments of a job's life at which the crash bench kills `conjure serve` (eight).

Each step is hit precisely by holding the outside world at that moment: the fake Slack holds
the announcement (the job row is committed, the create not yet sent), the sandbox holds a
create's answer (created, the answer not yet read), keeps predictions starting (created and
known, not finished), holds the output download (the terminal webhook applied), the fake Slack
holds the upload's bytes or the answer to the share. One more, `after_ack`, is a burst whose
commands beyond the start slots are acknowledged while they wait their turn. `arm` sets the
hold for `n` jobs, `reached` says when all `n` are there, and the kill follows at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.faults.rig import Rig
from bot.jobs import SUBMITS_AT_ONCE
from storage.models import TERMINAL_RANK

HOLD = 120.0  # seconds: longer than any round; a killed client ends a hold at once
AFTER_CREATE_START = 4.0  # seconds a prediction stays `starting` in "after create"


@dataclass
class Moment:
    """Where the bench stood at arming time, to tell when the held requests have arrived."""

    creates: int = 0
    faults_seen: int = 0


@dataclass(frozen=True)
class Step:
    """One kill point: how to hold the world there, and how to see that every job reached it."""

    name: str
    arm: Callable[[Rig, int], Awaitable[Moment]]
    reached: Callable[[Rig, int, Moment, list[str]], Awaitable[bool]]
    lease_takeover: bool  # the killed instance held the delivery: the lease must lapse first
    batch: int | None = None  # jobs per kill whatever --per-kill says


async def _seen(rig: Rig, target: str) -> int:
    ledger = await rig.poll_slack()
    return sum(1 for event in ledger.faults if event.get("target") == target)


def _slack_hold(method: str, action: str) -> Callable[[Rig, int], Awaitable[Moment]]:
    async def arm(rig: Rig, n: int) -> Moment:
        seen = await _seen(rig, method)
        await rig.slack_fault(method=method, action=action, calls=n, hold_seconds=HOLD)
        return Moment(faults_seen=seen)

    return arm


def _slack_arrived(method: str) -> Callable[[Rig, int, Moment, list[str]], Awaitable[bool]]:
    async def reached(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
        return await _seen(rig, method) >= moment.faults_seen + n

    return reached


async def _starting_full(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
    """As many announcements held as jobs may start at once: the rest wait their turn, and
    are acknowledged meanwhile (the bench kills once every ack is back)."""
    held = min(n, SUBMITS_AT_ONCE)
    return await _seen(rig, "chat.postMessage") >= moment.faults_seen + held


async def _arm_create(rig: Rig, n: int) -> Moment:
    creates = (await rig.sandbox_stats())["create_count"]
    await rig.sandbox_faults(http=[{"delay": HOLD, "method": "POST", "count": n}])
    return Moment(creates=creates)


async def _created(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
    return (await rig.sandbox_stats())["create_count"] >= moment.creates + n


async def _arm_starting(rig: Rig, n: int) -> Moment:
    await rig.sandbox_faults(slow_start=AFTER_CREATE_START)
    return Moment()


async def _known(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
    jobs = await rig.jobs(users)
    return all(rows and rows[0]["prediction_id"] for rows in jobs.values())


async def _arm_download(rig: Rig, n: int) -> Moment:
    fault = {"delay": HOLD, "method": "GET", "path_prefix": "/files/", "count": n}
    await rig.sandbox_faults(http=[fault])
    return Moment()


async def _finished(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
    jobs = await rig.jobs(users)
    return all(rows and rows[0]["status_rank"] >= TERMINAL_RANK for rows in jobs.values())


async def _downloading(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
    faults: list[dict[str, Any]] = (await rig.sandbox_faults_now())["http"]
    return not any(f.get("path_prefix") == "/files/" for f in faults)


async def _shared(rig: Rig, n: int, moment: Moment, users: list[str]) -> bool:
    ledger = await rig.poll_slack()
    return all(ledger.uploads.get(user) for user in users)


STEPS: tuple[Step, ...] = (
    Step(
        "before_create",
        _slack_hold("chat.postMessage", "hold"),
        _slack_arrived("chat.postMessage"),
        False,
    ),
    # A burst: every start slot held at its announcement, the commands past them acknowledged
    # while they wait for one. Acknowledged before being recorded, they would be lost here.
    Step(
        "after_ack",
        _slack_hold("chat.postMessage", "hold"),
        _starting_full,
        False,
        batch=SUBMITS_AT_ONCE + 4,
    ),
    Step("during_create", _arm_create, _created, False),
    Step("after_create", _arm_starting, _known, False),
    Step("after_webhook", _arm_download, _finished, True),
    Step("during_download", _arm_download, _downloading, True),
    Step("during_upload", _slack_hold("upload", "hold"), _slack_arrived("upload"), True),
    Step(
        "after_upload",
        _slack_hold("files.completeUploadExternal", "hold_after"),
        _shared,
        True,
    ),
)
