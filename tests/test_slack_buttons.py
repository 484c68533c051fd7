"""Slack follow-up buttons end to end: Block Kit on Conjure's status message, presses sent as
Slack sends them (a signed `block_actions` payload) through the real bolt app, the sandbox on
loopback running what they start, and the fake Slack recording what people see.

Each test checks what a person sees (the status message and its buttons, the thread, uploads,
private answers) and what was charged to whom.
"""

from __future__ import annotations

import asyncio
import base64
import io
from datetime import timedelta
from typing import Any

from PIL import Image

from bot.followups.service import NOT_YOURS
from bot.quotas.windows import month_window
from storage.jobs import user_subject
from storage.models import Delivery, Job, JobStatus, utcnow
from tests.fakes.slack_api import TEAM_ID, Message, serve_fake_slack
from tests.slack_harness import SlackConjure, running_slack_conjure

CHANNEL = "C0GENERAL"
ADA = "U0ADA"
BOB = "U0BOB"
FLUX_SCHNELL_MICROS = 3000
FLUX_DEV_MICROS = 25000


# ---- helpers -------------------------------------------------------------------------------


async def job_of_prediction(conjure: SlackConjure, prediction_id: str) -> Job:
    found = await conjure.runtime.store.find_by_prediction(prediction_id)
    assert found is not None
    return found


async def newest_job(conjure: SlackConjure, sandbox_server) -> Job:
    """The job of the sandbox's newest prediction."""
    prediction_id = list(sandbox_server.sandbox.predictions)[-1]
    return await job_of_prediction(conjure, prediction_id)


async def spent(conjure: SlackConjure, user_id: str) -> int:
    """What `user_id` has been charged this month (micro-dollars)."""
    subject = user_subject("slack", TEAM_ID, user_id)
    counter = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
    return 0 if counter is None else counter.spent_micros


def ids_of(message: Message) -> list[str]:
    return [button["action_id"] for button in message.buttons]


def image_size(content: bytes | None) -> tuple[int, int]:
    assert content is not None
    return Image.open(io.BytesIO(content)).size


def data_url_bytes(url: str) -> bytes:
    assert url.startswith("data:"), url[:40]
    return base64.b64decode(url.split(",", 1)[1])


async def image_input_bytes(sandbox_server, value: str) -> bytes:
    """The bytes a model was given as its image: a data: URL, or a Files API upload."""
    if value.startswith("data:"):
        return data_url_bytes(value)
    file_id = value.rstrip("/").split("/")[-1]
    return sandbox_server.sandbox.uploads.get(file_id).content  # type: ignore[union-attr]


async def finished_imagine(
    conjure: SlackConjure, sandbox_server, text: str, **fields: Any
) -> tuple[Message, Job]:
    """Run /imagine to its end; its status message (the thread root) and its job."""
    await conjure.slash("/imagine", text, **fields)
    await conjure.settle(sandbox_server)
    parent = conjure.fake.channel_messages(CHANNEL)[-1]
    job = await newest_job(conjure, sandbox_server)
    assert job.destination["thread_ts"] == parent.ts and job.delivery == Delivery.DELIVERED
    return parent, job


def followup_status(conjure: SlackConjure, parent: Message) -> Message:
    """The newest status message posted as a reply in `parent`'s thread (a follow-up's)."""
    replies = [m for m in conjure.fake.replies(CHANNEL, parent.ts) if m.blocks]
    assert replies, "no follow-up status in the thread"
    return replies[-1]


def uploads_in_thread(conjure: SlackConjure, parent: Message) -> list:
    return [u for u in conjure.fake.shared_uploads() if u.thread_ts == parent.ts]


