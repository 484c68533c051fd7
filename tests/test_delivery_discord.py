"""Discord's final word posted once: the channel fallback carries a nonce Discord enforces, so a
second delivery of the same job (after a takeover) gets the first message, not a second one."""

from __future__ import annotations

from datetime import timedelta

from adapters.discord.adapter import delivery_nonce
from bot.adapter import JobResult, OutputFile
from storage.models import Delivery, utcnow
from tests.discord_harness import CHANNEL_ID, running_discord_conjure
from tests.sandbox_fixtures import SandboxServer

FLUX_SCHNELL_MICROS = 3000


async def test_the_channel_fallback_posted_twice_is_one_message(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a slow snail"})
        later = timedelta(minutes=16)  # the job outlives its interaction token
        conjure.adapter.clock = lambda: utcnow() + later
        fake.clock_shift = later
        await conjure.settle()

        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.delivery == Delivery.DELIVERED
        [first] = fake.channel_messages(CHANNEL_ID)

        # The instance that takes the delivery over posts it again, as it was handed over.
        job.destination["token"] = sent.token
        image = OutputFile("out-0.webp", first["attachments"][0]["data"], "image/webp")
        await conjure.adapter.post_result(job, JobResult(files=[image]))

        posts = fake.find("POST", f"^/channels/{CHANNEL_ID}/messages$")
        assert [c.status for c in posts] == [200, 200]
        nonce = delivery_nonce(job, "r")
        assert len(nonce) <= 25
        assert all(c.payload["nonce"] == nonce and c.payload["enforce_nonce"] for c in posts)
        assert fake.channel_messages(CHANNEL_ID) == [first]  # one message, the first
        assert job.actual_micros == FLUX_SCHNELL_MICROS  # charged once
