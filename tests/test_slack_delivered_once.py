"""Slack results that arrive whole and once, whatever fails on the way: the real app, the
sandbox and the fake Slack on loopback.

A result can be files and text at once: an output too large to upload is linked, and its note
(the link, and when it expires) is text beside the files that were uploaded. That note is the
only way to the output the person paid for, so it must reach them, where the files go, once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.slack.adapter import ERROR_KEY, REPLY_KEY
from bot.jobs import DeliveryPolicy
from bot.replicate.outputs import OutputFetcher
from bot.serving import serve_app
from storage.models import Delivery, Job
from tests.harness import all_jobs
from tests.slack_harness import SlackConjure, running_slack_conjure

CHANNEL = "C0GENERAL"
USER = "U0ADA"
SMALL = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LARGE = b"\x89PNG\r\n\x1a\n" + b"\x00" * 4000
CAP = 1000  # CONJURE_MAX_DOWNLOAD_BYTES: SMALL is uploaded, LARGE linked
QUICK = DeliveryPolicy(tries=3, backoff=0.01, max_wait=0.05, sweep_backoff=timedelta(0))
LINKED = "is larger than can be uploaded here"


@contextlib.asynccontextmanager
async def file_host() -> AsyncIterator[str]:
    """A file host serving one small and one large image."""

    async def small(_: Request) -> Response:
        return Response(SMALL, media_type="image/png")

    async def large(_: Request) -> Response:
        return Response(LARGE, media_type="image/png")

    routes = [Route("/small.png", small), Route("/large.png", large)]
    async with serve_app(Starlette(routes=routes)) as url:
        yield url


async def finish_with_outputs(
    conjure: SlackConjure,
    sandbox_server,
    host: str,
    before_outcome: Callable[[], None] = lambda: None,
    **slash: str,
) -> Job:
    """Run /imagine to its end in the sandbox, then apply its outcome with two outputs on
    `host`, one small and one too large to upload, as its webhook would (`before_outcome`
    runs just before)."""
    service = conjure.service
    fetcher = service.fetcher
    netloc = host.removeprefix("http://")
    service.fetcher = OutputFetcher(fetcher.http, [*fetcher.allowed_hosts, netloc], CAP)
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000  # the outcome below is the test's
    await conjure.slash("/imagine", "two owls --n 2", **slash)
    await service.wait_idle()
    [prediction_id] = sandbox_server.sandbox.predictions
    await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 10)
    final = await conjure.runtime.replicate.get_prediction(prediction_id)
    job = await conjure.runtime.store.find_by_prediction(prediction_id)
    assert job is not None
    output = [f"{host}/small.png", f"{host}/large.png"]
    before_outcome()
    await service.apply_prediction(job.id, final.model_copy(update={"output": output}))
    await service.wait_idle()
    done = await conjure.runtime.store.get(job.id)
    assert done is not None
    return done


async def test_a_linked_outputs_note_reaches_the_thread_once_after_a_failed_post(
    sandbox_server, sqlite_url: str
) -> None:
    """The post after the files' share fails (Slack 500): the retry finds the files shared and
    must not skip the note with the link to the output too large to upload."""
    async with file_host() as host:
        async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
            fake = conjure.fake
            conjure.service.delivery = QUICK
            # Announced already: the next chat.postMessage is the first post of the result.
            job = await finish_with_outputs(
                conjure, sandbox_server, host, lambda: fake.fail("chat.postMessage", 1, 500)
            )

            [parent] = fake.channel_messages(CHANNEL)
            [upload] = fake.shared_uploads()
            assert upload.content == SMALL and upload.thread_ts == parent.ts
            shown = [m.text for m in fake.replies(CHANNEL, parent.ts)]
            assert sum(LINKED in text for text in shown) == 1, shown
            assert f"{host}/large.png" in "\n".join(shown)
            assert job.delivery == Delivery.DELIVERED


async def test_a_linked_outputs_note_goes_with_the_files_to_the_dm(
    sandbox_server, sqlite_url: str
) -> None:
    """No thread (a channel the bot is not in): the uploaded image goes to the person's DM;
    the link to the one too large to upload must reach them too, not vanish."""
    async with file_host() as host:
        async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
            fake = conjure.fake
            conjure.service.delivery = QUICK
            fake.cannot_post["C0RANDOM"] = "not_in_channel"
            job = await finish_with_outputs(conjure, sandbox_server, host, channel_id="C0RANDOM")

            [upload] = fake.shared_uploads()
            assert upload.content == SMALL and upload.channel_id == f"D{USER}"
            # Everything the person can read: the DM's messages, the channel's responses.
            seen = [m.text for m in fake.messages] + [p.text for p in fake.responses if p.accepted]
            assert sum(LINKED in text for text in seen) == 1, seen
            assert f"{host}/large.png" in "\n".join(seen)
            assert job.delivery == Delivery.DELIVERED


# ---- a text reply, killed before the delivery is marked ---------------------------------------

LEASED = DeliveryPolicy(
    tries=3, backoff=0.01, max_wait=0.05, sweep_backoff=timedelta(0), lease=timedelta(seconds=0.45)
)


async def die_after_a_reply(conjure: SlackConjure, sandbox_server) -> Job:
    """Run until the job's thread has a reply from its delivery and the reply is recorded (the
    status edit after it is slow), then kill the delivery (kill -9: its lease renewals stop,
    the claim stays) before it is marked delivered; let the lease lapse and the sweeper take
    it over. Returns the job as the takeover left it.

    Not killed between the reply's post and its record: Slack has no idempotent post, so a
    kill in that window is the known gap (README, Reliability), not what these tests show."""
    service, fake, store = conjure.service, conjure.fake, conjure.runtime.store
    await sandbox_server.sandbox.wait_idle()
    while not [m for m in fake.messages if m.thread_ts is not None]:
        await asyncio.sleep(0.01)
    [job] = await all_jobs(store)  # type: ignore[union-attr]
    while not {REPLY_KEY, ERROR_KEY} & job.destination.keys():
        await asyncio.sleep(0.01)
        job = await store.get(job.id)  # type: ignore[assignment]
    for task in list(service._tasks):
        task.cancel()
    await service.wait_idle()
    fake.delays.clear()
    [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert job.delivery == Delivery.DELIVERING
    await asyncio.sleep(0.5)  # the lease lapses
    await service.sweep_deliveries()
    await service.wait_idle()
    taken = await conjure.runtime.store.get(job.id)
    assert taken is not None
    return taken


async def test_a_text_result_taken_over_after_its_reply_is_not_posted_again(
    sandbox_server, sqlite_url: str
) -> None:
    """The image is too large to upload, so the result is its link, as text. kill -9 after
    that reply, during the status edit: the instance that takes the delivery over must not
    post the reply a second time."""
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_max_download_bytes=100
    ) as conjure:
        fake = conjure.fake
        conjure.service.delivery = LEASED
        fake.delays["chat.update"] = 0.5  # the status edit after the reply is slow
        await conjure.slash("/imagine", "a huge owl")
        taken = await die_after_a_reply(conjure, sandbox_server)

        [parent] = fake.channel_messages(CHANNEL)
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert LINKED in reply.text
        assert "✅ done in " in parent.text
        assert taken.delivery == Delivery.DELIVERED


async def test_a_failure_taken_over_after_its_reply_is_not_posted_again(
    sandbox_server, sqlite_url: str
) -> None:
    """The same for a failed job's reply: kill -9 after it, during the status edit."""
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        conjure.service.delivery = LEASED
        fake.delays["chat.update"] = 0.5  # the status edit after the reply is slow
        await conjure.slash("/imagine", "a cat")
        taken = await die_after_a_reply(conjure, sandbox_server)

        [parent] = fake.channel_messages(CHANNEL)
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert reply.text.startswith(f"<@{USER}> ")
        assert "❌ failed in " in parent.text
        assert taken.delivery == Delivery.DELIVERED