async def until(condition, timeout: float = 20) -> None:
    """Poll `condition` (sync or async) until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


# ---- buttons on the status message ---------------------------------------------------------


async def test_a_running_job_offers_cancel_and_a_finished_one_reroll_upscale_and_vary(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        parent, job = await finished_imagine(conjure, sandbox_server, "two owls --n 2")
        fake = conjure.fake

        # Posted while it could still run: the status text, then Cancel (danger).
        [post] = fake.calls_to("chat.postMessage")
        posted = Message(CHANNEL, parent.ts, post.args["text"], blocks=post.args["blocks"])
        assert posted.blocks is not None and posted.blocks[0]["type"] == "section"
        assert posted.blocks[0]["text"]["text"] == post.args["text"]  # text is the fallback
        assert "<@U0ADA> asked /imagine: “two owls”" in post.args["text"]
        assert posted.button_labels == ["Cancel"]
        cancel = posted.button("Cancel")
        assert cancel["style"] == "danger"
        assert cancel["action_id"] == cancel["value"] == f"conjure:cancel:{job.id}:0"

        # Done: Cancel is gone; Re-roll, then U1 U2, then V1 V2, each row its own block.
        assert "✅ done in " in parent.text
        assert parent.button_labels == ["Re-roll", "U1", "U2", "V1", "V2"]
        assert ids_of(parent) == [
            f"conjure:reroll:{job.id}:0",
            f"conjure:upscale:{job.id}:1",
            f"conjure:upscale:{job.id}:2",
            f"conjure:vary:{job.id}:1",
            f"conjure:vary:{job.id}:2",
        ]
        assert all(b["value"] == b["action_id"] and "style" not in b for b in parent.buttons)
        actions = [b for b in parent.blocks or [] if b["type"] == "actions"]
        assert len(actions) == 3 and len({b["block_id"] for b in actions}) == 3
        assert all(call.args["ts"] == parent.ts for call in fake.calls_to("chat.update"))


async def test_a_text_answer_and_a_failed_job_end_without_buttons(
    sandbox_server, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        await conjure.slash("/imagine", "a cat")
        await conjure.settle(sandbox_server)
        await conjure.slash("/ask", "what is a fox?")
        await conjure.settle(sandbox_server)
        failed, answered = conjure.fake.channel_messages(CHANNEL)
        assert "❌ failed" in failed.text and failed.button_labels == []
        assert "✅ done" in answered.text and answered.button_labels == []


# ---- re-roll, upscale, vary ----------------------------------------------------------------


async def test_reroll_runs_the_same_input_with_a_new_seed_in_the_thread_for_the_presser(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        parent, job = await finished_imagine(
            conjure, sandbox_server, "a red fox --ar 16:9 --seed 42"
        )
        pressed = await conjure.press(parent, "Re-roll", user_id=BOB, user_name="bob")
        assert pressed.response.status_code == 200 and pressed.response.content == b""
        await conjure.settle(sandbox_server)

        first, second = sandbox_server.sandbox.predictions.values()
        assert second["input"]["seed"] != 42
        assert {k: v for k, v in second["input"].items() if k != "seed"} == {
            k: v for k, v in first["input"].items() if k != "seed"
        }
        rerolled = await newest_job(conjure, sandbox_server)
        assert rerolled.user_id == BOB and rerolled.parent_id == job.id
        assert rerolled.followup == "reroll"

        # In the same thread: its own status message (naming who asked, with its own buttons)
        # and its image; nothing new at the top of the channel.
        fake = conjure.fake
        assert fake.channel_messages(CHANNEL) == [parent]
        status = followup_status(conjure, parent)
        assert status.text.startswith("🔁 Re-roll · <@U0BOB> asked /imagine: “a red fox”")
        assert "✅ done in " in status.text
        assert status.button_labels == ["Re-roll", "U1", "V1"]
        assert ids_of(status)[0] == f"conjure:reroll:{rerolled.id}:0"
        assert rerolled.destination["thread_ts"] == parent.ts
        assert rerolled.destination["status_ts"] == status.ts
        updated = {c.args["ts"] for c in fake.calls_to("chat.update")}
        assert updated == {parent.ts, status.ts}
        original, new = uploads_in_thread(conjure, parent)
        assert new.initial_comment == "<@U0BOB> here is your image."
        assert new.content != original.content
        assert parent.button_labels == ["Re-roll", "U1", "V1"]  # the parent keeps its own
        assert fake.responses_to(pressed.response_id) == []  # nothing to say privately

        # Charged to the person who pressed, not to the one who asked first.
        assert rerolled.actual_micros == FLUX_SCHNELL_MICROS
        assert await spent(conjure, BOB) == FLUX_SCHNELL_MICROS
        assert await spent(conjure, ADA) == FLUX_SCHNELL_MICROS

        # A button on the follow-up's own message (a reply) starts a job in the same thread.
        await conjure.press(status, "Re-roll")
        await conjure.settle(sandbox_server)
        assert fake.channel_messages(CHANNEL) == [parent]
        again = followup_status(conjure, parent)
        assert again.ts != status.ts and again.text.startswith("🔁 Re-roll · <@U0ADA> asked")
        assert len(uploads_in_thread(conjure, parent)) == 3
        assert await spent(conjure, ADA) == 2 * FLUX_SCHNELL_MICROS


async def test_u2_upscales_the_second_image_into_the_thread(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await finished_imagine(conjure, sandbox_server, "two owls --n 2")
        [one, two] = uploads_in_thread(conjure, parent)
        await conjure.press(parent, "U2", user_id=BOB, user_name="bob")
        await conjure.settle(sandbox_server)

        prediction = list(sandbox_server.sandbox.predictions.values())[-1]
        assert (
            prediction["version"] == conjure.runtime.catalog.models["real-esrgan"].ref.split(":")[1]
        )
        assert prediction["input"]["scale"] == 2
        sent = await image_input_bytes(sandbox_server, prediction["input"]["image"])
        assert sent == two.content and sent != one.content  # read back from Slack

        upscaled = uploads_in_thread(conjure, parent)[-1]
        width, height = image_size(two.content)
        assert image_size(upscaled.content) == (width * 2, height * 2)
        assert upscaled.initial_comment == "<@U0BOB> here is your image."
        status = followup_status(conjure, parent)
        assert status.text.startswith("🔍 Upscale of image 2 · <@U0BOB> asked /imagine")
        assert "✅ done" in status.text and status.button_labels == []  # an upscale is final

        new = await newest_job(conjure, sandbox_server)
        assert (new.user_id, new.parent_id, new.followup) == (BOB, job.id, "upscale:2")
        assert new.actual_micros is not None and new.actual_micros > 0  # billed by the second
        assert await spent(conjure, BOB) == new.actual_micros
        # files.info then the private URL, with the bot token.
        assert [d.file_id for d in conjure.fake.downloads] == [two.file_id]
        assert all(d.authorized for d in conjure.fake.downloads)


async def test_v1_runs_the_variation_model_with_the_prompt_and_the_first_image(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, _ = await finished_imagine(conjure, sandbox_server, "a lighthouse at dusk")
        [image] = uploads_in_thread(conjure, parent)
        await conjure.press(parent, "V1", user_id=BOB, user_name="bob")
        await conjure.settle(sandbox_server)

        prediction = list(sandbox_server.sandbox.predictions.values())[-1]
        assert prediction["model"] == "black-forest-labs/flux-dev"
        assert prediction["input"]["prompt"] == "a lighthouse at dusk"
        assert prediction["input"]["prompt_strength"] == 0.75
        assert await image_input_bytes(sandbox_server, prediction["input"]["image"]) == (
            image.content
        )
        status = followup_status(conjure, parent)
        assert status.text.startswith("🎲 Variations of image 1 · <@U0BOB> asked /imagine")
        assert status.button_labels == ["Re-roll", "U1", "V1"]
        varied = uploads_in_thread(conjure, parent)[-1]
        assert varied.initial_comment == "<@U0BOB> here is your image."
        assert image_size(varied.content) == image_size(image.content)
        assert await spent(conjure, BOB) == FLUX_DEV_MICROS


async def test_a_variation_after_replicates_link_expired_uses_the_slack_file(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await finished_imagine(conjure, sandbox_server, "an old map")
        [image] = uploads_in_thread(conjure, parent)
        # A day later: Replicate's copy is gone, and Conjure knows its link has expired.
        [prediction_id] = sandbox_server.sandbox.predictions
        sandbox_server.sandbox.runs[prediction_id].files.clear()
        await conjure.runtime.store.update_fields(job.id, completed_at=utcnow() - timedelta(days=1))
        async with conjure.runtime.http.stream("GET", job.output[0]) as gone:
            assert gone.status_code == 404

        await conjure.press(parent, "V1")
        await conjure.settle(sandbox_server)

        prediction = list(sandbox_server.sandbox.predictions.values())[-1]
        assert prediction["status"] == "succeeded"
        assert await image_input_bytes(sandbox_server, prediction["input"]["image"]) == (
            image.content
        )
        [download] = conjure.fake.downloads
        assert download.file_id == image.file_id and download.authorized
        varied = uploads_in_thread(conjure, parent)[-1]
        assert varied.initial_comment == "<@U0ADA> here is your image."
        assert await spent(conjure, ADA) == FLUX_SCHNELL_MICROS + FLUX_DEV_MICROS


async def test_a_variation_whose_slack_file_and_link_are_both_gone_is_refused_privately(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await finished_imagine(conjure, sandbox_server, "an old map")
        [prediction_id] = sandbox_server.sandbox.predictions
        sandbox_server.sandbox.runs[prediction_id].files.clear()
        await conjure.runtime.store.update_fields(job.id, completed_at=utcnow() - timedelta(days=1))
        conjure.fake.uploads.clear()  # the file was deleted in Slack

        pressed = await conjure.press(parent, "V1")
        await conjure.settle(sandbox_server)
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert answer.response_type == "ephemeral" and answer.body["replace_original"] is False
        assert "That image is no longer available" in answer.text
        assert sandbox_server.sandbox.create_count == 1
        assert conjure.fake.replies(CHANNEL, parent.ts)[-1].files  # nothing new in the thread


async def test_a_variation_whose_slack_file_read_gives_a_sign_in_page_is_not_run_on_it(
    sandbox_server, sqlite_url: str
) -> None:
    """Replicate's link has expired and Slack answers the file's read with its sign-in page
    (200, a web page): that page is not the image, so nothing runs on it and nothing is
    charged; the person hears the image is not available."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await finished_imagine(conjure, sandbox_server, "an old map")
        [prediction_id] = sandbox_server.sandbox.predictions
        sandbox_server.sandbox.runs[prediction_id].files.clear()
        await conjure.runtime.store.update_fields(job.id, completed_at=utcnow() - timedelta(days=1))
        conjure.fake.sign_in_page = True

        pressed = await conjure.press(parent, "V1")
        await conjure.settle(sandbox_server)
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert answer.response_type == "ephemeral"
        assert "That image is no longer available" in answer.text
        assert [d.authorized for d in conjure.fake.downloads] == [True]
        assert sandbox_server.sandbox.create_count == 1  # the first job's only
        assert await spent(conjure, ADA) == FLUX_SCHNELL_MICROS


