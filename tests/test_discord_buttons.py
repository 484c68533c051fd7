"""Buttons on Discord, end to end: components on the job's message, and presses arriving as real
component interactions (type 3) through discord.py's own dispatch to the persistent
`DynamicItem`, the real app and database, the sandbox on loopback and a fake Discord recording
what a person would see (and serving the attachments a press reads back)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.quotas.windows import month_window
from bot.sandbox import HttpFault
from storage.jobs import user_subject
from storage.models import Delivery, Job, JobStatus, utcnow
from tests.discord_harness import (
    CHANNEL_ID,
    GUILD_ID,
    USER_ID,
    DiscordConjure,
    Sent,
    button_styles,
    buttons,
    component_payload,
    custom_id_of,
    interaction_payload,
    running_discord_conjure,
    serve_env,
)
from tests.fakes.discord_api import (
    APP_ID,
    EPHEMERAL,
    Call,
    FakeDiscord,
    FakeGateway,
    running_fake_discord,
    running_fake_gateway,
)
from tests.harness import all_jobs, port_for_another_process
from tests.sandbox_fixtures import SandboxServer

ROOT = Path(__file__).resolve().parent.parent

FLUX_SCHNELL_MICROS = 3000  # per image
BYSTANDER = 1_100_000_000_000_000_005
OWNER_MENTION = f"<@{USER_ID}>"
BYSTANDER_MENTION = f"<@{BYSTANDER}>"
FOLLOW_UPS_OF_TWO = [["Re-roll"], ["U1", "U2"], ["V1", "V2"]]
DANGER, SECONDARY = 4, 2


def callbacks(fake: FakeDiscord, sent: Sent) -> list[Call]:
    return [c for c in fake.find("POST", "/callback$") if sent.token in c.path]


def follow_ups(fake: FakeDiscord, sent: Sent) -> list[Call]:
    """Messages sent on the press's token after its first answer (webhook POSTs)."""
    return [c for c in fake.find("POST", f"^/webhooks/{APP_ID}/") if sent.token in c.path]


def size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def made(
    conjure: DiscordConjure, prompt: str, n: int = 1, **options: int
) -> tuple[dict, Job]:
    """/imagine, settled: its message as the fake holds it, and its job."""
    sent = await conjure.interact("imagine", {"prompt": prompt, "n": n, **options})
    await conjure.settle()
    message = conjure.discord.original(sent.token)
    assert message is not None and "✅ done" in message["content"]
    [job] = [j for j in await jobs(conjure) if j.parent_id is None and j.prompt == prompt]
    return message, job


async def jobs(conjure: DiscordConjure) -> list[Job]:
    return await all_jobs(conjure.runtime.store)


async def children(conjure: DiscordConjure, parent: Job) -> list[Job]:
    return [j for j in await jobs(conjure) if j.parent_id == parent.id]


async def spent(conjure: DiscordConjure, user_id: int) -> int:
    subject = user_subject("discord", str(GUILD_ID), str(user_id))
    counter = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
    return 0 if counter is None else counter.spent_micros


def image_of(job: Job) -> bytes:
    """The bytes a follow-up sent Replicate (a data: URL at these sizes)."""
    url = job.input["image"]
    assert url.startswith("data:image/")
    return base64.b64decode(url.partition(",")[2])


# ---- what the message shows ------------------------------------------------------------------


async def test_a_running_job_shows_cancel_and_a_finished_one_its_follow_ups(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "two boats", "n": 2})
        await conjure.settle()
        [job] = await jobs(conjure)

        edits = [c for c in fake.find("PATCH", "/messages/@original$") if sent.token in c.path]
        queued = edits[0].payload
        assert "⏳ queued" in queued["content"]
        [[cancel]] = [row["components"] for row in queued["components"]]
        assert (cancel["label"], cancel["style"]) == ("Cancel", DANGER)
        assert cancel["custom_id"] == f"conjure:cancel:{job.id}:0"

        message = fake.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert len(message["attachments"]) == 2
        assert buttons(message) == FOLLOW_UPS_OF_TWO
        assert set(button_styles(message).values()) == {SECONDARY}
        ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
        assert ids == [
            f"conjure:reroll:{job.id}:0",
            f"conjure:upscale:{job.id}:1",
            f"conjure:upscale:{job.id}:2",
            f"conjure:vary:{job.id}:1",
            f"conjure:vary:{job.id}:2",
        ]