# ---- the announcement -----------------------------------------------------------------------


async def test_a_slack_5xx_on_the_status_post_still_gives_the_job_its_thread(
    sandbox_server, sqlite_url: str
) -> None:
    """One 500 from chat.postMessage (Slack having a bad second) is not "I can't post in this
    conversation": the status is posted again, and the image goes into its thread."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        fake.fail("chat.postMessage", 1, 500)
        await conjure.slash("/imagine", "a red fox in the snow")
        await conjure.settle(sandbox_server)

        [parent] = fake.channel_messages(CHANNEL)
        [upload] = fake.shared_uploads()
        assert (upload.channel_id, upload.thread_ts) == (CHANNEL, parent.ts)
        assert "✅ done in " in parent.text
        assert not any("can't post" in post.text for post in fake.responses)


# ---- the database, between the upload and the share ---------------------------------------


async def test_a_database_blip_while_recording_the_uploads_does_not_lose_the_image(
    sandbox_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files' ids are recorded before they are shared; the database failing right then
    (once) must leave the delivery to be tried again, not fail it for good unseen."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.service.delivery = QUICK
        store = conjure.runtime.store
        merge_destination = store.merge_destination
        failures = [OperationalError("UPDATE job", {}, Exception("database is locked"))]

        async def blip(job_id: str, fields: dict[str, object]) -> None:
            if failures and "slack_files" in fields:
                raise failures.pop()
            await merge_destination(job_id, fields)

        monkeypatch.setattr(store, "merge_destination", blip)
        await conjure.slash("/imagine", "a red fox in the snow")
        await conjure.settle(sandbox_server)

        assert failures == []
        [parent] = conjure.fake.channel_messages(CHANNEL)
        [upload] = conjure.fake.shared_uploads()
        assert upload.thread_ts == parent.ts
        [job] = await all_jobs(store)  # type: ignore[union-attr]
        assert job.delivery == Delivery.DELIVERED


async def test_a_slack_5xx_on_the_dm_upload_is_retried_not_reported_as_undeliverable(
    sandbox_server, sqlite_url: str
) -> None:
    """No thread (a channel the bot is not in): the image goes to the DM. One 500 on its
    upload is Slack's bad second, not "I could not send it to you": it is tried again."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        conjure.service.delivery = QUICK
        fake.cannot_post["C0RANDOM"] = "not_in_channel"
        fake.fail("files.getUploadURLExternal", 1, 500)
        sent = await conjure.slash("/imagine", "a heron", channel_id="C0RANDOM")
        await conjure.settle(sandbox_server)

        [upload] = fake.shared_uploads()
        assert upload.channel_id == f"D{USER}"
        posts = [p.text for p in fake.responses_to(sent.response_id) if p.accepted]
        assert "✅ done in " in posts[-1] and "direct message" in posts[-1]
        assert not any("could not send it" in text for text in posts)