# ---- restarts, instances, double clicks ----------------------------------------------------


async def test_a_press_after_a_restart_works(sandbox_server, database_url: str) -> None:
    """The job was made by an instance that is gone (its runtime, app and socket closed); a
    new one on the same database, with nothing in memory, handles the press."""
    async with serve_fake_slack() as fake:
        async with running_slack_conjure(sandbox_server, database_url, fake=fake) as first:
            parent, job = await finished_imagine(first, sandbox_server, "a comet")
        async with running_slack_conjure(sandbox_server, database_url, fake=fake) as second:
            pressed = await second.press(parent, "U1", user_id=BOB, user_name="bob")
            assert pressed.response.status_code == 200
            await second.settle(sandbox_server)
            [image, upscaled] = uploads_in_thread(second, parent)
            width, height = image_size(image.content)
            assert image_size(upscaled.content) == (width * 2, height * 2)
            status = followup_status(second, parent)
            assert "<@U0BOB>" in status.text and "✅ done" in status.text
            new = await newest_job(second, sandbox_server)
            assert (new.parent_id, new.user_id) == (job.id, BOB)
            assert await spent(second, BOB) == new.actual_micros
            assert fake.responses_to(pressed.response_id) == []


async def test_a_press_on_a_second_instance_for_a_job_made_on_the_first_works(
    sandbox_server, database_url: str
) -> None:
    async with serve_fake_slack() as fake:
        async with (
            running_slack_conjure(sandbox_server, database_url, fake=fake) as first,
            running_slack_conjure(sandbox_server, database_url, fake=fake) as second,
        ):
            parent, job = await finished_imagine(first, sandbox_server, "a lantern")
            pressed = await second.press(parent, "Re-roll", user_id=BOB, user_name="bob")
            assert pressed.response.status_code == 200
            await second.settle(sandbox_server)
            await first.settle(sandbox_server)

            assert sandbox_server.sandbox.create_count == 2
            new = await newest_job(second, sandbox_server)
            assert (new.parent_id, new.user_id, new.followup) == (job.id, BOB, "reroll")
            assert new.delivery == Delivery.DELIVERED
            status = followup_status(second, parent)
            assert status.text.startswith("🔁 Re-roll · <@U0BOB> asked /imagine: “a lantern”")
            assert len(uploads_in_thread(second, parent)) == 2
            assert await spent(first, BOB) == FLUX_SCHNELL_MICROS


