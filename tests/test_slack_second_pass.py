"""Slack's no-thread paths and status message, second pass: what the person sees when the
thread's parent is deleted, when Slack will not take the status for a while, and when the
prompt is long and full of markup. The real app, the sandbox and the fake Slack on loopback.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from bot.jobs import DeliveryPolicy
from storage.models import Delivery, Job
from tests.slack_harness import SlackConjure, running_slack_conjure

CHANNEL = "C0GENERAL"
USER = "U0ADA"
QUICK = DeliveryPolicy(tries=3, backoff=0.01, max_wait=0.05, sweep_backoff=timedelta(0))
LINKED = "is larger than can be uploaded here"
SECTION_TEXT_LIMIT = 3000  # Slack: a section block's text
FLUX_SCHNELL_MICROS = 3000  # one flux-schnell image at $0.003
BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


async def finish_after(conjure: SlackConjure, sandbox_server, text: str, before) -> Job:
    """Run /imagine `text` to its end in the sandbox with its webhooks held back, call
    `before()` (with the parent message posted), then apply the outcome as its webhook would."""
    service = conjure.service
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000  # the outcome below is the test's
    await conjure.slash("/imagine", text)
    await service.wait_idle()
    [prediction_id] = sandbox_server.sandbox.predictions
    await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 10)
    final = await conjure.runtime.replicate.get_prediction(prediction_id)
    job = await conjure.runtime.store.find_by_prediction(prediction_id)
    assert job is not None
    before()
    await service.apply_prediction(job.id, final)
    await service.wait_idle()
    done = await conjure.runtime.store.get(job.id)
    assert done is not None
    return done


def delete_parent(conjure: SlackConjure) -> None:
    """Someone deletes the job's status message, the thread's parent."""
    [parent] = conjure.fake.channel_messages(CHANNEL)
    conjure.fake.messages.remove(parent)


def seen_by_the_person(conjure: SlackConjure) -> list[str]:
    """Every message a person could read: the bot's posts anywhere, the accepted responses."""
    fake = conjure.fake
    return [m.text for m in fake.messages] + [p.text for p in fake.responses if p.accepted]


# ---- a deleted thread parent ------------------------------------------------------------------


async def test_a_result_whose_thread_parent_was_deleted_still_reaches_the_person(
    sandbox_server, sqlite_url: str
) -> None:
    """The status message is deleted while the job runs: a reply under it is refused
    (thread_not_found). The paid-for result (here a link, too large to upload) must reach the
    person another way, not be failed for good unseen."""
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_max_download_bytes=100
    ) as conjure:
        conjure.service.delivery = QUICK
        job = await finish_after(
            conjure, sandbox_server, "a huge owl", lambda: delete_parent(conjure)
        )

        seen = seen_by_the_person(conjure)
        assert sum(LINKED in text for text in seen) == 1, seen
        assert job.delivery == Delivery.DELIVERED


async def test_a_failure_whose_thread_parent_was_deleted_still_reaches_the_person(
    sandbox_server, sqlite_url: str
) -> None:
    """The same for a failed run: the person is told it failed, once."""
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.service.delivery = QUICK
        job = await finish_after(conjure, sandbox_server, "a cat", lambda: delete_parent(conjure))

        seen = seen_by_the_person(conjure)
        assert sum("❌ failed" in text for text in seen) == 1, seen
        assert job.delivery == Delivery.DELIVERED


# ---- the status message -----------------------------------------------------------------------


async def test_a_long_prompt_full_of_markup_keeps_the_status_in_the_message(
    sandbox_server, sqlite_url: str
) -> None:
    """A prompt of 1,800 characters of `<`, `>` and `&` is 7,800 once escaped: cut to Slack's
    3,000 per section as a whole, the status line (model, state, cost) was cut off the
    message, so it never showed queued, running or done; and the cut split an entity."""
    prompt = "<b>&" * 450
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", prompt)
        await conjure.settle(sandbox_server)

        [parent] = conjure.fake.channel_messages(CHANNEL)
        assert parent.blocks is not None
        shown = parent.blocks[0]["text"]["text"]
        assert len(shown) <= SECTION_TEXT_LIMIT
        assert "model flux-schnell" in shown and "✅ done in " in shown, shown[-200:]
        assert shown.startswith(f"<@{USER}> asked /imagine: “&lt;b&gt;&amp;")
        assert not BROKEN_ENTITY.search(shown)
        assert shown.count("<") == 1  # only the mention of who asked is markup


async def test_slack_refusing_the_status_for_a_while_does_not_say_invite_me(
    sandbox_server, sqlite_url: str
) -> None:
    """chat.postMessage fails twice (Slack's bad minute) in a channel the bot is in: the job
    goes on without a thread, but the person must not be told the bot cannot post there and
    to invite it; the result still reaches them."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        conjure.service.delivery = QUICK
        fake.fail("chat.postMessage", 2, 500)
        sent = await conjure.slash("/imagine", "a red fox in the snow")
        await conjure.settle(sandbox_server)

        posts = [p.text for p in fake.responses_to(sent.response_id) if p.accepted]
        assert posts and "asked /imagine" in posts[0]
        assert not any("can't" in text or "Invite me" in text for text in posts), posts
        assert "✅ done in " in posts[-1]
        [upload] = fake.shared_uploads()
        assert upload.channel_id == f"D{USER}"


# ---- the token revoked while the job runs -----------------------------------------------------


def revoke_token(conjure: SlackConjure) -> None:
    """The app is uninstalled (or its token revoked): every Web API call is invalid_auth."""
    conjure.fake.invalid_auth = True


async def test_a_token_revoked_mid_job_stops_the_delivery_and_the_run_is_charged_once(
    sandbox_server, sqlite_url: str
) -> None:
    """invalid_auth is Slack refusing for good: one try, no retry loop, the delivery failed,
    and the run that did happen charged exactly once."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.service.delivery = QUICK
        job = await finish_after(conjure, sandbox_server, "a fox", lambda: revoke_token(conjure))
        await conjure.service.recover()  # a sweep later: not claimed again
        await conjure.service.wait_idle()

        after = await conjure.runtime.store.get(job.id)
        assert after is not None
        assert after.delivery == Delivery.FAILED and after.delivery_attempts == 1
        assert len(conjure.fake.calls_to("files.getUploadURLExternal")) == 1
        assert after.actual_micros == FLUX_SCHNELL_MICROS
        assert conjure.fake.shared_uploads() == []


async def test_a_token_revoked_mid_job_without_a_thread_does_not_say_run_it_again(
    sandbox_server, sqlite_url: str
) -> None:
    """No thread (a channel the bot is not in), and the token is revoked before the image
    goes to the DM: the person, told through the response_url (which needs no token), must not
    be told to invite the bot and run the command again, paying a second time for nothing."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.service.delivery = QUICK
        conjure.fake.cannot_post[CHANNEL] = "not_in_channel"
        await finish_after(conjure, sandbox_server, "a fox", lambda: revoke_token(conjure))

        [_, last] = [p.text for p in conjure.fake.responses if p.accepted]
        assert "✅ done in " in last
        assert "run the command" not in last and "Invite me" not in last, last
        assert "reinstall" in last, last
