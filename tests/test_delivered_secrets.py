"""A delivered job's row keeps where its messages are, not the capabilities to post there.

Slack's response_url and a Discord interaction's token each let whoever holds them post as
Conjure. They are needed until the outcome is shown, and are dropped in the UPDATE that marks
the delivery done: a database dump, a backup or a report read later holds none of them.
"""

from __future__ import annotations

from typing import Any

from storage.models import Delivery, Job, JobStatus
from tests.discord_harness import running_discord_conjure
from tests.slack_harness import running_slack_conjure


async def job_of(runtime: Any, prediction_id: str) -> Job:
    job = await runtime.store.find_by_prediction(prediction_id)
    assert job is not None
    return job


async def test_slack_jobs_forget_their_response_url_once_delivered(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        fake.cannot_post["C0RANDOM"] = "not_in_channel"
        await conjure.slash("/imagine", "a heron", channel_id="C0GENERAL")
        await conjure.settle(sandbox_server)
        no_thread = await conjure.slash("/imagine", "a crane", channel_id="C0RANDOM")
        await conjure.settle(sandbox_server)

        # The job without a thread was shown through its response_url, start and end.
        posts = fake.responses_to(no_thread.response_id)
        assert len(posts) == 2 and "✅ done in " in posts[1].text

        threaded, unthreaded = [
            await job_of(conjure.runtime, prediction_id)
            for prediction_id in sandbox_server.sandbox.predictions
        ]
        for job in (threaded, unthreaded):
            assert job.job_status is JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED
            assert "response_url" not in job.destination, job.destination
            assert job.destination["user"] == "U0ADA"
        [parent] = fake.channel_messages("C0GENERAL")
        assert threaded.destination["channel"] == "C0GENERAL"
        assert threaded.destination["thread_ts"] == parent.ts
        assert unthreaded.destination["channel"] == "C0RANDOM"
        assert unthreaded.destination["no_thread"] == "not_in_channel"


async def test_discord_jobs_forget_their_interaction_token_once_delivered(
    sandbox_server, database_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        succeeded = await conjure.interact("imagine", {"prompt": "a red fox"})
        await conjure.settle()
        sandbox_server.sandbox.faults.fail_next = 1
        failed = await conjure.interact("imagine", {"prompt": "a grey wolf"})
        await conjure.settle()

        jobs = [
            await job_of(conjure.runtime, prediction_id)
            for prediction_id in sandbox_server.sandbox.predictions
        ]
        assert [job.job_status for job in jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED]
        for job, sent in zip(jobs, (succeeded, failed), strict=True):
            # Shown by editing the deferred response with the token ...
            message = conjure.discord.original(sent.token)
            assert message is not None
            shown = "✅ done in" if job.job_status is JobStatus.SUCCEEDED else "❌ failed"
            assert shown in message["content"], message["content"]
            # ... which the row no longer holds; what finds the message again stays.
            assert job.delivery == Delivery.DELIVERED
            assert "token" not in job.destination, job.destination
            assert sent.token not in str(job.destination)
            assert job.destination["message_id"] == message["id"]
            assert job.destination["channel_id"] == sent.payload["channel_id"]
            assert job.destination["interaction_id"] == sent.payload["id"]
