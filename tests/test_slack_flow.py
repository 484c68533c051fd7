"""Slack end to end: signed slash commands into the real app, results into the fake Slack.

Every test runs the real Starlette app under uvicorn with slack-bolt's AsyncApp, the real
sandbox sending signed webhooks, and the fake Slack Web API recording what a person would see.
"""

from __future__ import annotations

import time

import httpx

from adapters.slack import markup as slack_text
from bot.sandbox import HttpFault
from storage.models import Delivery, JobStatus
from tests.fakes.slack_api import BOT_TOKEN
from tests.sandbox_fixtures import impatient_replicate, lose_the_next_create
from tests.slack_harness import SlackConjure, running_slack_conjure

CHANNEL = "C0GENERAL"
USER = "U0ADA"


async def sandbox_output(sandbox_server) -> list[bytes]:
    """The bytes of every file the sandbox's only prediction produced."""
    [prediction] = sandbox_server.sandbox.predictions.values()
    async with httpx.AsyncClient() as http:
        return [(await http.get(url)).content for url in prediction["output"]]


def startup_calls_only(conjure: SlackConjure) -> bool:
    """Nothing reached Slack after the start-up token check."""
    return [call.method for call in conjure.fake.calls] == ["auth.test"]


async def test_imagine_posts_a_status_and_uploads_the_image_into_its_thread(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        conjure.fake.delays["chat.postMessage"] = 0.5  # the announcement is slow to land
        sent = await conjure.slash("/imagine", "a red fox in the snow --ar 16:9")

        # Acknowledged at once, empty, before the prediction even exists.
        assert sent.response.status_code == 200 and sent.response.content == b""
        assert sent.seconds < 1.0
        assert sandbox_server.sandbox.create_count == 0

        await conjure.settle(sandbox_server)
        fake = conjure.fake
        [parent] = fake.channel_messages(CHANNEL)
        [post] = fake.calls_to("chat.postMessage")
        assert post.headers["authorization"] == f"Bearer {BOT_TOKEN}"
        assert "<@U0ADA> asked /imagine: “a red fox in the snow”" in post.args["text"]
        assert "model flux-schnell" in post.args["text"] and "queued" in post.args["text"]

        # The image, byte for byte, in the thread of that message, described by the prompt.
        [upload] = fake.shared_uploads()
        assert (upload.channel_id, upload.thread_ts) == (CHANNEL, parent.ts)
        assert [upload.content] == await sandbox_output(sandbox_server)
        assert upload.alt_txt == "a red fox in the snow"
        assert upload.title == "a red fox in the snow"
        assert upload.initial_comment == "<@U0ADA> here is your image."
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert reply.files == [upload.file_id]

        # The parent ends as done, with the duration and what it cost.
        assert "✅ done in " in parent.text and "· $0.003" in parent.text
        assert all(call.args["ts"] == parent.ts for call in fake.calls_to("chat.update"))
        assert fake.responses == []  # nothing needed the response_url

        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.platform == "slack" and job.workspace == "T0FAKE"
        assert job.status == JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED
        assert job.destination["thread_ts"] == parent.ts


async def test_requests_with_a_bad_signature_or_an_old_timestamp_are_refused(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        forged = await conjure.slash("/imagine", "a fox", secret="not-the-signing-secret")
        stale = await conjure.slash("/imagine", "a fox", timestamp=int(time.time()) - 6 * 60)
        assert forged.response.status_code == 401
        assert stale.response.status_code == 401
        await conjure.service.wait_idle()
        assert await conjure.runtime.store.count() == 0
        assert sandbox_server.sandbox.create_count == 0
        assert startup_calls_only(conjure) and conjure.fake.responses == []


async def test_bad_input_is_answered_in_the_ack_and_creates_nothing(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        answers = []
        for command, text in [
            ("/imagine", ""),
            ("/imagine", "a fox --ar 7:5"),
            ("/imagine", "a fox --bogus 1"),
            ("/ask", "why? --max-tokens lots"),
        ]:
            sent = await conjure.slash(command, text)
            assert sent.response.status_code == 200
            answers.append(sent.ack)
        await conjure.service.wait_idle()

        assert all(answer["response_type"] == "ephemeral" for answer in answers)
        assert "The prompt is missing." in answers[0]["text"]
        assert "must be one of" in answers[1]["text"]
        assert "Unknown option --bogus." in answers[2]["text"]
        # Slack would read a bare <prompt> as markup and swallow it.
        assert "\nUsage: `/imagine &lt;prompt&gt; [--ar " in answers[0]["text"]
        assert "Usage: `/ask &lt;prompt&gt; [--max-tokens 1-4096] [--model " in answers[3]["text"]
        assert await conjure.runtime.store.count() == 0
        assert sandbox_server.sandbox.create_count == 0
        assert conjure.fake.responses == []


async def test_a_channel_the_bot_is_not_in_gets_the_result_through_response_url_and_dm(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        fake.cannot_post["C0RANDOM"] = "not_in_channel"
        sent = await conjure.slash("/imagine", "a heron", channel_id="C0RANDOM")
        await conjure.settle(sandbox_server)

        # Announced in the channel through the response_url, saying why there is no thread.
        posts = fake.responses_to(sent.response_id)
        assert [p.response_type for p in posts] == ["in_channel", "in_channel"]
        assert all(p.accepted for p in posts)
        assert "<@U0ADA> asked /imagine: “a heron”" in posts[0].text
        assert "can't post in this conversation" in posts[0].text
        # The image went to the person's DM with the bot, byte for byte.
        [opened] = fake.calls_to("conversations.open")
        assert opened.args["users"] == USER
        [upload] = fake.shared_uploads()
        assert (upload.channel_id, upload.thread_ts) == (f"D{USER}", None)
        assert [upload.content] == await sandbox_output(sandbox_server)
        assert "Your /imagine “a heron”: 1 image." == upload.initial_comment
        # And the channel is told it is done, what it cost, and where the image went.
        assert "✅ done in " in posts[1].text and "$0.003" in posts[1].text
        assert slack_text.DM_NOTE in posts[1].text and "<@U0ADA>" in posts[1].text
        assert fake.channel_messages("C0RANDOM") == []
        assert fake.calls_to("chat.update") == []  # no progress: a response_url has 5 posts

        job = await _only_job(conjure, sandbox_server)
        assert job.destination["no_thread"] == "not_in_channel"
        assert job.delivery == Delivery.DELIVERED


async def test_a_dm_between_people_gets_a_text_answer_ephemerally_when_in_channel_is_refused(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        fake.cannot_post["D0FRIENDS"] = "channel_not_found"
        fake.refuse_in_channel.add("dm1")
        await conjure.slash("/ask", "what is a heron?", channel_id="D0FRIENDS", response_id="dm1")
        await conjure.settle(sandbox_server)

        # in_channel refused once; from then on straight to ephemeral (5 posts per URL).
        posts = fake.responses_to("dm1")
        assert [(p.response_type, p.accepted) for p in posts] == [
            ("in_channel", False),
            ("ephemeral", True),
            ("ephemeral", True),
        ]
        accepted = posts[1:]
        assert 'You asked: "what is a heron?"' in accepted[-1].text
        assert accepted[-1].text.startswith("<@U0ADA> asked /ask")
        assert fake.calls_to("conversations.open") == []  # short text needs no DM
        assert fake.messages == []


async def test_a_failed_prediction_is_a_threaded_reply_that_mentions_the_person(
    sandbox_server, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", "a cat")
        await conjure.settle(sandbox_server)
        fake = conjure.fake
        [parent] = fake.channel_messages(CHANNEL)
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert reply.text.startswith(
            "<@U0ADA> The model's safety checker flagged the result, so nothing was shown. "
            "Try rewording the prompt."
        )
        assert "Traceback" not in reply.text
        assert "❌ failed in " in parent.text
        assert fake.shared_uploads() == []


async def test_a_replicate_error_at_creation_is_a_threaded_reply_and_costs_nothing(
    sandbox_server, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.http.append(HttpFault(status=402, method="POST"))
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", "a tree")
        await conjure.settle(sandbox_server)
        fake = conjure.fake
        [parent] = fake.channel_messages(CHANNEL)
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert reply.text.startswith("<@U0ADA> ") and "credit" in reply.text.lower()
        assert "❌ failed" in parent.text
        assert sandbox_server.sandbox.create_count == 0


async def test_a_job_given_up_after_a_lost_create_gets_its_late_image_in_the_thread(
    sandbox_server, sqlite_url: str
) -> None:
    """The create's answer was lost and could not be found, so the thread says it failed; when
    Replicate's webhook shows it ran after all, the image follows in the same thread and the
    parent says done."""

    lose_the_next_create(sandbox_server)
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        async with impatient_replicate(conjure.service, sandbox_server):
            await conjure.slash("/imagine", "a ghost")
            await conjure.settle(sandbox_server)
        fake = conjure.fake
        [parent] = fake.channel_messages(CHANNEL)
        failure = fake.replies(CHANNEL, parent.ts)[0]
        assert failure.text.startswith("<@U0ADA> ")
        [upload] = fake.shared_uploads()
        assert upload.channel_id == CHANNEL and upload.thread_ts == parent.ts
        assert "✅ done" in parent.text
        assert sandbox_server.sandbox.create_count == 1


async def test_over_quota_is_refused_privately_and_starts_nothing(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_user_jobs_per_day=1
    ) as conjure:
        first = await conjure.slash("/imagine", "one fox")
        await conjure.settle(sandbox_server)
        second = await conjure.slash("/imagine", "two foxes")
        await conjure.settle(sandbox_server)

        assert second.response.status_code == 200
        assert conjure.fake.responses_to(first.response_id) == []
        assert conjure.fake.responses_to(second.response_id) == []
        refusal = second.response.json()  # known before the ack: answered in it
        assert refusal["response_type"] == "ephemeral"
        assert "all 1 of your jobs for today" in refusal["text"] and "00:00 UTC" in refusal["text"]
        assert sandbox_server.sandbox.create_count == 1
        assert await conjure.runtime.store.count() == 1
        assert len(conjure.fake.channel_messages(CHANNEL)) == 1


async def test_a_rate_limited_status_post_is_retried_after_retry_after_and_posted_once(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        fake.rate_limit("chat.postMessage", count=1, retry_after=1)
        await conjure.slash("/imagine", "a busy channel")
        await conjure.settle(sandbox_server)

        limited, retried = fake.calls_to("chat.postMessage")
        assert (limited.status, retried.status) == (429, 200)
        assert retried.at - limited.at >= 1.0
        [parent] = fake.channel_messages(CHANNEL)
        [upload] = fake.shared_uploads()
        assert upload.thread_ts == parent.ts
        assert fake.responses == []


async def test_several_images_go_up_together_and_skipped_outputs_are_mentioned(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/imagine", "two owls --n 2")
        await conjure.settle(sandbox_server)
        [parent] = fake.channel_messages(CHANNEL)
        uploads = fake.shared_uploads()
        assert [u.content for u in uploads] == await sandbox_output(sandbox_server)
        assert {(u.channel_id, u.thread_ts) for u in uploads} == {(CHANNEL, parent.ts)}
        assert [u.title for u in uploads] == ["two owls (1 of 2)", "two owls (2 of 2)"]
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert reply.text == "<@U0ADA> here are your 2 images."
        assert len(fake.calls_to("files.completeUploadExternal")) == 1

    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_max_download_bytes=100
    ) as conjure:
        await conjure.slash("/imagine", "a huge owl")
        await conjure.settle(sandbox_server)
        [parent] = conjure.fake.channel_messages(CHANNEL)
        [reply] = conjure.fake.replies(CHANNEL, parent.ts)
        # Too large for the download cap: linked, not uploaded (nor downloaded past the cap).
        assert reply.text.startswith("<@U0ADA>\n🔗 The image (")
        assert "is larger than can be uploaded here (0.0 MB)" in reply.text
        assert conjure.fake.shared_uploads() == []


async def test_slack_markup_in_a_prompt_reaches_the_model_but_is_shown_literally(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", "fish & chips <!channel> <@U0EVE>")
        await conjure.settle(sandbox_server)
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["input"]["prompt"] == "fish & chips <!channel> <@U0EVE>"
        [parent] = conjure.fake.channel_messages(CHANNEL)
        assert "“fish &amp; chips &lt;!channel&gt; &lt;@U0EVE&gt;”" in parent.text
        assert parent.text.count("<") == 1  # only the mention of who asked is markup


async def test_a_text_answer_is_a_threaded_reply_and_a_long_one_a_file(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "what is a fox?")
        await conjure.settle(sandbox_server)
        [parent] = fake.channel_messages(CHANNEL)
        [reply] = fake.replies(CHANNEL, parent.ts)
        assert reply.text.startswith('<@U0ADA>\nYou asked: "what is a fox?"')

        conjure.service.adapters["slack"].long_text_chars = 40  # type: ignore[attr-defined]
        await conjure.slash("/ask", "what is an owl?")
        await conjure.settle(sandbox_server)
        second = fake.channel_messages(CHANNEL)[-1]
        [upload] = fake.shared_uploads()
        assert (upload.channel_id, upload.thread_ts) == (CHANNEL, second.ts)
        assert upload.content is not None
        assert upload.content.decode().startswith('You asked: "what is an owl?"')
        assert upload.filename.endswith(".txt") and upload.alt_txt is None
        assert "as a file" in (upload.initial_comment or "")


async def test_a_revoked_token_answers_the_command_and_creates_nothing(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        conjure.fake.invalid_auth = True
        sent = await conjure.slash("/imagine", "a fox")
        await conjure.service.wait_idle()
        # bolt's own answer when auth.test fails: the person is told, privately.
        assert sent.response.status_code == 200 and "reinstall" in sent.response.text
        assert await conjure.runtime.store.count() == 0
        assert sandbox_server.sandbox.create_count == 0


async def _only_job(conjure: SlackConjure, sandbox_server):
    [prediction_id] = sandbox_server.sandbox.predictions
    job = await conjure.runtime.store.find_by_prediction(prediction_id)
    assert job is not None
    return job
