"""Discord: an /ask answer shown on the interaction's response while the model writes it
(edits at most about once a second), whole at the end, and never a second message.

The real discord.py dispatch against the fake Discord REST API and the sandbox, whose text runs
hold after a few tokens (`pause_after_tokens`) so a half-written answer can be looked at.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import itertools

from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from bot.sandbox import HttpFault
from storage.models import Delivery
from tests.discord_harness import running_discord_conjure
from tests.fakes.discord_api import running_fake_discord
from tests.sandbox_fixtures import SandboxServer
from tests.test_stream_faults import the_run_ended

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


async def test_an_edit_discord_delays_past_another_instances_delivery_leaves_the_answer_whole(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    """Instance A shows the answer as it is written; the outcome reaches instance B, which
    edits the response to the whole answer while A's edit of the text so far waits out a 429.
    That edit must not be sent again after B's (A checked before it that the job still ran):
    the response ends with the whole answer, done, without a Cancel button."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    faults.drop_webhooks = 1_000_000  # the outcome below goes to instance B, as the test says
    async with running_fake_discord() as fake:
        async with (
            running_discord_conjure(sandbox_server, database_url, fake=fake) as first,
            running_discord_conjure(sandbox_server, database_url, fake=fake) as second,
        ):
            sent = await first.interact("ask", {"prompt": "why is the sky blue?"})
            await fake.wait_for(lambda: "✍️" in (fake.original(sent.token) or {}).get("content", ""))

            fake.rate_limit("PATCH", ORIGINAL, retry_after=1.0)
            before = len(fake.find("PATCH", ORIGINAL))
            faults.pause_after_tokens = 8  # four more tokens: A edits, Discord says 429
            await fake.wait_for(lambda: len(fake.find("PATCH", ORIGINAL)) > before)
            # While A waits out its retry_after, the run ends; its webhook goes to B.
            job, final = await the_run_ended(second, sandbox_server)

            async def webhook_to_b() -> None:
                # B is another process: discord.py's webhook requests (and their per-webhook
                # lock, which made B wait for A's 429 here) are its own.
                async_context.set(AsyncWebhookAdapter())
                await second.runtime.service.apply_prediction(job.id, final)
                await second.runtime.service.wait_idle()

            await asyncio.create_task(webhook_to_b(), context=contextvars.copy_context())
            delivered = copy.deepcopy(fake.original(sent.token) or {})
            assert "✅ done" in delivered["content"]
            assert delivered["content"].endswith("\n\n" + the_answer(sandbox_server))

            await first.runtime.service.wait_idle()  # A's relay, past its retry_after, ended
            assert fake.original(sent.token) == delivered


async def test_an_edit_discord_rate_limited_is_shown_after_its_retry_after(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    """A 429 on an edit of the answer so far: it is shown once the retry_after has passed,
    while the model still writes (the relay sends it again, after checking the job runs)."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("ask", {"prompt": "why is the sky blue?"})
        await fake.wait_for(lambda: "✍️" in (fake.original(sent.token) or {}).get("content", ""))
        [prediction] = sandbox_server.sandbox.predictions.values()

        fake.rate_limit("PATCH", ORIGINAL, retry_after=1.0)
        faults.pause_after_tokens = 8  # four more tokens: their edit is answered 429
        await fake.wait_for(lambda: len(prediction["output"] or []) == 8)
        eight = "✍️ " + "".join(prediction["output"])
        await fake.wait_for(lambda: (fake.original(sent.token) or {})["content"].endswith(eight))
        assert running(sandbox_server)
        limited = next(c for c in fake.find("PATCH", ORIGINAL) if c.status == 429)
        shown = fake.find("PATCH", ORIGINAL)[-1]
        assert shown.at - limited.at >= 1

        faults.pause_after_tokens = 0
        await conjure.settle()
        content = (fake.original(sent.token) or {})["content"]
        assert "✅ done" in content and content.endswith("\n\n" + the_answer(sandbox_server))
