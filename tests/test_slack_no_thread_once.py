"""A job without a thread (a channel the bot is not in) is told through the command's
response_url, which takes five posts in all: a delivery taken over after that post (its instance
died before marking it delivered) must not post it, or the DM's files, a second time.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from bot.jobs import DeliveryPolicy
from storage.models import Delivery
from tests.harness import all_jobs
from tests.slack_harness import SlackConjure, SlashResult, running_slack_conjure

ELSEWHERE = "C0RANDOM"  # a channel the bot is not in
USER = "U0ADA"
LINKED = "is larger than can be uploaded here"
LEASED = DeliveryPolicy(
    tries=3, backoff=0.01, max_wait=0.05, sweep_backoff=timedelta(0), lease=timedelta(seconds=0.45)
)


async def take_over(
    conjure: SlackConjure, sandbox_server, sent: SlashResult, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Kill the delivery (kill -9) once it has posted everything, just before it is marked
    delivered; let its lease lapse and the sweeper take it over. Returns the texts the
    command's response_url took."""
    service, store = conjure.service, conjure.runtime.store
    finish_delivery = store.finish_delivery
    dying = asyncio.Event()

    async def killed(*_: Any, **__: Any) -> None:
        dying.set()
        await asyncio.Event().wait()  # never marked: the instance died here

    monkeypatch.setattr(store, "finish_delivery", killed)
    await sandbox_server.sandbox.wait_idle()
    await asyncio.wait_for(dying.wait(), 10)
    for task in list(service._tasks):
        task.cancel()
    await service.wait_idle()
    monkeypatch.setattr(store, "finish_delivery", finish_delivery)
    [job] = await all_jobs(store)  # type: ignore[union-attr]
    assert job.delivery == Delivery.DELIVERING and job.destination["response_url"]
    await asyncio.sleep(0.5)  # the lease lapses
    await service.sweep_deliveries()
    await service.wait_idle()
    taken = await store.get(job.id)
    assert taken is not None and taken.delivery == Delivery.DELIVERED
    return [p.text for p in conjure.fake.responses_to(sent.response_id) if p.accepted]


async def test_a_text_result_told_through_the_response_url_is_not_told_again(
    sandbox_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image is too large to upload: its link is the result, told in the channel once."""
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_max_download_bytes=100
    ) as conjure:
        conjure.service.delivery = LEASED
        conjure.fake.cannot_post[ELSEWHERE] = "not_in_channel"
        sent = await conjure.slash("/imagine", "a huge owl", channel_id=ELSEWHERE)
        posts = await take_over(conjure, sandbox_server, sent, monkeypatch)

        assert sum(LINKED in text for text in posts) == 1, posts
        assert len(posts) == 2  # the announcement, the result


async def test_files_sent_to_the_dm_and_told_are_neither_sent_nor_told_again(
    sandbox_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image in the DM, the channel told where it went: a takeover adds nothing."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        conjure.service.delivery = LEASED
        fake.cannot_post[ELSEWHERE] = "not_in_channel"
        sent = await conjure.slash("/imagine", "a heron", channel_id=ELSEWHERE)
        posts = await take_over(conjure, sandbox_server, sent, monkeypatch)

        [upload] = fake.shared_uploads()
        assert upload.channel_id == f"D{USER}"
        assert len(fake.calls_to("files.getUploadURLExternal")) == 1
        assert sum("direct message" in text for text in posts) == 1, posts
        assert len(posts) == 2


async def test_a_failure_told_through_the_response_url_is_not_told_again(
    sandbox_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job failed: the channel is told so once."""
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.service.delivery = LEASED
        conjure.fake.cannot_post[ELSEWHERE] = "not_in_channel"
        sent = await conjure.slash("/imagine", "a cat", channel_id=ELSEWHERE)
        posts = await take_over(conjure, sandbox_server, sent, monkeypatch)

        assert sum("❌ failed in " in text for text in posts) == 1, posts
        assert len(posts) == 2
