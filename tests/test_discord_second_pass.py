"""Discord's edges a first review left: where a result goes when the channel refuses the bot
after the interaction token died, and what fits in one message. Real discord.py, the real app,
the sandbox and the fake Discord on loopback."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.models import Delivery, utcnow
from tests.discord_harness import CHANNEL_ID, USER_ID, DiscordConjure, running_discord_conjure
from tests.sandbox_fixtures import SandboxServer

LATER = timedelta(minutes=16)  # past the interaction token's 15 minutes


def outlive_the_token(conjure: DiscordConjure) -> None:
    conjure.adapter.clock = lambda: utcnow() + LATER
    conjure.discord.clock_shift = LATER


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, 50001),  # Missing Access: a user-installed app in a server the bot is not in
        (403, 50013),  # Missing Permissions: no Send Messages or Attach Files there
        (404, 10003),  # Unknown Channel: the channel or thread was deleted meanwhile
    ],
)
async def test_a_late_result_the_channel_refuses_reaches_the_asker_by_dm(
    sandbox_server: SandboxServer, sqlite_url: str, status: int, code: int
) -> None:
    """The paid image went nowhere: the channel post was refused for good and the delivery
    marked failed, while the response still said "starting"."""
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        fake.refused_channels[CHANNEL_ID] = (status, code)
        await conjure.interact("imagine", {"prompt": "a slow snail"})
        outlive_the_token(conjure)
        await conjure.settle()

        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.delivery == Delivery.DELIVERED
        dm = fake.dm_channels[USER_ID]
        [message] = fake.channel_messages(dm)
        assert f"could not post in <#{CHANNEL_ID}>" in message["content"]
        assert "✅ done" in message["content"]
        assert [a["filename"] for a in message["attachments"]] == ["out-0.webp"]
        [post] = [c for c in fake.find("POST", f"^/channels/{dm}/messages$")]
        assert "message_reference" not in post.payload  # the response is in another channel
        assert post.payload["allowed_mentions"]["parse"] == []


async def test_with_dms_closed_too_the_delivery_fails_plainly(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """Nowhere left to post: the delivery is failed once, not retried for ever."""
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        fake.refused_channels[CHANNEL_ID] = (403, 50013)
        fake.closed_dms.add(USER_ID)
        await conjure.interact("imagine", {"prompt": "a slow snail"})
        outlive_the_token(conjure)
        await conjure.settle()

        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.delivery == Delivery.FAILED
        # The result, then the word that it could not be posted (refused too): no more.
        posts = fake.find("POST", f"^/channels/{CHANNEL_ID}/messages$")
        assert len(posts) == 2 and {post.status for post in posts} == {403}
