"""Cancel when something on the way fails or takes long: what the person is told, and what they
are charged, is what Replicate ran. Through the real app, the sandbox on loopback (its faults)
and a real database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from bot.adapter import CommandRequest
from bot.followups.buttons import Action, Button
from bot.jobs import CANCEL_REFUSED
from bot.sandbox.faults import HttpFault
from storage.models import Delivery, JobStatus, utcnow
from tests.harness import running_conjure, settle
from tests.sandbox_fixtures import impatient_replicate
from tests.slack_harness import running_slack_conjure
from tests.test_followups import canceled_during_its_create
from tests.test_slack_buttons import running_job


def transcribe(audio: str) -> CommandRequest:
    return CommandRequest("console", "local", "terminal", "you", "transcribe", audio)


async def test_a_job_canceled_during_its_create_is_stopped_even_when_replicate_refuses_at_first(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The owner cancels while the create is on its way; when it answers, Replicate refuses the
    cancel with 503s for as long as the client retries. The person was told "canceled": the
    run must not go on to a result (delivered, and charged in full) they asked to stop."""
    faults = sandbox_server.sandbox.faults
    faults.http.append(HttpFault(delay=0.5, method="POST", path_prefix="/v1/models/"))
    faults.http.append(
        HttpFault(
            status=503, count=4, method="POST", path_prefix="/v1/predictions/", retry_after=0.01
        )
    )
    faults.slow_start = 10.0  # still starting when the cancel finally reaches it
    faults.drop_webhooks = 1
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        job_id, running = await canceled_during_its_create(conjure)
        assert (await running).error == "The job was canceled."

        await settle(conjure, sandbox_server)
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "canceled"
        done = await conjure.runtime.store.get(job_id)
        assert done is not None and done.job_status is JobStatus.CANCELED
        assert done.actual_micros == 0 and done.output is None
        assert done.delivery == Delivery.DELIVERED
        assert "here is your image" not in conjure.output.getvalue()


async def test_a_job_its_owner_cancels_after_a_long_wait_in_the_queue_says_canceled_not_ceiling(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Whisper is stopped by Replicate 60 s after its create (its cost ceiling). Two jobs that
    waited five minutes in the queue are canceled by their owner: one still waiting, one a few
    seconds into its run. Neither ran to its ceiling; "stopped at its cost ceiling ... still
    running after 1m" would say it ran away, and that what was charged was the ceiling's."""
    sandbox_server.sandbox.faults.run_seconds = 20.0  # well inside whisper's 60 s deadline
    audio = "https://example.com/talk.mp3"
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        store, commands = conjure.runtime.store, conjure.runtime.commands
        replies = [await commands.handle(transcribe(audio)) for _ in range(2)]
        running, waiting = [reply.job for reply in replies if reply.job is not None]
        assert (await store.get(waiting.id)).waiting_since is not None
        while (await store.get(running.id)).status != "processing":
            await asyncio.sleep(0.02)  # running, so Replicate bills the time it ran
        waited = utcnow() - timedelta(minutes=5)  # recorded, then queued, five minutes ago
        for job in (waiting, running):
            await store.update_fields(job.id, created_at=waited)

        for job in (waiting, running):
            reply = await conjure.runtime.followups.press(
                conjure.console._press(Button(Action.CANCEL, job.id))
            )
            assert not reply.refused, reply.text
        await settle(conjure, sandbox_server)
        done = [await store.get(job.id) for job in (waiting, running)]
        assert [job.job_status for job in done] == [JobStatus.CANCELED] * 2
        assert done[0].actual_micros == 0 and done[1].actual_micros > 0
        for job in done:
            assert job.actual_micros < job.estimated_micros  # far from its ceiling
    shown = conjure.output.getvalue()
    assert "cost ceiling" not in shown
    assert shown.count("The job was canceled.") == 2


async def test_a_cancel_whose_answer_is_lost_but_that_stopped_the_run_is_not_called_refused(
    sandbox_server, sqlite_url: str
) -> None:
    """Replicate stops the run, but its answer to the cancel never comes back in time. Telling
    the owner "the job is still running, press Cancel again" is false: it stopped, and is
    charged only what ran (here nothing: no image was made)."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await running_job(conjure, sandbox_server, "a slow dusk")
        sandbox = sandbox_server.sandbox
        sandbox.faults.drop_webhooks = 1  # nor does its webhook say so before the answer is due
        sandbox.faults.http.append(
            HttpFault(delay=5.0, method="POST", path_prefix="/v1/predictions/")
        )
        async with impatient_replicate(conjure.service, sandbox_server, timeout=0.3):
            pressed = await conjure.press(parent, "Cancel")
            assert pressed.response.status_code == 200
            await conjure.service.wait_idle()
        told = [answer.text for answer in conjure.fake.responses_to(pressed.response_id)]
        assert CANCEL_REFUSED not in told
        [prediction] = sandbox.predictions.values()
        assert prediction["status"] == "canceled"
        await conjure.settle(sandbox_server)
        done = await conjure.runtime.store.get(job.id)
        assert done is not None and done.job_status is JobStatus.CANCELED
        assert done.actual_micros == 0  # a per-output model, and no image was made
        assert parent.button_labels == []