async def test_a_failed_job_shows_no_buttons(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact("imagine", {"prompt": "a cat"})
        await conjure.settle()
        message = conjure.discord.original(sent.token)
        assert message is not None and "❌ failed" in message["content"]
        assert message["components"] == []


# ---- re-roll, upscale, vary ------------------------------------------------------------------


async def test_reroll_is_a_new_job_of_the_presser_with_a_new_seed_in_its_own_message(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "a lighthouse", n=2, seed=7)

        press = await conjure.press(message, "Re-roll", user_id=BYSTANDER, display_name="Bo")
        await conjure.settle()

        [answer] = callbacks(fake, press)
        assert answer.payload == {"type": 5}  # "thinking", publicly: it becomes the new message
        new = fake.original(press.token)
        assert new is not None and new["id"] != message["id"]
        assert new["channel_id"] == str(CHANNEL_ID)
        assert new["content"].startswith(
            f"🔁 Re-roll · {BYSTANDER_MENTION} asked /imagine: “a lighthouse”"
        )
        assert "✅ done" in new["content"] and "$0.006" in new["content"]
        assert len(new["attachments"]) == 2
        assert buttons(new) == FOLLOW_UPS_OF_TWO  # a re-roll can be followed up in turn
        first = fake.messages[int(message["id"])]  # the first result is as it was
        assert buttons(first) == FOLLOW_UPS_OF_TWO and len(first["attachments"]) == 2

        [child] = await children(conjure, parent)
        assert (child.user_id, child.followup) == (str(BYSTANDER), "reroll")
        assert child.user_name == "Bo"
        assert child.model == parent.model and child.input["seed"] != 7
        assert {**child.input, "seed": 7} == parent.input
        assert child.destination["message_id"] == new["id"]
        assert child.actual_micros == 2 * FLUX_SCHNELL_MICROS
        assert await spent(conjure, BYSTANDER) == 2 * FLUX_SCHNELL_MICROS  # the presser pays
        assert await spent(conjure, USER_ID) == 2 * FLUX_SCHNELL_MICROS  # the first job only


async def test_u2_upscales_the_second_image(sandbox_server: SandboxServer, sqlite_url: str) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "two boats", n=2)
        second = message["attachments"][1]

        press = await conjure.press(message, "U2")
        await conjure.settle()

        new = fake.original(press.token)
        assert new is not None and "✅ done" in new["content"]
        assert new["content"].startswith(
            f"🔍 Upscale of image 2 · {OWNER_MENTION} asked /imagine: “two boats”"
        )
        [upscaled] = new["attachments"]
        width, height = size(second["data"])
        assert size(upscaled["data"]) == (2 * width, 2 * height)  # conjure.toml's scale 2
        assert buttons(new) == []  # an upscale is final

        [child] = await children(conjure, parent)
        assert (child.followup, child.model, child.input["scale"]) == (
            "upscale:2",
            "real-esrgan",
            2,
        )
        assert image_of(child) == second["data"]
        assert child.actual_micros is not None and child.actual_micros > 0
        assert await spent(conjure, USER_ID) == 2 * FLUX_SCHNELL_MICROS + child.actual_micros


async def test_v1_runs_the_variation_model_on_the_first_image(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "a red barn", n=2)

        press = await conjure.press(message, "V1")
        await conjure.settle()

        new = fake.original(press.token)
        assert new is not None and "✅ done" in new["content"]
        assert new["content"].startswith(f"🎲 Variations of image 1 · {OWNER_MENTION} asked")
        assert "model flux-dev" in new["content"]
        assert len(new["attachments"]) == 2  # as many as the first had
        assert buttons(new) == FOLLOW_UPS_OF_TWO
        [child] = await children(conjure, parent)
        assert (child.followup, child.model, child.prompt) == ("vary:1", "flux-dev", "a red barn")
        assert child.input["prompt"] == "a red barn" and child.input["prompt_strength"] == 0.75
        assert image_of(child) == message["attachments"][0]["data"]
        assert await spent(conjure, USER_ID) == 2 * FLUX_SCHNELL_MICROS + child.actual_micros


