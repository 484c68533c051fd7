"""Slack message shortcuts end to end (real bolt path, signed `message_action` payloads): the
file in a person's message is read with the bot token and reaches the model's input at the
sandbox; the job's messages land in that message's thread; a message without a suitable file
gets a private answer naming what the shortcut takes, and nothing is created or charged."""

from __future__ import annotations

import io
import logging

from PIL import Image

from tests.fakes.slack_api import BOT_TOKEN, Message
from tests.slack_harness import SlackConjure, running_slack_conjure
from tests.test_slack_buttons import image_input_bytes, spent

CHANNEL = "C0GENERAL"
MP3 = b"ID3\x03\x00" + bytes(range(256)) * 40


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def the_prediction(sandbox_server) -> dict:
    [prediction] = sandbox_server.sandbox.predictions.values()
    return prediction


def thread_texts(conjure: SlackConjure, message: Message) -> str:
    """Everything the bot said in the thread of `message`, as it now reads."""
    replies = conjure.fake.replies(CHANNEL, message.ts)
    uploads = [u for u in conjure.fake.shared_uploads() if u.thread_ts == message.ts]
    return "\n".join([m.text for m in replies] + [u.initial_comment or "" for u in uploads])


async def nothing_spent(conjure: SlackConjure, sandbox_server) -> bool:
    sandbox = sandbox_server.sandbox
    return (
        await conjure.runtime.store.count() == 0
        and sandbox.create_count == 0
        and not sandbox.uploads.newest_first()
        and await spent(conjure, "U0ADA") == 0
    )


async def test_vary_with_conjure_sends_the_image_to_flux_dev_and_answers_in_its_thread(
    sandbox_server, database_url: str
) -> None:
    photo = png((96, 64), (30, 60, 220))
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        posted = fake.person_posts_file(CHANNEL, "boat.png", photo, text="a boat at sunset")
        first = await conjure.shortcut("conjure_vary", posted)
        assert first.response.status_code == 200
        await conjure.settle(sandbox_server)

        prediction = the_prediction(sandbox_server)
        assert prediction["model"] == "black-forest-labs/flux-dev"
        assert prediction["input"]["prompt"] == "a boat at sunset"
        assert await image_input_bytes(sandbox_server, prediction["input"]["image"]) == photo
        assert [d.authorized for d in fake.downloads] == [True]  # read with the bot token
        [status] = [m for m in fake.replies(CHANNEL, posted.ts) if m.blocks]
        assert "<@U0ADA> asked /imagine: “a boat at sunset”" in status.text
        assert "✅ done" in status.edits[-1]
        assert [u for u in fake.shared_uploads() if u.thread_ts == posted.ts]  # the image
        assert fake.channel_messages(CHANNEL) == [posted]  # nothing outside the thread


async def test_ask_conjure_about_this_image_runs_llava_with_the_message_as_question(
    sandbox_server, database_url: str
) -> None:
    photo = png((40, 30), (30, 160, 60))
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        posted = fake.person_posts_file(CHANNEL, "leaf.png", photo)  # no text: a default
        await conjure.shortcut("conjure_ask_image", posted, trigger_id="T-ask-1")
        await conjure.shortcut("conjure_ask_image", posted, trigger_id="T-ask-1")  # a retry
        await conjure.settle(sandbox_server)

        prediction = the_prediction(sandbox_server)  # one job for the retried shortcut
        assert prediction["model"] == "yorickvp/llava-13b"
        assert prediction["input"]["prompt"] == "Describe this image."
        assert await image_input_bytes(sandbox_server, prediction["input"]["image"]) == photo
        said = thread_texts(conjure, posted)
        assert "I see a 40x30 image, mostly green." in said
        assert await conjure.runtime.store.count() == 1


async def test_transcribe_with_conjure_sends_the_audio_to_whisper(
    sandbox_server, database_url: str, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        posted = fake.person_posts_file(
            CHANNEL, "standup.mp3", MP3, text="today's standup", mimetype="audio/mpeg"
        )
        await conjure.shortcut("conjure_transcribe", posted)
        await conjure.settle(sandbox_server)

        prediction = the_prediction(sandbox_server)
        assert prediction["model"] == "openai/whisper"
        assert await image_input_bytes(sandbox_server, prediction["input"]["audio"]) == MP3
        said = thread_texts(conjure, posted)
        assert "asked /transcribe: “standup.mp3”" in said
        assert f"The sandbox heard {len(MP3):,} bytes of audio." in said
    assert BOT_TOKEN not in caplog.text  # sent to Slack's file host, never logged
    assert BOT_TOKEN not in str(sandbox_server.sandbox.predictions)


async def test_no_file_or_the_wrong_one_gets_a_private_answer_and_nothing_is_spent(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        pdf = fake.person_posts_file(CHANNEL, "notes.pdf", b"%PDF-1.7\n", text="minutes")
        plain = fake.person_posts_file(CHANNEL, "x.png", png((4, 4), (0, 0, 0)))
        plain.files = []  # a message with no file at all
        huge = fake.person_posts_file(CHANNEL, "huge.png", png((4, 4), (0, 0, 0)))
        fake.uploads[huge.files[0]].length = 30 * 1024 * 1024  # what Slack says of its size

        await conjure.shortcut("conjure_transcribe", pdf, response_id="pdf")
        await conjure.shortcut("conjure_ask_image", plain, response_id="none")
        await conjure.shortcut("conjure_vary", huge, response_id="huge")
        await conjure.settle(sandbox_server)

        [told] = fake.responses_to("pdf")
        assert told.response_type == "ephemeral"
        assert told.text.startswith("That file is a PDF; /transcribe takes audio: mp3, wav, m4a")
        [told] = fake.responses_to("none")
        assert told.text == (
            "“Ask Conjure about this image” works on a message with an image "
            "(PNG, JPEG, WebP, GIF)."
        )
        [told] = fake.responses_to("huge")
        assert told.text == "The image is 30 MB; the limit is 10 MB."
        assert await nothing_spent(conjure, sandbox_server)
        assert fake.downloads == []  # no file was read
        assert fake.calls_to("chat.postMessage") == []


async def test_a_sign_in_page_slack_serves_instead_of_the_file_is_refused_not_sent_to_a_model(
    sandbox_server, sqlite_url: str
) -> None:
    """Slack answers a file read it will not serve the token (no files:read) with its sign-in
    web page, status 200: that page is not the person's image, and a model given it fails, or
    draws from a web page's bytes. The person is told what an admin can do; nothing is run."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.fake
        fake.sign_in_page = True
        posted = fake.person_posts_file(
            CHANNEL, "boat.png", png((96, 64), (1, 2, 3)), text="a boat"
        )
        await conjure.shortcut("conjure_vary", posted, response_id="vary")
        await conjure.settle(sandbox_server)

        [told] = fake.responses_to("vary")
        assert told.response_type == "ephemeral"
        assert told.text == (
            "Conjure could not read that image (boat.png): a web page came instead of the file. "
            "The app may be missing permission to read files; an admin can reinstall it."
        )
        assert [d.authorized for d in fake.downloads] == [True]
        assert await nothing_spent(conjure, sandbox_server)
