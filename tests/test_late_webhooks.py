"""A job whose outcome is recorded is not followed again: not by a webhook that comes after its
outcome, nor by its create's answer coming after it, nor when its create failed.

Each job followed shares its workspace's budget of status edits (bot.updates): one followed for
good, because it ended without being forgotten, slowed the edits of every later job there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from bot.sandbox import HttpFault
from bot.sandbox.webhooks import encode_body, signed_headers
from storage.models import JobStatus
from tests.harness import Conjure, all_jobs, running_conjure, settle
from tests.sandbox_fixtures import SandboxServer

# At 3 edits a minute, one job alone in its workspace is shown every 20 s, before flux-schnell's
# 30 s run limit: its `start` and `logs` are worth asking for. With a second job followed, every
# 40 s: only its outcome is (bot.updates.FollowedJobs.status_worth_asking).
EDITS_PER_MINUTE = 3.0
ALL_EVENTS = ["start", "logs", "completed"]


def _events_asked(sandbox: SandboxServer) -> list[list[str] | None]:
    predictions = sorted(sandbox.sandbox.predictions.values(), key=lambda p: p["created_at"])
    return [p["webhook_events_filter"] for p in predictions]


def few_edits(
    sandbox: SandboxServer, sqlite_url: str, tmp_path: Path
) -> contextlib.AbstractAsyncContextManager[Conjure]:
    """The console at EDITS_PER_MINUTE: a second job followed changes what the next one asks."""
    return running_conjure(
        sandbox, sqlite_url, tmp_path / "out", conjure_status_edits_per_minute=EDITS_PER_MINUTE
    )


async def a_second_job(conjure: Conjure, sandbox: SandboxServer) -> None:
    """Another job, run to its end: which webhooks it asked for tells how many were followed."""
    second = await conjure.console.run_line("/imagine a second owl", timeout=20)
    await settle(conjure, sandbox)
    assert second.ok


async def test_a_late_processing_webhook_does_not_cost_the_next_job_its_status_edits(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """A `processing` webhook of a job already delivered (a retry, out of order) made Conjure
    follow that job again, for good: the workspace's status edits were then shared with a job
    that never ends, and, a few such webhooks on, its new jobs were no longer shown running."""
    async with few_edits(sandbox_server, sqlite_url, tmp_path) as conjure:
        first = await conjure.console.run_line("/imagine an owl", timeout=20)
        await settle(conjure, sandbox_server)
        assert first.ok
        [done] = sandbox_server.sandbox.predictions.values()
        late = {**done, "status": "processing", "output": None, "completed_at": None}
        body = encode_body(late)
        headers = signed_headers(sandbox_server.webhook_secret, "msg_late", int(time.time()), body)
        path = done["webhook"].removeprefix(conjure.url)
        response = await conjure.http.post(path, content=body, headers=headers)
        assert response.status_code == 200

        await a_second_job(conjure, sandbox_server)
    assert _events_asked(sandbox_server) == [ALL_EVENTS, ALL_EVENTS]


async def test_a_create_answered_after_its_outcome_does_not_cost_the_next_job_its_status_edits(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """A quick model's `completed` webhook can come before its create's answer (held up on its
    way back). That answer, a `starting` prediction, made Conjure follow the job again after
    its outcome had been delivered, for good."""
    faults = sandbox_server.sandbox.faults
    async with few_edits(sandbox_server, sqlite_url, tmp_path) as conjure:
        faults.http.append(HttpFault(method="POST", path_prefix="/v1/models/", delay=2.0))
        first = asyncio.create_task(conjure.console.run_line("/imagine an owl", timeout=20))
        for _ in range(1000):  # delivered while its create's answer is still on its way
            jobs = await all_jobs(conjure.runtime.store)
            if jobs and jobs[0].job_status is JobStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.01)
        assert (await first).ok
        await settle(conjure, sandbox_server)

        await a_second_job(conjure, sandbox_server)
    assert _events_asked(sandbox_server) == [ALL_EVENTS, ALL_EVENTS]


async def test_a_failed_create_does_not_cost_the_next_job_its_status_edits(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """A create Replicate refused failed its job, charged nothing, but left it followed for
    good: after a few, a workspace's new jobs were no longer shown running."""
    faults = sandbox_server.sandbox.faults
    async with few_edits(sandbox_server, sqlite_url, tmp_path) as conjure:
        faults.http.append(HttpFault(status=422, method="POST", path_prefix="/v1/models/"))
        refused = await conjure.console.run_line("/imagine an owl", timeout=20)
        assert not refused.ok

        await a_second_job(conjure, sandbox_server)
    assert _events_asked(sandbox_server) == [ALL_EVENTS]
