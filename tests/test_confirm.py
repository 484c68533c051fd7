"""Asking before a costly job (CONJURE_CONFIRM_ABOVE_USD, $0.50 by default): a /video is first
a private question, "This will cost about $0.50. [Run it] [Cancel]", and nothing is reserved,
recorded as a job or sent to Replicate until its person presses Run it; then one job runs,
charged once, however often it is pressed. Driven through the real slack-bolt and discord.py."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import update

from bot.confirm import ALREADY_DECLINED, ALREADY_STARTED, DECLINED, NOT_YOURS
from bot.quotas.windows import month_window
from bot.safety import REFUSED
from bot.sandbox.faults import HttpFault
from storage.engine import write
from storage.jobs import user_subject
from storage.models import Confirmation, Delivery, Job, utcnow
from tests.discord_harness import (
    GUILD_ID,
    USER_ID,
    button_styles,
    buttons,
    running_discord_conjure,
)
from tests.fakes.discord_api import EPHEMERAL, FakeDiscord
from tests.fakes.slack_api import TEAM_ID, Message
from tests.harness import running_conjure
from tests.slack_harness import (
    SlackConjure,
    block_actions_payload,
    running_slack_conjure,
    signed_headers,
)

CHANNEL = "C0GENERAL"
ADA, BOB = "U0ADA", "U0BOB"
VIDEO_MICROS = 500_000
QUESTION = "This /video will cost about $0.50. Run it?"
_presses = iter(range(1, 1_000_000))


# ---- helpers -------------------------------------------------------------------------------


async def _all_jobs(conjure: Any) -> list[Job]:
    from sqlalchemy import select

    async with conjure.runtime.store.reader.connect() as conn:
        rows = (await conn.execute(select(Job.__table__))).all()  # type: ignore[attr-defined]
    return [Job.model_validate(dict(row._mapping)) for row in rows]


async def usage(conjure: Any, platform: str, workspace: str, user_id: str) -> tuple[int, int]:
    """(spent, reserved) micro-dollars of `user_id` this month."""
    subject = user_subject(platform, workspace, user_id)
    counter = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
    return (0, 0) if counter is None else (counter.spent_micros, counter.reserved_micros)


async def nothing_started(conjure: Any, sandbox_server: Any, *who: tuple[str, str, str]) -> None:
    assert await _all_jobs(conjure) == []
    assert sandbox_server.sandbox.create_count == 0
    for platform, workspace, user in who:
        assert await usage(conjure, platform, workspace, user) == (0, 0)


async def expire(conjure: Any) -> None:
    """Every question asked so far passes its 10 minutes."""
    async with conjure.runtime.store.engine.begin() as conn:
        await conn.execute(
            update(Confirmation.__table__).values(  # type: ignore[attr-defined]
                expires_at=utcnow() - timedelta(seconds=1)
            )
        )


def question_of(conjure: SlackConjure, ack: dict[str, Any]) -> Message:
    """The private question a /video was answered with, as a message its buttons are on."""
    assert ack["response_type"] == "ephemeral"
    return Message(channel=CHANNEL, ts="1700000000.000100", text=ack["text"], blocks=ack["blocks"])


async def press_private(
    conjure: SlackConjure, question: Message, label: str, user_id: str = ADA
) -> str:
    """Click `label` on a private (ephemeral) message, as Slack sends it; the response id."""
    response_id = f"q{next(_presses)}"
    payload = block_actions_payload(
        conjure.fake,
        question,
        question.button(label),
        user_id=user_id,
        user_name=user_id.lower(),
        response_id=response_id,
    )
    payload["container"]["is_ephemeral"] = True
    body = urlencode({"payload": json.dumps(payload)})
    headers = signed_headers(conjure.signing_secret, body)
    response = await conjure.http.post("/slack/events", content=body, headers=headers)
    assert response.status_code == 200
    return response_id


def answers(conjure: SlackConjure, response_id: str) -> list[str]:
    return [r.text for r in conjure.fake.responses_to(response_id)]


# ---- Slack -----------------------------------------------------------------------------------


async def test_slack_video_asks_first_and_runs_once_only_after_run_it(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        sent = await conjure.slash("/video", "a red fox running through the snow")
        question = question_of(conjure, sent.ack)
        assert question.text.startswith(QUESTION) and "10 minutes" in question.text
        assert question.button_labels == ["Run it", "Cancel"]
        assert [b.get("style") for b in question.buttons] == ["primary", "danger"]
        await conjure.settle(sandbox_server)
        await nothing_started(conjure, sandbox_server, ("slack", TEAM_ID, ADA))
        assert conjure.fake.channel_messages(CHANNEL) == []

        # Someone else's press is refused, privately, and starts nothing.
        refused = await press_private(conjure, question, "Run it", user_id=BOB)
        await conjure.settle(sandbox_server)
        assert answers(conjure, refused) == [NOT_YOURS]
        await nothing_started(conjure, sandbox_server, ("slack", TEAM_ID, BOB))

        # Run it, twice at once: one job, one prediction, charged once, delivered in a thread.
        first, second = await asyncio.gather(
            press_private(conjure, question, "Run it"), press_private(conjure, question, "Run it")
        )
        await conjure.settle(sandbox_server)
        [job] = await _all_jobs(conjure)
        assert (job.user_id, job.command, job.delivery) == (ADA, "video", Delivery.DELIVERED)
        assert sandbox_server.sandbox.create_count == 1
        assert await usage(conjure, "slack", TEAM_ID, ADA) == (VIDEO_MICROS, 0)
        [parent] = conjure.fake.channel_messages(CHANNEL)
        [upload] = conjure.fake.shared_uploads()
        assert upload.filename == "output.mp4" and upload.thread_ts == parent.ts
        said = answers(conjure, first) + answers(conjure, second)
        assert "▶️ Started: its own message shows how it goes." in said
        started = [r for r in conjure.fake.responses if r.text.startswith("▶️")]
        assert all(r.body.get("replace_original") is True for r in started)

        # A later press changes nothing.
        again = await press_private(conjure, question, "Run it")
        await conjure.settle(sandbox_server)
        assert answers(conjure, again) == [ALREADY_STARTED]
        assert sandbox_server.sandbox.create_count == 1
        assert await usage(conjure, "slack", TEAM_ID, ADA) == (VIDEO_MICROS, 0)


async def test_slack_cancel_pressed_while_run_it_starts_the_job_says_it_started(
    sandbox_server, database_url: str
) -> None:
    """Run it claims the question before its (slow) create: a Cancel pressed meanwhile is told
    the job started, and it runs and is charged once; it is never "nothing ran"."""
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        sent = await conjure.slash("/video", "a red fox running through the snow")
        question = question_of(conjure, sent.ack)
        await conjure.settle(sandbox_server)
        slow_create = HttpFault(method="POST", path_prefix="/v1/models/", delay=1.0)
        sandbox_server.sandbox.faults.http.append(slow_create)
        run_it = asyncio.create_task(press_private(conjure, question, "Run it"))
        while slow_create.count:  # until the create is on its way, held
            await asyncio.sleep(0.01)
        cancel = await press_private(conjure, question, "Cancel")
        await run_it
        await conjure.settle(sandbox_server)
        assert answers(conjure, cancel) == [ALREADY_STARTED]
        [job] = await _all_jobs(conjure)
        assert job.delivery == Delivery.DELIVERED and sandbox_server.sandbox.create_count == 1
        assert await usage(conjure, "slack", TEAM_ID, ADA) == (VIDEO_MICROS, 0)


async def test_slack_run_it_claimed_by_a_process_that_died_starts_on_the_next_press(
    sandbox_server, sqlite_url: str
) -> None:
    """A question claimed by a Run it whose process died before its job was recorded is not
    stuck "already started" with nothing running: the next press starts it, once."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.slash("/video", "a red fox running through the snow")
        question = question_of(conjure, sent.ack)
        async with conjure.runtime.store.engine.begin() as conn:
            await conn.execute(
                update(Confirmation.__table__).values(status="confirmed")  # type: ignore[attr-defined]
            )
        cancel = await press_private(conjure, question, "Cancel")
        first = await press_private(conjure, question, "Run it")
        await conjure.settle(sandbox_server)
        again = await press_private(conjure, question, "Run it")
        await conjure.settle(sandbox_server)
        assert answers(conjure, cancel) == [ALREADY_STARTED]
        assert answers(conjure, first) == ["▶️ Started: its own message shows how it goes."]
        assert answers(conjure, again) == [ALREADY_STARTED]
        [job] = await _all_jobs(conjure)
        assert job.delivery == Delivery.DELIVERED and sandbox_server.sandbox.create_count == 1
        assert await usage(conjure, "slack", TEAM_ID, ADA) == (VIDEO_MICROS, 0)


