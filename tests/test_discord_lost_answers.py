"""Discord made the deferral, but its answer never came back (a 502 from its edge, a dropped
connection): discord.py sends the callback again and Discord refuses it as already acknowledged
(40060). The "thinking" is in place and is the job's message; the job must go on and show its
result there. It used to be given back, leaving a public "thinking" that never ended."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.responses import Response

from storage.models import JobStatus
from tests.discord_harness import running_discord_conjure as running
from tests.fakes import discord_api
from tests.fakes.discord_api import EPHEMERAL, LOADING, Call, FakeDiscord
from tests.harness import all_jobs
from tests.sandbox_fixtures import SandboxServer

BYSTANDER = 1_100_000_000_000_000_099


@dataclass
class LostAnswer:
    """While armed, the next interaction callback is made by Discord but answered 502."""

    armed: bool = True

    async def callback(self, fake: FakeDiscord, call: Call, params: dict[str, str]) -> Response:
        answer = await discord_api._callback(fake, call, params)
        if self.armed and answer.status_code == 200:
            self.armed = False
            return discord_api._error(502, "502: Bad Gateway", 0)
        return answer


def lose_a_callback_answer(monkeypatch: pytest.MonkeyPatch, armed: bool = True) -> LostAnswer:
    lost = LostAnswer(armed)
    routes: list[Any] = [
        (method, pattern, lost.callback if handler is discord_api._callback else handler)
        for method, pattern, handler in discord_api._ROUTES
    ]
    monkeypatch.setattr(discord_api, "_ROUTES", routes)
    return lost


async def test_a_deferral_whose_answer_was_lost_still_shows_the_image(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lose_a_callback_answer(monkeypatch)
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a fox on a lost line"})
        await conjure.settle()

        [job] = await all_jobs(conjure.runtime.store)
        assert job.job_status is JobStatus.SUCCEEDED
        original = fake.original(sent.token)
        assert original is not None and "✅ done" in original["content"]
        assert [a["filename"] for a in original["attachments"]] == ["out-0.webp"]
        assert sandbox_server.sandbox.create_count == 1


async def test_a_reroll_whose_deferral_answer_was_lost_still_shows_the_new_image(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = lose_a_callback_answer(monkeypatch, armed=False)
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a lighthouse"})
        await conjure.settle()
        message = fake.original(sent.token)
        assert message is not None

        lost.armed = True
        press = await conjure.press(message, "Re-roll", user_id=BYSTANDER)
        await conjure.settle()

        jobs = await all_jobs(conjure.runtime.store)
        assert [j.job_status for j in jobs] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
        new = fake.original(press.token)
        assert new is not None and new["id"] != message["id"]
        assert new["content"].startswith("🔁 Re-roll") and "✅ done" in new["content"]
        assert len(new["attachments"]) == 1
        assert sandbox_server.sandbox.create_count == 2


async def test_conjure_usage_whose_deferral_answer_was_lost_is_still_answered_privately(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lose_a_callback_answer(monkeypatch)
    async with running(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("conjure", subcommand="usage")

        original = fake.original(sent.token)
        assert original is not None and original["flags"] & EPHEMERAL
        assert not original["flags"] & LOADING  # no longer "thinking"
        assert "Jobs today" in original["content"]


async def test_a_cancel_whose_deferral_answer_was_lost_still_cancels_the_job(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to raise there: the job ran on, to be charged in full, its Cancel still up."""
    sandbox_server.sandbox.config.speed = 1.0
    sandbox_server.sandbox.faults.run_time_factor = 10.0  # llama runs ~10 s: time to cancel
    lost = lose_a_callback_answer(monkeypatch, armed=False)
    async with running(sandbox_server, sqlite_url) as conjure:
        fake, store = conjure.discord, conjure.runtime.store
        sent = await conjure.interact("ask", {"prompt": "tell me a long story"})
        [job] = await all_jobs(store)
        while (current := await store.get(job.id)) and not current.prediction_id:
            await asyncio.sleep(0.05)
        running_job = fake.original(sent.token)
        assert running_job is not None

        lost.armed = True
        await conjure.press(running_job, "Cancel")
        await conjure.settle()

        done = await store.get(job.id)
        assert done is not None and done.job_status is JobStatus.CANCELED
        message = fake.original(sent.token)
        assert message is not None and "The job was canceled." in message["content"]
        assert message["components"] == []