async def test_a_variation_after_replicates_link_expired_uses_the_discord_attachment(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "an old photo", n=2)
        await conjure.runtime.store.update_fields(
            parent.id, completed_at=utcnow() - timedelta(hours=2)
        )
        sandbox_server.sandbox.faults.http.append(
            HttpFault(status=404, count=99, path_prefix="/files/")
        )

        press = await conjure.press(message, "V2", user_id=BYSTANDER)
        await conjure.settle()

        second = message["attachments"][1]
        [read] = fake.find("GET", "^/attachments/")
        assert read.path == f"/attachments/{second['id']}/{second['filename']}"
        assert read.status == 200
        new = fake.original(press.token)
        assert new is not None and "✅ done" in new["content"]
        assert new["content"].startswith(f"🎲 Variations of image 2 · {BYSTANDER_MENTION}")
        [child] = await children(conjure, parent)
        assert image_of(child) == second["data"]
        assert await spent(conjure, BYSTANDER) == child.actual_micros > 0


async def test_a_slow_image_read_is_deferred_before_discords_three_seconds(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """Reading the image back takes longer than Discord waits for an answer: the press is
    deferred before the core has recorded the job, and that response still becomes the job's
    message."""
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "a slow download")
        fake.attachment_delay = 3.5  # the fake refuses an answer later than 3 s

        press = await conjure.press(message, "U1")
        await conjure.settle()

        [answer] = callbacks(fake, press)
        assert answer.status == 200 and answer.payload == {"type": 5}
        new = fake.original(press.token)
        assert new is not None and "✅ done" in new["content"]
        assert len(new["attachments"]) == 1
        [child] = await children(conjure, parent)
        assert child.destination["message_id"] == new["id"]
        assert image_of(child) == message["attachments"][0]["data"]


async def test_with_the_attachment_gone_too_the_presser_is_told_privately(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "a lost picture")
        await conjure.runtime.store.update_fields(
            parent.id, completed_at=utcnow() - timedelta(hours=2)
        )
        message["attachments"] = []  # the file was removed from the message

        press = await conjure.press(message, "U1")

        [answer] = callbacks(fake, press)
        assert answer.payload["type"] == 4 and answer.payload["data"]["flags"] == EPHEMERAL
        assert "That image is no longer available" in answer.payload["data"]["content"]
        assert await children(conjure, parent) == []
        assert sandbox_server.sandbox.create_count == 1


# ---- who may press, and how often ------------------------------------------------------------