async def test_two_quick_presses_make_one_job(sandbox_server, database_url: str) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        parent, _ = await finished_imagine(conjure, sandbox_server, "a kite")
        first, second = await asyncio.gather(
            conjure.press(parent, "Re-roll", user_id=BOB, user_name="bob"),
            conjure.press(parent, "Re-roll", user_id=BOB, user_name="bob"),
        )
        await conjure.settle(sandbox_server)
        assert first.response.status_code == second.response.status_code == 200
        assert sandbox_server.sandbox.create_count == 2  # the command's, and one re-roll
        assert len([m for m in conjure.fake.replies(CHANNEL, parent.ts) if m.blocks]) == 1
        assert len(uploads_in_thread(conjure, parent)) == 2
        assert conjure.fake.responses_to(first.response_id) == []
        assert conjure.fake.responses_to(second.response_id) == []
        assert await spent(conjure, BOB) == FLUX_SCHNELL_MICROS


# ---- cancel ----------------------------------------------------------------------------------


async def running_job(conjure: SlackConjure, sandbox_server, text: str) -> tuple[Message, Job]:
    """Start a slow /imagine and wait until its prediction runs; its status message and job."""
    sandbox_server.sandbox.faults.run_time_factor = 2000  # a long run, to be canceled
    await conjure.slash("/imagine", text)
    sandbox = sandbox_server.sandbox

    async def processing() -> bool:
        if not sandbox.predictions:
            return False
        [prediction] = sandbox.predictions.values()
        if prediction["status"] != "processing":
            return False
        job = await conjure.runtime.store.find_by_prediction(prediction["id"])
        return job is not None

    await until(processing)
    [parent] = conjure.fake.channel_messages(CHANNEL)
    [prediction_id] = sandbox.predictions
    return parent, await job_of_prediction(conjure, prediction_id)


