"""Private answers after a public "thinking" on Discord: they must reach the person, privately.

Discord documents (Create Followup Message) that a follow-up sent while a deferred response
(type 5) is still loading does not create a message: it edits the loading one, and its
ephemeral flag is ignored, as a message's visibility cannot change; the fake does the same.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from starlette.responses import Response

from bot.confirm import DECLINED
from storage.engine import statement_engines, write
from storage.models import Job, JobStatus, utcnow
from tests.discord_harness import (
    USER_ID,
    AttachmentOption,
    DiscordConjure,
    component_payload,
    custom_id_of,
    interaction_payload,
)
from tests.discord_harness import running_discord_conjure as running
from tests.fakes import discord_api
from tests.fakes.discord_api import EPHEMERAL, Call, FakeDiscord
from tests.harness import all_jobs
from tests.sandbox_fixtures import SandboxServer


def seen_by_the_person(fake: FakeDiscord, words: str) -> list[dict[str, Any]]:
    """Messages still there that say `words`."""
    return [m for m in fake.messages.values() if words in m["content"]]


async def test_a_refused_file_is_answered_privately_and_the_answer_stays(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """A command with a file is deferred publicly at once; its refusal must still be private,
    and must not be deleted with the public "thinking"."""
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        pdf = fake.host_attachment("notes.pdf", b"%PDF-1.7\n", "application/pdf")
        sent = await conjure.interact("transcribe", {"file": AttachmentOption(pdf)})

        [answer] = seen_by_the_person(fake, "That file is a PDF")
        assert answer["flags"] & EPHEMERAL  # only the person sees it
        assert fake.original(sent.token) is None  # the public "thinking" was taken back
        assert await conjure.runtime.store.count() == 0


async def test_a_press_deferred_early_then_refused_is_answered_privately(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """U1 whose image read outlasts the early deferral, then fails: told privately, and it
    stays."""
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message = await _finished_image(conjure)
        payload = component_payload(fake, message, custom_id_of(message, "U1"))
        message["attachments"] = []  # removed after the press was made: the read finds nothing
        fake.attachment_delay = 2.0  # past the early deferral (1.5 s)

        press = await conjure._dispatch(payload)

        [answer] = seen_by_the_person(fake, "That image is no longer available")
        assert answer["flags"] & EPHEMERAL
        assert fake.original(press.token) is None
        assert sandbox_server.sandbox.create_count == 1


async def _finished_image(conjure: DiscordConjure) -> dict[str, Any]:
    """An /imagine delivered, whose Replicate links have expired (the attachment is all)."""
    sent = await conjure.interact("imagine", {"prompt": "a lost picture"})
    await conjure.settle()
    message = conjure.discord.original(sent.token)
    assert message is not None and "✅ done" in message["content"]
    [job] = await all_jobs(conjure.runtime.store)
    await conjure.runtime.store.update_fields(job.id, completed_at=utcnow() - timedelta(hours=2))
    return message


async def test_a_deferral_discord_is_slow_to_answer_is_given_up_and_runs_no_unpaid_job(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord does not answer the deferral (discord.py would wait minutes). The job, recorded
    but not started meanwhile, stays claimed past START_TAKEOVER, so no sweeper starts it; the
    deferral is given up after DEFER_DEADLINE and the job given back: nothing runs that nobody
    pays for (it used to be started by the sweeper, then failed at $0 while it ran)."""
    answered = asyncio.Event()

    async def slow_callback(fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
        await answered.wait()
        return await discord_api._callback(fake, call, params)

    routes = [
        (method, pattern, slow_callback if handler is discord_api._callback else handler)
        for method, pattern, handler in discord_api._ROUTES
    ]
    monkeypatch.setattr(discord_api, "_ROUTES", routes)
    monkeypatch.setattr("bot.jobs.START_TAKEOVER", timedelta(seconds=1))
    monkeypatch.setattr("adapters.discord.adapter.DEFER_DEADLINE", 2.5)
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        payload = interaction_payload(
            fake,
            "imagine",
            {"prompt": "a fox in a storm"},
            subcommand=None,
            user_id=USER_ID,
            attachment_size_limit=10 * 1024 * 1024,
        )
        fake.register_interaction(payload)
        before = asyncio.all_tasks()
        conjure.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        handling = asyncio.all_tasks() - before

        await asyncio.sleep(1.5)  # past START_TAKEOVER, the deferral still unanswered
        await conjure.runtime.service.sweep_unstarted()
        async with asyncio.timeout(5):  # given up after DEFER_DEADLINE, not minutes
            while not (job := await _the_job(conjure)).job_status.terminal:
                await asyncio.sleep(0.05)
        answered.set()  # Discord answers at last (its other calls too), to nobody
        await asyncio.wait_for(asyncio.gather(*handling, return_exceptions=True), timeout=10)
        await conjure.settle()

        assert job.job_status is JobStatus.FAILED and job.actual_micros == 0
        assert sandbox_server.sandbox.create_count == 0  # nothing ran that nobody pays for


async def _the_job(conjure: DiscordConjure) -> Job:
    [job] = await all_jobs(conjure.runtime.store)
    return job


async def test_cancel_on_a_price_question_answered_after_three_seconds_still_answers(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """The question's Cancel waited for the database before answering Discord: past its
    3 seconds, the answer was refused and the person saw "This interaction failed"."""
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("video", {"prompt": "a fox"})
        question = fake.original(sent.token)
        assert question is not None

        def slow(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "UPDATE confirmation" in statement:
                fake.clock_shift = timedelta(seconds=4)  # the database took 4 s to answer

        engines = statement_engines(conjure.runtime.engine)
        for engine in engines:
            event.listen(engine, "before_cursor_execute", slow)
        try:
            await conjure.press(question, "Cancel")
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", slow)

        answered = fake.messages[int(question["id"])]
        assert answered["content"] == DECLINED and answered["components"] == []
        assert answered["flags"] & EPHEMERAL


async def test_a_command_the_database_is_slow_to_record_is_deferred_in_time_and_runs(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command was deferred only once the core had recorded its job: with the database
    busy past Discord's 3 seconds (writers queued, as in a burst), the deferral was refused
    (10062), the job given back, and the person saw "This interaction failed"."""
    monkeypatch.setattr("adapters.discord.listener.DEFER_BY", 0.3, raising=False)  # a margin
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        held = asyncio.Event()

        async def busy_writer() -> None:
            async with write(conjure.runtime.engine):
                held.set()
                await asyncio.sleep(3.5)

        busy = asyncio.create_task(busy_writer())
        await held.wait()
        sent = await conjure.interact("imagine", {"prompt": "a fox, slowly"})
        await busy
        await conjure.settle()

        [job] = await all_jobs(conjure.runtime.store)
        assert job.job_status is JobStatus.SUCCEEDED
        original = fake.original(sent.token)
        assert original is not None and "✅ done" in original["content"]
