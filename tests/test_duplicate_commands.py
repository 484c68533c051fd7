"""One job per command, however often the platform sends it.

Slack retries a slash command it got no answer to in time (same `trigger_id`, with
`X-Slack-Retry-Num`); a Discord interaction can reach two instances, or one twice. Each copy is
refused by the job's unique request key, in the database, before anything is reserved: one job,
one status message, one prediction, one charge.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.adapter import CommandRequest, Reply
from bot.quotas.windows import day_window
from storage.engine import create_engine
from storage.jobs import DuplicateRequest, JobStore, user_subject
from storage.migrate import migrate
from storage.models import Delivery, Job, JobStatus, utcnow
from storage.usage import LimitReached
from tests.discord_harness import USER_ID, interaction_payload, running_discord_conjure
from tests.fakes.slack_api import TEAM_ID
from tests.harness import running_conjure, settle
from tests.slack_harness import SlackConjure, running_slack_conjure
from tests.test_storage import make_job, user_limit

CHANNEL = "C0GENERAL"
TRIGGER_ID = "13345224609.738474920.8088930838d88f008e0"


async def jobs_today(store: Any, platform: str, workspace: str, user: str) -> int:
    counter = await store.counter(
        "user", user_subject(platform, workspace, user), day_window(utcnow()).key
    )
    return counter.jobs if counter is not None else 0


async def assert_one_slack_job(conjure: SlackConjure, sandbox_server: Any) -> None:
    """What the person sees and pays for: one status message, one image, one charge."""
    await conjure.settle(sandbox_server)
    store, fake = conjure.runtime.store, conjure.fake
    assert await store.count() == 1
    assert sandbox_server.sandbox.create_count == 1
    [parent] = fake.channel_messages(CHANNEL)
    assert len(fake.calls_to("chat.postMessage")) == 1
    assert "✅ done in " in parent.text and "· $0.003" in parent.text
    assert len(fake.shared_uploads()) == 1
    assert fake.responses == []  # no copy said anything through its response_url
    for sent in conjure.sent:
        assert sent.response.status_code == 200 and sent.response.content == b""
    assert await jobs_today(store, "slack", TEAM_ID, "U0ADA") == 1
    job = await store.find_by_prediction(_only_prediction(sandbox_server))
    assert job is not None and job.request_key == f"slack:{TRIGGER_ID}"
    assert job.job_status is JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED


def _only_prediction(sandbox_server: Any) -> str:
    [prediction_id] = sandbox_server.sandbox.predictions
    return prediction_id


async def test_a_slack_command_retried_four_times_runs_once(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        await conjure.slash("/imagine", "a red fox", trigger_id=TRIGGER_ID)
        for retry in range(1, 5):
            await conjure.slash("/imagine", "a red fox", trigger_id=TRIGGER_ID, retry_num=retry)
        await assert_one_slack_job(conjure, sandbox_server)


async def test_copies_of_a_slack_command_arriving_at_once_run_once(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        await asyncio.gather(
            *(
                conjure.slash("/imagine", "a red fox", trigger_id=TRIGGER_ID, retry_num=n or None)
                for n in range(5)
            )
        )
        await assert_one_slack_job(conjure, sandbox_server)


async def test_a_discord_interaction_delivered_twice_runs_once(
    sandbox_server, database_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        payload = interaction_payload(
            conjure.discord,
            "imagine",
            {"prompt": "a red fox"},
            subcommand=None,
            user_id=USER_ID,
            attachment_size_limit=10 * 1024 * 1024,
        )
        conjure.discord.register_interaction(payload)
        for _ in range(2):
            before = asyncio.all_tasks()
            conjure.client._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
            await asyncio.wait_for(asyncio.gather(*(asyncio.all_tasks() - before)), 20)
        await conjure.settle()

        store = conjure.runtime.store
        assert await store.count() == 1
        assert sandbox_server.sandbox.create_count == 1
        original = conjure.discord.original(payload["token"])
        assert original is not None and "done in" in original["content"]
        assert len(original["attachments"]) == 1
        token = payload["token"]
        assert conjure.discord.find("POST", f"/webhooks/\\d+/{token}") == []  # no follow-up
        job = await store.find_by_prediction(_only_prediction(sandbox_server))
        assert job is not None and job.request_key == f"discord:{payload['id']}"


async def test_concurrent_copies_through_the_command_path_make_one_job(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        acknowledged = 0

        async def acknowledge() -> None:
            nonlocal acknowledged
            acknowledged += 1

        def copy() -> CommandRequest:
            return CommandRequest(
                platform="console",
                workspace="local",
                channel="terminal",
                user_id="you",
                command="imagine",
                text="a red fox",
                request_key="console:the-same-command",
            )

        replies: list[Reply] = await asyncio.gather(
            *(conjure.runtime.commands.handle(copy(), acknowledge) for _ in range(5))
        )
        await settle(conjure, sandbox_server)

        [started] = [reply for reply in replies if reply.job is not None]
        duplicates = [reply for reply in replies if reply.job is None]
        assert len(duplicates) == 4
        assert all(reply.refused and reply.text is None for reply in duplicates)
        assert not started.refused
        assert await conjure.runtime.store.count() == 1
        assert sandbox_server.sandbox.create_count == 1
        assert await jobs_today(conjure.runtime.store, "console", "local", "you") == 1
        assert conjure.output.getvalue().count("asked /imagine") == 1, conjure.output.getvalue()


def keyed(job_id: str, request_key: str) -> Job:
    return make_job(job_id).model_copy(update={"request_key": request_key})


async def test_a_copy_is_refused_by_its_key_before_any_limit_is_checked(
    database_url: str,
) -> None:
    """At the user's last job of the day, the copy of that job is a duplicate, not "over the
    limit": its insert fails before any counter is touched, and nothing changes."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        store = JobStore(engine)
        holds = user_limit(1)  # one job a day
        await store.reserve_and_insert(keyed("first", "slack:T1"), holds)
        with pytest.raises(DuplicateRequest):
            await store.reserve_and_insert(keyed("copy", "slack:T1"), holds)
        with pytest.raises(LimitReached):  # another command is over the limit, as before
            await store.reserve_and_insert(keyed("other", "slack:T2"), holds)
        assert await store.count() == 1 and await store.get("copy") is None
        assert await jobs_today(store, "slack", "T1", "U1") == 1
        # Commands without a key (the console) are never each other's copies.
        await store.reserve_and_insert(make_job("console-1"), user_limit(None))
        await store.reserve_and_insert(make_job("console-2"), user_limit(None))
        assert await store.count() == 3
    finally:
        await engine.dispose()