async def test_slack_cancel_and_expiry_are_explained_and_start_nothing(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        question = question_of(conjure, (await conjure.slash("/video", "a fox")).ack)
        canceled = await press_private(conjure, question, "Cancel")
        await conjure.settle(sandbox_server)
        assert answers(conjure, canceled) == [DECLINED]
        late = await press_private(conjure, question, "Run it")
        await conjure.settle(sandbox_server)
        assert answers(conjure, late) == [ALREADY_DECLINED]

        expired = question_of(conjure, (await conjure.slash("/video", "another fox")).ack)
        await expire(conjure)
        pressed = await press_private(conjure, expired, "Run it")
        await conjure.settle(sandbox_server)
        [told] = answers(conjure, pressed)
        assert told.startswith("That question expired (the buttons work for 10 minutes)")
        await nothing_started(conjure, sandbox_server, ("slack", TEAM_ID, ADA))


async def test_slack_cheap_commands_and_a_setting_of_zero_never_ask(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.slash("/imagine", "a fox")  # $0.003: below the price
        await conjure.settle(sandbox_server)
        assert sent.ack == {} and sandbox_server.sandbox.create_count == 1
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_confirm_above_usd="0"
    ) as conjure:
        await conjure.slash("/video", "a fox")
        await conjure.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 2


async def test_slack_reroll_of_a_video_asks_too(sandbox_server, sqlite_url: str) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        question = question_of(conjure, (await conjure.slash("/video", "a fox")).ack)
        await press_private(conjure, question, "Run it")
        await conjure.settle(sandbox_server)
        [parent] = conjure.fake.channel_messages(CHANNEL)
        assert "Re-roll" in parent.button_labels

        pressed = await conjure.press(parent, "Re-roll")
        await conjure.settle(sandbox_server)
        [asked] = conjure.fake.responses_to(pressed.response_id)
        assert asked.text.startswith(QUESTION) and asked.response_type == "ephemeral"
        assert sandbox_server.sandbox.create_count == 1  # nothing ran yet

        reroll = Message(
            channel=CHANNEL, ts=parent.ts, text=asked.text, blocks=asked.body["blocks"]
        )
        await press_private(conjure, reroll, "Run it")
        await conjure.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 2
        child = [j for j in await _all_jobs(conjure) if j.parent_id is not None]
        assert [(j.followup, j.delivery) for j in child] == [("reroll", Delivery.DELIVERED)]
        assert await usage(conjure, "slack", TEAM_ID, ADA) == (2 * VIDEO_MICROS, 0)


async def test_slack_question_survives_a_restart(sandbox_server, sqlite_url: str) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        question = question_of(conjure, (await conjure.slash("/video", "a fox")).ack)
        fake = conjure.fake
    async with running_slack_conjure(sandbox_server, sqlite_url) as restarted:
        restarted.fake = fake  # for the helpers: the same Slack, a new process
        await press_private(restarted, question, "Run it")
        await restarted.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 1
        assert await usage(restarted, "slack", TEAM_ID, ADA) == (VIDEO_MICROS, 0)


# ---- Discord ---------------------------------------------------------------------------------


def private_answers(fake: FakeDiscord, token: str) -> list[str]:
    """What a press's interaction said (its callback message, or follow-ups), privately."""
    said = []
    for call in fake.calls:
        if token not in call.path or call.method != "POST" or not call.payload:
            continue
        data = call.payload.get("data", call.payload)
        if isinstance(data, dict) and data.get("content"):
            assert int(data.get("flags") or 0) & EPHEMERAL
            said.append(str(data["content"]))
    return said


async def test_discord_video_asks_first_and_runs_once_only_after_run_it(
    sandbox_server, database_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("video", {"prompt": "a fox on a skateboard"})
        question = fake.original(sent.token)
        assert question is not None and question["flags"] & EPHEMERAL
        assert question["content"].startswith(QUESTION)
        assert buttons(question) == [["Run it", "Cancel"]]
        assert button_styles(question) == {"Run it": 1, "Cancel": 4}
        await conjure.settle()
        await nothing_started(conjure, sandbox_server, ("discord", str(GUILD_ID), str(USER_ID)))

        stranger = await conjure.press(question, "Run it", user_id=USER_ID + 1)
        await conjure.settle()
        assert private_answers(fake, stranger.token) == [NOT_YOURS]
        await nothing_started(conjure, sandbox_server)

        first, second = await asyncio.gather(
            conjure.press(question, "Run it"), conjure.press(question, "Run it")
        )
        await conjure.settle()
        [job] = await _all_jobs(conjure)
        assert job.delivery == Delivery.DELIVERED and sandbox_server.sandbox.create_count == 1
        assert await usage(conjure, "discord", str(GUILD_ID), str(USER_ID)) == (VIDEO_MICROS, 0)
        shown = [fake.original(first.token), fake.original(second.token)]
        results = [m for m in shown if m is not None and m["attachments"]]
        assert [[a["filename"] for a in m["attachments"]] for m in results] == [["output.mp4"]]
        assert not results[0]["flags"] & EPHEMERAL  # the job's message is the channel's

        again = await conjure.press(question, "Run it")
        await conjure.settle()
        assert private_answers(fake, again.token) == [ALREADY_STARTED]
        assert sandbox_server.sandbox.create_count == 1


async def test_discord_cancel_and_expiry_are_explained(sandbox_server, sqlite_url: str) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("video", {"prompt": "a fox"})
        question = fake.original(sent.token)
        assert question is not None
        canceled = await conjure.press(question, "Cancel")
        answered = fake.original(canceled.token)  # the question itself, now the answer
        assert answered is not None and answered["id"] == question["id"]
        assert answered["content"] == DECLINED and buttons(answered) == []
        assert answered["flags"] & EPHEMERAL

        sent = await conjure.interact("video", {"prompt": "another fox"})
        other = fake.original(sent.token)
        assert other is not None
        await expire(conjure)
        late = await conjure.press(other, "Run it")
        await conjure.settle()
        [told] = private_answers(fake, late.token)
        assert told.startswith("That question expired")
        await nothing_started(conjure, sandbox_server, ("discord", str(GUILD_ID), str(USER_ID)))


async def test_discord_reroll_of_a_video_asks_too(sandbox_server, sqlite_url: str) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("video", {"prompt": "a fox"})
        question = fake.original(sent.token)
        assert question is not None
        started = await conjure.press(question, "Run it")
        await conjure.settle()
        result = fake.original(started.token)
        assert result is not None and buttons(result) == [["Re-roll"]]

        reroll = await conjure.press(result, "Re-roll")
        await conjure.settle()
        asked = fake.original(reroll.token)
        assert asked is not None and asked["flags"] & EPHEMERAL
        assert asked["content"].startswith(QUESTION) and buttons(asked) == [["Run it", "Cancel"]]
        assert sandbox_server.sandbox.create_count == 1

        await conjure.press(asked, "Run it")
        await conjure.settle()
        assert sandbox_server.sandbox.create_count == 2
        child = [j for j in await _all_jobs(conjure) if j.parent_id is not None]
        assert [(j.followup, j.delivery) for j in child] == [("reroll", Delivery.DELIVERED)]
        assert await usage(conjure, "discord", str(GUILD_ID), str(USER_ID)) == (
            2 * VIDEO_MICROS,
            0,
        )


# ---- the console -----------------------------------------------------------------------------


async def test_console_asks_and_confirm_runs_it(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path) as conjure:
        console = conjure.console
        asked = await console.run_line("/video a fox")
        assert not asked.ok and asked.error is not None and asked.error.startswith(QUESTION)
        assert "/confirm to run it" in asked.error and sandbox_server.sandbox.create_count == 0
        done = await console.run_line("/confirm")
        assert done.ok and [p.name.endswith("output.mp4") for p in done.files] == [True]
        assert (await console.run_line("/confirm")).error == (
            "Nothing is waiting for /confirm or /decline."
        )
        await console.run_line("/video another fox")
        declined = await console.run_line("/decline")
        assert declined.error == DECLINED and sandbox_server.sandbox.create_count == 1


async def test_slack_run_it_is_checked_against_the_budget_of_whoever_runs_it(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_user_usd_per_month="0.40"
    ) as conjure:
        question = question_of(conjure, (await conjure.slash("/video", "a fox")).ack)
        pressed = await press_private(conjure, question, "Run it")
        await conjure.settle(sandbox_server)
        [refused] = conjure.fake.responses_to(pressed)
        assert "monthly budget" in refused.text
        assert refused.body.get("replace_original") is False  # the question stays, to retry
        await nothing_started(conjure, sandbox_server, ("slack", TEAM_ID, ADA))


async def test_run_it_is_checked_against_a_rule_added_since_the_question(
    sandbox_server: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """A costly job's question is asked, then an admin bans a word of its prompt: Run it is
    refused as the command would be now, nothing created or charged. It ran."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        assert not (await conjure.console.run_line("/video a crown")).ok  # the question
        await conjure.service.safety.add("console", "local", "word", "crown", actor="cli")
        run_it = await conjure.console.run_line("/confirm")
        assert not run_it.ok and run_it.error == REFUSED
        await conjure.service.wait_idle()
        assert sandbox_server.sandbox.create_count == 0


async def test_a_question_claimed_but_never_started_expires_as_any_other(
    sandbox_server: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """Run it claims the question and its process dies before the job is recorded: the
    question stays claimed with no job. A press five hours later ran the job, long past the
    ten minutes its price was promised for; it is expired like any question."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        assert not (await conjure.console.run_line("/video a fox")).ok  # the question
        async with write(conjure.runtime.store.engine) as conn:
            await conn.execute(
                update(Confirmation).values(
                    status="confirmed", expires_at=utcnow() - timedelta(hours=5)
                )
            )
        late = await conjure.console.run_line("/confirm")
        assert not late.ok and "expired" in (late.error or "")
        await conjure.service.wait_idle()
        assert sandbox_server.sandbox.create_count == 0