async def test_a_bystanders_cancel_is_refused_privately_and_changes_nothing(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        parent, job = await running_job(conjure, sandbox_server, "a slow sunrise")
        pressed = await conjure.press(parent, "Cancel", user_id=BOB, user_name="bob")
        assert pressed.response.status_code == 200
        await until(lambda: conjure.fake.responses_to(pressed.response_id))
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert answer.response_type == "ephemeral" and answer.text == NOT_YOURS
        assert answer.body["replace_original"] is False
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "processing"
        still = await conjure.runtime.store.get(job.id)
        assert still is not None and not still.job_status.terminal
        assert parent.button_labels == ["Cancel"]
        assert conjure.fake.replies(CHANNEL, parent.ts) == []

        await conjure.press(parent, "Cancel")  # its owner may: nothing left running
        await conjure.settle(sandbox_server)
        assert prediction["status"] == "canceled"


async def test_the_owners_cancel_stops_the_prediction_and_charges_what_ran(
    sandbox_server, database_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        parent, job = await running_job(conjure, sandbox_server, "a slow sunset --model sdxl")
        pressed = await conjure.press(parent, "Cancel")
        assert pressed.response.status_code == 200
        await conjure.settle(sandbox_server)

        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "canceled"
        ran = prediction["metrics"]["predict_time"]
        assert ran > 0
        canceled = await conjure.runtime.store.get(job.id)
        assert canceled is not None and canceled.job_status is JobStatus.CANCELED
        charged = conjure.runtime.catalog.models["sdxl"].price.actual_micros(0, ran)
        assert canceled.actual_micros == charged > 0
        assert await spent(conjure, ADA) == charged

        assert "🚫 canceled in " in parent.text and parent.button_labels == []
        assert parent.blocks is not None and [b["type"] for b in parent.blocks] == ["section"]
        [reply] = conjure.fake.replies(CHANNEL, parent.ts)
        assert reply.text == "<@U0ADA> The job was canceled."
        assert conjure.fake.responses_to(pressed.response_id) == []
        assert conjure.fake.shared_uploads() == []


async def test_the_bot_token_never_goes_to_a_file_url_that_is_not_slacks(
    sandbox_server, sqlite_url: str, monkeypatch
) -> None:
    """files.info naming a URL on another host: nothing is sent there (least of all the bot
    token); the press falls back as for a deleted file."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bot.serving import serve_app

    seen: list[dict[str, str]] = []

    async def record(request: Request) -> Response:
        seen.append(dict(request.headers))
        return Response(b"not an image")

    elsewhere = Starlette(routes=[Route("/{path:path}", record)])
    async with (
        serve_app(elsewhere) as other,
        running_slack_conjure(sandbox_server, sqlite_url) as conjure,
    ):
        parent, job = await finished_imagine(conjure, sandbox_server, "an old map")
        [prediction_id] = sandbox_server.sandbox.predictions
        sandbox_server.sandbox.runs[prediction_id].files.clear()
        await conjure.runtime.store.update_fields(job.id, completed_at=utcnow() - timedelta(days=1))
        monkeypatch.setattr(conjure.fake, "file_url", lambda upload: f"{other}/{upload.file_id}")

        pressed = await conjure.press(parent, "V1")
        await conjure.settle(sandbox_server)
        [answer] = conjure.fake.responses_to(pressed.response_id)
        assert "That image is no longer available" in answer.text
        assert seen == []
        assert sandbox_server.sandbox.create_count == 1
