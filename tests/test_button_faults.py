"""Buttons when something on the way fails or is forged: Replicate refusing a cancel, a press
naming a job of another channel, a CDN outage, a second Cancel. Each test drives the real app (bolt,
the sandbox, the fake Slack) on loopback and checks what the person sees and is charged."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from bot.followups.service import ALREADY_CANCELED, GONE, IMAGE_UNREACHABLE, PRESS_AGAIN
from bot.jobs import CANCEL_REFUSED
from bot.sandbox.faults import HttpFault
from storage.models import utcnow
from tests.discord_harness import running_discord_conjure
from tests.fakes.discord_api import EPHEMERAL
from tests.harness import database_not_answering, database_refusing_the_sql
from tests.slack_harness import (
    running_slack_conjure,
)
from tests.test_discord_buttons import callbacks, children, made
from tests.test_slack_buttons import (
    BOB,
    CHANNEL,
    finished_imagine,
    running_job,
)

SECRET = "C0SECRET"


async def test_a_cancel_replicate_refuses_is_said_and_the_job_keeps_its_cancel(
    sandbox_server, sqlite_url: str
) -> None:
    """Replicate answers the cancel with 503s until Conjure gives up: the prediction runs on
    (and will be charged), so the owner must be told, not left believing it stopped."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await running_job(conjure, sandbox_server, "a slow dawn")
        sandbox_server.sandbox.faults.http.append(
            HttpFault(
                status=503,
                count=100,
                method="POST",
                path_prefix="/v1/predictions/",
                retry_after=0.01,
            )
        )
        pressed = await conjure.press(parent, "Cancel")
        assert pressed.response.status_code == 200
        await conjure.service.wait_idle()
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert answer.response_type == "ephemeral" and answer.text == CANCEL_REFUSED
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "processing"
        still = await conjure.runtime.store.get(job.id)
        assert still is not None and not still.job_status.terminal
        assert parent.button_labels == ["Cancel"]
        assert conjure.fake.replies(CHANNEL, parent.ts) == []
        sandbox_server.sandbox.faults.http.clear()
        await conjure.press(parent, "Cancel")
        await conjure.settle(sandbox_server)
        assert prediction["status"] == "canceled"


async def test_a_press_naming_a_job_of_another_channel_is_refused_and_reveals_nothing(
    sandbox_server, sqlite_url: str
) -> None:
    """Slack sends the value the client sends: Bob, in #general, forges a press whose value
    names Ada's job in a private channel. Nothing of that job (its prompt, its image) may be
    run or posted in #general."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", "a secret plan", channel_id=SECRET)
        await conjure.settle(sandbox_server)
        [secret] = conjure.fake.channel_messages(SECRET)
        assert secret.button_labels == ["Re-roll", "U1", "V1"]
        forged = dataclasses.replace(secret, channel=CHANNEL)  # the same value, pressed elsewhere

        for label in ("Re-roll", "U1", "V1"):
            pressed = await conjure.press(forged, label, user_id=BOB, user_name="bob")
            assert pressed.response.status_code == 200
            await conjure.settle(sandbox_server)
            [answer] = conjure.fake.responses_to(pressed.response_id)
            assert answer.response_type == "ephemeral" and answer.text == GONE
        assert sandbox_server.sandbox.create_count == 1  # Ada's own, nothing more
        assert conjure.fake.channel_messages(CHANNEL) == []
        assert conjure.fake.replies(CHANNEL, secret.ts) == []
        [ada_result] = conjure.fake.replies(SECRET, secret.ts)  # only Ada's own result
        assert ada_result.text == "<@U0ADA> here is your image."


async def test_a_discord_cdn_outage_says_try_again_not_that_the_image_is_gone(
    sandbox_server, sqlite_url: str
) -> None:
    """Replicate's link has expired and Discord's CDN answers 503 for a moment: the image is
    still there. Telling the presser it is gone sends them to pay for the command again; they
    are told to press again, and that works once the CDN is back."""
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "a harbour at dusk")
        await conjure.runtime.store.update_fields(
            parent.id, completed_at=utcnow() - timedelta(hours=2)
        )
        fake.outage(503, 60, path="^/attachments/")

        press = await conjure.press(message, "U1")
        await conjure.settle()

        [answer] = callbacks(fake, press)
        assert answer.payload["type"] == 4 and answer.payload["data"]["flags"] == EPHEMERAL
        text = answer.payload["data"]["content"]
        assert "no longer available" not in text and "try again" in text.lower()
        assert await children(conjure, parent) == []
        assert sandbox_server.sandbox.create_count == 1

        fake.outages.clear()
        again = await conjure.press(message, "U1")
        await conjure.settle()
        [child] = await children(conjure, parent)
        assert child.destination["message_id"] == fake.original(again.token)["id"]


async def test_a_second_cancel_says_canceled_not_finished(sandbox_server, sqlite_url: str) -> None:
    """Cancel pressed again (a double click, or on a copy of the message not yet updated):
    "already finished" would say the job ran to its end and was charged in full."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, _ = await running_job(conjure, sandbox_server, "a slow tide")
        before = dataclasses.replace(parent, blocks=list(parent.blocks or []))
        await conjure.press(parent, "Cancel")
        await conjure.settle(sandbox_server)
        assert parent.button_labels == []

        again = await conjure.press(before, "Cancel")
        await conjure.settle(sandbox_server)
        [answer] = conjure.fake.responses_to(again.response_id)
        assert answer.response_type == "ephemeral" and answer.text == ALREADY_CANCELED