async def test_two_quick_presses_make_one_job(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        message, parent = await made(conjure, "a comet")

        presses = await asyncio.gather(*(conjure.press(message, "Re-roll") for _ in range(2)))
        await conjure.settle()

        [child] = await children(conjure, parent)
        answers = [callbacks(fake, p)[0].payload for p in presses]
        assert sorted(a["type"] for a in answers) == [5, 6]  # one job; the other, silence
        shown = [m for p in presses if (m := fake.original(p.token)) and m["id"] != message["id"]]
        [new] = shown
        assert "✅ done" in new["content"] and new["id"] == child.destination["message_id"]
        assert all(follow_ups(fake, p) == [] for p in presses)
        assert sandbox_server.sandbox.create_count == 2
        assert await spent(conjure, USER_ID) == 2 * FLUX_SCHNELL_MICROS


async def test_cancel_is_refused_to_a_bystander_and_stops_the_owners_job(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    sandbox_server.sandbox.config.speed = 1.0
    sandbox_server.sandbox.faults.run_time_factor = 10.0  # llama runs ~10 s: time to cancel
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake, store = conjure.discord, conjure.runtime.store
        sent = await conjure.interact("ask", {"prompt": "tell me a long story"})
        [job] = await jobs(conjure)
        assert job.prediction_id is not None  # created: the run is under way
        while (await store.get(job.id)).job_status is not JobStatus.PROCESSING:
            await asyncio.sleep(0.05)  # running, so the cancel has time to charge
        running = fake.original(sent.token)
        assert running is not None and "asked /ask" in running["content"]
        assert buttons(running) == [["Cancel"]]

        refused = await conjure.press(running, "Cancel", user_id=BYSTANDER)
        assert [c.payload for c in callbacks(fake, refused)] == [{"type": 6}]  # nothing moves
        [told] = follow_ups(fake, refused)
        assert told.payload["flags"] == EPHEMERAL
        assert told.payload["content"] == (
            "Only the person who started this job, or a Conjure admin, can cancel it."
        )
        current = await store.get(job.id)
        assert current is not None and not current.job_status.terminal
        assert buttons(fake.original(sent.token)) == [["Cancel"]]

        canceled = await conjure.press(running, "Cancel")
        await conjure.settle()
        assert [c.payload for c in callbacks(fake, canceled)] == [{"type": 6}]
        assert follow_ups(fake, canceled) == []  # the job's own message says it

        message = fake.original(sent.token)
        assert message is not None and message["id"] == running["id"]
        assert "The job was canceled." in message["content"]
        assert message["components"] == []
        done = await store.get(job.id)
        assert done is not None and done.job_status is JobStatus.CANCELED
        assert done.delivery == Delivery.DELIVERED
        prediction = sandbox_server.sandbox.predictions[done.prediction_id]
        assert prediction["status"] == "canceled"
        metrics = prediction["metrics"]
        model = conjure.runtime.catalog.models[done.model]
        assert done.actual_micros == model.price.actual_micros(  # the tokens read and written
            0,
            metrics["predict_time"],
            tokens=model.token_budget(done.input),
            input_tokens=metrics["input_token_count"],
            output_tokens=metrics["output_token_count"],
        )
        assert done.actual_micros > 0
        assert await spent(conjure, USER_ID) == done.actual_micros
        assert await spent(conjure, BYSTANDER) == 0


async def test_cancel_of_a_job_older_than_its_token_still_takes_the_button_away(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """A job running past its interaction's 15 minutes can no longer edit its message: the
    canceled result is a reply in the channel, and the press's own token takes Cancel away."""
    sandbox_server.sandbox.config.speed = 1.0
    sandbox_server.sandbox.faults.run_time_factor = 10.0
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake, store = conjure.discord, conjure.runtime.store
        sent = await conjure.interact("ask", {"prompt": "a very long story"})
        [job] = await jobs(conjure)
        while (await store.get(job.id)).job_status is not JobStatus.PROCESSING:
            await asyncio.sleep(0.05)
        running = fake.original(sent.token)
        assert running is not None and buttons(running) == [["Cancel"]]
        later = timedelta(minutes=16)
        conjure.adapter.clock = lambda: utcnow() + later  # the job's token is dead by now

        press = await conjure.press(running, "Cancel")
        await conjure.settle()

        assert [c.payload for c in callbacks(fake, press)] == [{"type": 6}]
        assert running["components"] == []  # edited through the press's token
        assert "canceled" not in running["content"]  # the job's own token could not
        [reply] = fake.channel_messages(CHANNEL_ID)
        assert reply["content"].startswith(OWNER_MENTION)
        assert "The job was canceled." in reply["content"] and reply["components"] == []
        done = await store.get(job.id)
        assert done is not None and done.job_status is JobStatus.CANCELED
        assert await spent(conjure, USER_ID) == done.actual_micros


# ---- restarts and other instances ------------------------------------------------------------


async def test_a_press_after_a_restart_works(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    """The buttons of a message made before a restart still work: no view was kept, the
    custom_id's template is registered at start and the rest is in the database. The restarted
    instance gets the press over the gateway, as `conjure serve` does."""
    async with running_fake_discord() as fake:
        async with running_discord_conjure(sandbox_server, database_url, fake=fake) as first:
            message, parent = await made(first, "an owl", n=2)
        async with running_discord_conjure(
            sandbox_server, database_url, fake=fake, gateway=True
        ) as restarted:
            press = await restarted.press(message, "U1", user_id=BYSTANDER)
            new = await fake.wait_for(
                lambda: (m := fake.original(press.token)) and m["attachments"] and m
            )
            await restarted.settle()
            [child] = await children(restarted, parent)
            assert child.followup == "upscale:1" and child.user_id == str(BYSTANDER)
            assert "✅ done" in new["content"]
            assert new["content"].startswith(f"🔍 Upscale of image 1 · {BYSTANDER_MENTION}")
            assert await spent(restarted, BYSTANDER) == child.actual_micros > 0


async def test_a_press_on_a_second_instance_for_a_job_of_the_first(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    async with (
        running_fake_discord() as fake,
        running_discord_conjure(sandbox_server, database_url, fake=fake) as one,
        running_discord_conjure(sandbox_server, database_url, fake=fake) as two,
    ):
        message, parent = await made(one, "a harbour at night")

        press = await two.press(message, "Re-roll", user_id=BYSTANDER)
        await two.settle()
        await one.settle()

        new = fake.original(press.token)
        assert new is not None and "✅ done" in new["content"]
        assert new["content"].startswith(f"🔁 Re-roll · {BYSTANDER_MENTION} asked /imagine")
        [child] = await children(two, parent)
        prediction = sandbox_server.sandbox.predictions[child.prediction_id]
        assert prediction["webhook"].startswith(two.url)  # started, and followed, by two
        assert child.delivery == Delivery.DELIVERED
        assert await spent(one, BYSTANDER) == FLUX_SCHNELL_MICROS


@pytest.mark.parametrize("label", ["Re-roll", "U1", "V1"])
async def test_each_follow_up_pressed_over_the_gateway_starts_its_job(
    sandbox_server: SandboxServer, sqlite_url: str, label: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url, gateway=True) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a quick fox"})
        message = await fake.wait_for(
            lambda: (m := fake.original(sent.token)) and m["components"] and m["attachments"] and m
        )
        await conjure.settle()
        press = await conjure.press(message, label)
        new = await fake.wait_for(
            lambda: (m := fake.original(press.token)) and m["attachments"] and m
        )
        await conjure.settle()
        [answer] = callbacks(fake, press)  # the fake refuses an answer later than 3 s
        assert answer.status == 200 and answer.payload == {"type": 5}
        assert "✅ done" in new["content"] and new["id"] != message["id"]


# ---- `conjure serve` killed and started again ------------------------------------------------


@contextlib.asynccontextmanager
async def serve(
    sandbox: SandboxServer, tmp_path: Path, fake: FakeDiscord, gateway: FakeGateway
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m bot.cli serve` with Discord (over `gateway`) on tmp_path's SQLite database,
    until its gateway session is up; killed afterwards if still running."""
    port = port_for_another_process()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "REPLICATE_API_TOKEN": sandbox.token,
        "REPLICATE_BASE_URL": sandbox.url,
        "CONJURE_WEBHOOK_SECRET": sandbox.webhook_secret,
        "CONJURE_PUBLIC_URL": url,
        "CONJURE_DATABASE_URL": f"sqlite:///{tmp_path / 'conjure.db'}",
        **serve_env(fake, gateway),
    }
    sessions = len(gateway.identifies)
    log = (tmp_path / f"serve-{port}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            while True:
                assert process.returncode is None, "serve exited"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        await fake.wait_for(
            lambda: len(gateway.identifies) > sessions and gateway.connected == 1, timeout=30
        )
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        log.close()


def assert_quiet(tmp_path: Path) -> None:
    """Both serves' logs: nothing went wrong (no traceback, warning or error)."""
    logs = sorted(tmp_path.glob("serve-*.log"))
    assert len(logs) == 2
    for path in logs:
        text = path.read_text()
        assert "Traceback" not in text and " WARNING " not in text and " ERROR " not in text, text


async def test_each_button_works_after_serve_was_killed_and_started_again(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """The issue's test: a result made by one `conjure serve`, which is then killed (-9); a new
    one on the same database answers each button of that result, over the gateway."""
    async with running_fake_discord() as fake, running_fake_gateway(fake) as gateway:

        async def send(payload: dict) -> dict:
            fake.register_interaction(payload)
            await asyncio.wait_for(gateway.dispatch("INTERACTION_CREATE", payload), timeout=30)
            token = payload["token"]
            return await fake.wait_for(
                lambda: (m := fake.original(token)) and "✅ done" in m["content"] and m,
                timeout=30,
            )

        async with serve(sandbox_server, tmp_path, fake, gateway) as first:
            command = interaction_payload(
                fake,
                "imagine",
                {"prompt": "a lighthouse at dusk", "n": 2},
                subcommand=None,
                user_id=USER_ID,
                attachment_size_limit=10 * 1024 * 1024,
            )
            message = await send(command)
            sandbox_server.sandbox.faults.run_time_factor = 1000.0  # /ask runs for a minute
            ask = interaction_payload(
                fake,
                "ask",
                {"prompt": "a long story"},
                subcommand=None,
                user_id=USER_ID,
                attachment_size_limit=10 * 1024 * 1024,
            )
            fake.register_interaction(ask)
            await gateway.dispatch("INTERACTION_CREATE", ask)
            running = await fake.wait_for(  # its prediction is known: Replicate said starting
                lambda: (m := fake.original(ask["token"])) and "starting" in m["content"] and m,
                timeout=30,
            )
            sandbox_server.sandbox.faults.run_time_factor = 1.0
            first.kill()  # -9: nothing is wound down
        assert buttons(message) == FOLLOW_UPS_OF_TWO
        assert buttons(running) == [["Cancel"]]

        async with serve(sandbox_server, tmp_path, fake, gateway):
            made = {}
            for label in ("Re-roll", "U2", "V1"):
                custom_id = custom_id_of(message, label)
                payload = component_payload(fake, message, custom_id, BYSTANDER)
                made[label] = await send(payload)
            cancel = component_payload(fake, running, custom_id_of(running, "Cancel"), USER_ID)
            fake.register_interaction(cancel)
            await gateway.dispatch("INTERACTION_CREATE", cancel)
            canceled = await fake.wait_for(
                lambda: "canceled" in running["content"] and running, timeout=30
            )

    assert_quiet(tmp_path)
    assert made["Re-roll"]["content"].startswith(f"🔁 Re-roll · {BYSTANDER_MENTION} asked")
    assert len(made["Re-roll"]["attachments"]) == 2
    [upscaled] = made["U2"]["attachments"]
    width, height = size(message["attachments"][1]["data"])
    assert size(upscaled["data"]) == (2 * width, 2 * height)
    assert made["V1"]["content"].startswith(f"🎲 Variations of image 1 · {BYSTANDER_MENTION}")
    assert "model flux-dev" in made["V1"]["content"]
    assert sandbox_server.sandbox.create_count == 5
    assert "The job was canceled." in canceled["content"] and canceled["components"] == []
    predictions = sandbox_server.sandbox.predictions.values()
    [story] = [p for p in predictions if p["input"].get("prompt") == "a long story"]
    assert story["status"] == "canceled"


async def test_a_run_that_outran_its_cancel_is_delivered_in_the_channel(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """Cancel is pressed while the create is on its way, and the run has already finished when
    the cancel reaches it: its result is charged (it ran) and delivered. The cancel's notice
    had used up the interaction's token (a delivered job keeps none), so the result goes to
    the channel; it failed for good (KeyError), charged and never shown."""
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        service = conjure.runtime.service
        create = service.replicate.create_prediction

        async def cancelled_while_creating(**kwargs: Any) -> Any:
            [job] = await all_jobs(service.store)
            assert await service.cancel(job)  # the owner's Cancel, before the create answered
            await service.wait_idle()  # "canceled" delivered: the token is stripped
            prediction = await create(**kwargs)
            runs = sandbox_server.sandbox.predictions
            while runs[prediction.id]["status"] != "succeeded":  # done before the cancel
                await asyncio.sleep(0.02)
            return prediction

        service.replicate.create_prediction = cancelled_while_creating  # type: ignore[method-assign]
        await conjure.interact("imagine", {"prompt": "a red fox"})
        await conjure.settle()

        [job] = await all_jobs(service.store)
        assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros
        assert job.delivery == Delivery.DELIVERED
        [posted] = [m for m in conjure.discord.channel_messages(CHANNEL_ID) if m["attachments"]]
        assert [a["filename"] for a in posted["attachments"]] == ["out-0.webp"]
