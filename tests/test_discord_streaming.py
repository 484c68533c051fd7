"""Discord: an /ask answer shown on the interaction's response while the model writes it
(edits at most about once a second), whole at the end, and never a second message.

The real discord.py dispatch against the fake Discord REST API and the sandbox, whose text runs
hold after a few tokens (`pause_after_tokens`) so a half-written answer can be looked at.
"""

from __future__ import annotations

import asyncio
import itertools

from bot.sandbox import HttpFault
from storage.models import Delivery
from tests.discord_harness import running_discord_conjure
from tests.fakes.discord_api import running_fake_discord
from tests.sandbox_fixtures import SandboxServer

ORIGINAL = r"/messages/@original$"


def the_answer(sandbox_server: SandboxServer) -> str:
    [prediction] = sandbox_server.sandbox.predictions.values()
    assert prediction["status"] == "succeeded"
    return "".join(prediction["output"])


def running(sandbox_server: SandboxServer) -> bool:
    return all(p["status"] == "processing" for p in sandbox_server.sandbox.predictions.values())


async def test_an_answer_shows_on_the_response_before_the_model_is_done_and_ends_whole(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 4
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("ask", {"prompt": "why is the sky blue?"})

        def partial() -> str | None:
            message = fake.original(sent.token)
            content = message["content"] if message else ""
            return content if "✍️ You asked" in content else None

        seen = await fake.wait_for(partial)
        assert running(sandbox_server)
        sandbox_server.sandbox.faults.pause_after_tokens = 0
        await conjure.settle()

        message = fake.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        answer = the_answer(sandbox_server)
        assert message["content"].endswith("\n\n" + answer) and "✍️" not in message["content"]
        assert answer.startswith(seen.split("✍️ ", 1)[1])
        assert fake.find("POST", "/messages$") == []  # nothing posted besides the response
        live = [c.at for c in fake.find("PATCH", ORIGINAL) if "✍️" in str(c.json)]
        assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(live))


async def test_a_broken_stream_still_ends_with_the_whole_answer(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    faults = sandbox_server.sandbox.faults
    faults.cut_streams_after = 3
    faults.http.append(HttpFault(status=500, count=10, path_prefix="/stream/"))
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        sent = await conjure.interact("ask", {"prompt": "why is the sky blue?"})
        await conjure.settle()
        message = conjure.discord.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert message["content"].endswith("\n\n" + the_answer(sandbox_server))


async def test_after_a_restart_the_response_is_finished_not_posted_again(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 4
    async with running_fake_discord() as fake:
        async with running_discord_conjure(sandbox_server, database_url, fake=fake) as first:
            sent = await first.interact("ask", {"prompt": "why is the sky blue?"})
            await fake.wait_for(lambda: "✍️" in (fake.original(sent.token) or {}).get("content", ""))
        async with running_discord_conjure(sandbox_server, database_url, fake=fake) as second:
            sandbox_server.sandbox.faults.pause_after_tokens = 0
            [prediction_id] = sandbox_server.sandbox.predictions
            async with asyncio.timeout(10):
                while True:
                    job = await second.runtime.store.find_by_prediction(prediction_id)
                    if job is not None and job.delivery == Delivery.DELIVERED:
                        break
                    await asyncio.sleep(0.02)
        message = fake.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert message["content"].endswith("\n\n" + the_answer(sandbox_server))
        assert fake.find("POST", "/messages$") == []


async def test_a_reasoning_models_thinking_is_not_mixed_into_the_answer(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 5
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact(
            "ask", {"prompt": "why is the sky blue?", "model": "deepseek-r1"}
        )
        await fake.wait_for(lambda: "✍️" in (fake.original(sent.token) or {}).get("content", ""))
        live = (fake.original(sent.token) or {})["content"]
        assert live.endswith("✍️ 💭 Reasoning…") and "think" not in live
        sandbox_server.sandbox.faults.pause_after_tokens = 0
        await conjure.settle()
        content = (fake.original(sent.token) or {})["content"]
        reply = the_answer(sandbox_server).split("</think>")[1].strip()
        assert content.endswith("words, not shown)\n\n" + reply)
        assert "<think>" not in content and "I am the sandbox" not in content