async def test_a_slack_outage_says_try_again_not_that_the_image_is_gone(
    sandbox_server, sqlite_url: str
) -> None:
    """The same on Slack: a day later, files.info answers 500 for a moment. The image is still
    there; the presser is told to try again, and a press once Slack is back works."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await finished_imagine(conjure, sandbox_server, "an old map")
        await conjure.runtime.store.update_fields(job.id, completed_at=utcnow() - timedelta(days=1))
        conjure.fake.fail("files.info", count=10)

        pressed = await conjure.press(parent, "V1")
        await conjure.settle(sandbox_server)
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert answer.response_type == "ephemeral" and answer.text == IMAGE_UNREACHABLE
        assert sandbox_server.sandbox.create_count == 1

        conjure.fake.recover("files.info")
        await conjure.press(parent, "V1")
        await conjure.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 2


async def test_a_press_while_the_database_does_not_answer_says_so_and_runs_nothing(
    sandbox_server, sqlite_url: str, caplog
) -> None:
    """The database does not answer as U1 is pressed: the presser hears it cannot be reached
    and to press again, not of an internal error, and nothing runs; pressed again once it is
    back, the upscale runs."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, _ = await finished_imagine(conjure, sandbox_server, "a quiet harbour")
        caplog.clear()
        with database_not_answering(conjure.runtime.engine):
            pressed = await conjure.press(parent, "U1", user_id=BOB, user_name="bob")
            await conjure.service.wait_idle()
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert answer.response_type == "ephemeral"
        assert answer.text == PRESS_AGAIN
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert sandbox_server.sandbox.create_count == 1  # the first job's only

        await conjure.press(parent, "U1", user_id=BOB, user_name="bob")
        await conjure.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 2


async def test_a_press_the_database_refuses_as_a_mistake_is_an_internal_error_with_its_traceback(
    sandbox_server, sqlite_url: str, caplog
) -> None:
    """Not an outage but a mistake in what was asked (SQL the database refuses): the presser
    hears of an internal error, not to press again, and the log keeps the traceback."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, _ = await finished_imagine(conjure, sandbox_server, "a quiet harbour")
        caplog.clear()
        with database_refusing_the_sql(conjure.runtime.engine):
            pressed = await conjure.press(parent, "U1", user_id=BOB, user_name="bob")
            await conjure.service.wait_idle()
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert "internal error" in answer.text and answer.text != PRESS_AGAIN
        [logged] = [r for r in caplog.records if "button" in r.getMessage()]
        assert logged.levelno == logging.ERROR and logged.exc_info is not None
        assert sandbox_server.sandbox.create_count == 1
