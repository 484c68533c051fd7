"""Quota faults found in review: money charged by paths other than the usual settle still
counts toward the budget's alerts. Through the real app, the sandbox on loopback and a real
database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.adapter import CommandRequest
from storage.jobs import user_subject
from storage.models import JobStatus
from tests.harness import all_jobs, running_conjure, settle
from tests.sandbox_fixtures import impatient_replicate, lose_the_next_create


def request(text: str, user: str = "you") -> CommandRequest:
    return CommandRequest("console", "local", "terminal", user, "imagine", text, user_name=user)


async def test_a_late_charge_that_reaches_a_budget_threshold_alerts_the_admins(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """The create's answer was lost, the job given up; then its webhook shows the prediction
    ran and it is charged late (storage.usage.charge_late). That spend reaches 80% and 100%
    of the person's budget: the admins are told at once, as for a job settled the usual way
    (not a minute later, when the leader's sweeper looks at the outbox)."""
    lose_the_next_create(sandbox_server)
    async with running_conjure(
        sandbox_server,
        database_url,
        tmp_path / "out",
        conjure_user_usd_per_month=0.003,  # one flux-schnell image
        conjure_alert_channels="console:admins",
    ) as conjure:
        async with impatient_replicate(conjure.service, sandbox_server):
            outcome = await conjure.console.run_line("/imagine a ghost")
            await settle(conjure, sandbox_server)
        assert not outcome.ok
        [job] = await all_jobs(conjure.runtime.store)
        assert job.status == JobStatus.SUCCEEDED and job.actual_micros == 3000
        alerts = [line for line in conjure.output.getvalue().splitlines() if "[admins]" in line]
        assert len(alerts) == 2, alerts
        assert any("<@you> has used 80%" in line for line in alerts)
        assert any("has reached 100%" in line and "$0.003 of $0.003" in line for line in alerts)


async def test_a_queued_job_whose_slot_limit_drops_to_zero_is_refused_not_left_waiting(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """A job waits for a slot; an admin then sets the person's jobs-in-flight limit to 0 (none
    allowed). No slot will ever free for it, so when the running job ends the waiting one is
    refused with the reason (as a new command is), not left "queued" for ever."""
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_conjure(
        sandbox_server,
        database_url,
        tmp_path / "out",
        conjure_admins="console:boss",
        conjure_user_max_in_flight=1,
    ) as conjure:
        console, store = conjure.console, conjure.runtime.store
        first, second = [
            (await conjure.runtime.commands.handle(request(f"fox number {n}"))).job
            for n in range(2)
        ]
        assert first is not None and second is not None
        assert (await store.get(second.id)).waiting_since is not None
        console.user = "boss"
        answer = await console.run_line("/conjure quota <@you> inflight=0")
        console.user = "you"
        assert "in flight 0" in str(answer.text)
        for _ in range(40):
            await settle(conjure, sandbox_server)
            await conjure.service.sweep_waiting()
            second = await store.get(second.id)
            if second.job_status.terminal:
                break
            await asyncio.sleep(0.05)
        assert (await store.get(first.id)).job_status is JobStatus.SUCCEEDED
        assert second.job_status is JobStatus.FAILED, second.status
        assert "limit of jobs running at once is 0" in (second.error or "")
        assert sandbox_server.sandbox.create_count == 1
        queue = await store.counter("user", user_subject("console", "local", "you"), "queue")
        assert queue is not None and queue.jobs == 0
