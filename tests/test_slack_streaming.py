"""Slack: an /ask answer written into its thread while the model writes it, whole at the end.

The real app (slack-bolt) against the fake Slack Web API and the sandbox, whose text runs can
hold after a few tokens (`pause_after_tokens`), so a half-written answer is looked at without
racing the model.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from adapters.slack.streaming import ANSWER_KEY
from bot.sandbox import HttpFault
from storage.models import Delivery
from tests.fakes.slack_api import FakeSlack, Message, serve_fake_slack
from tests.slack_harness import SlackConjure, running_slack_conjure

CHANNEL = "C0GENERAL"
ME = "<@U0ADA>\n"


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Until `check()` is true (a wait, not a timing assertion: the timeout only ends a hang)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def answers(fake: FakeSlack) -> list[Message]:
    """Replies in threads that are not uploads: the answers."""
    return [m for m in fake.messages if m.thread_ts is not None and not m.files]


def the_answer(sandbox_server) -> str:
    [prediction] = sandbox_server.sandbox.predictions.values()
    assert prediction["status"] == "succeeded"
    return "".join(prediction["output"])


def running(sandbox_server) -> bool:
    return all(p["status"] == "processing" for p in sandbox_server.sandbox.predictions.values())


async def delivered(conjure: SlackConjure, sandbox_server) -> bool:
    [prediction_id] = sandbox_server.sandbox.predictions
    job = await conjure.runtime.store.find_by_prediction(prediction_id)
    return job is not None and job.delivery == Delivery.DELIVERED


async def test_an_answer_streams_into_the_thread_before_the_model_is_done_and_ends_whole(
    sandbox_server, database_url: str, caplog
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 4
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "why is the sky blue")
        await eventually(lambda: answers(fake))
        [partial] = answers(fake)
        seen = partial.text
        assert running(sandbox_server)  # the model is still writing
        assert partial.streamed and partial.streaming and seen.startswith(ME + "You")
        [parent] = fake.channel_messages(CHANNEL)
        assert partial.thread_ts == parent.ts and partial.recipient == ("U0ADA", "T0FAKE")

        sandbox_server.sandbox.faults.pause_after_tokens = 0
        await conjure.settle(sandbox_server)
        [answer] = answers(fake)
        assert answer.text == ME + the_answer(sandbox_server) and not answer.streaming
        assert answer.text.startswith(seen)
        assert len(fake.calls_to("chat.postMessage")) == 1  # only the status message
        assert "✅ done" in parent.text
        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.destination[ANSWER_KEY] == answer.ts
        # Each show first read the job's status (is its outcome recorded?) without a hitch.
        assert "could not read its status" not in caplog.text


async def test_without_streaming_methods_one_message_is_edited_about_once_a_second(
    sandbox_server, database_url: str
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 4
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        fake.refuse_streaming = "unknown_method"
        await conjure.slash("/ask", "why is the sky blue")
        await eventually(lambda: answers(fake))
        [partial] = answers(fake)
        assert running(sandbox_server) and partial.text.startswith(ME + "You")
        assert not partial.streamed

        sandbox_server.sandbox.faults.pause_after_tokens = 0
        await conjure.settle(sandbox_server)
        [answer] = answers(fake)
        assert answer.text == ME + the_answer(sandbox_server)
        assert len(fake.calls_to("chat.startStream")) == 1  # refused once, then not asked
        edits = [c.at for c in fake.calls_to("chat.update") if c.args["ts"] == answer.ts]
        live = edits[:-1]  # the last is the delivery's, which waits for nothing
        assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(live))


async def test_a_stream_that_breaks_still_ends_with_the_whole_answer_once(
    sandbox_server, database_url: str
) -> None:
    faults = sandbox_server.sandbox.faults
    faults.cut_streams_after = 2  # dropped after two tokens, and every reconnect refused
    faults.http.append(HttpFault(status=500, count=10, path_prefix="/stream/"))
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        await conjure.slash("/ask", "why is the sky blue")
        await conjure.settle(sandbox_server)
        [answer] = answers(conjure.fake)
        assert answer.text == ME + the_answer(sandbox_server) and not answer.streaming

    faults.reset()
    faults.http.append(HttpFault(status=500, count=10, path_prefix="/stream/"))
    sandbox_server.sandbox.predictions.clear()
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        await conjure.slash("/ask", "why is the sky green")
        await conjure.settle(sandbox_server)
        [answer] = answers(conjure.fake)  # no stream at all: posted at the end, as before
        assert answer.text == ME + the_answer(sandbox_server) and not answer.streamed


async def test_after_a_restart_the_streamed_message_is_finished_not_posted_again(
    sandbox_server, database_url: str
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 4
    async with serve_fake_slack() as fake:
        async with running_slack_conjure(sandbox_server, database_url, fake=fake) as first:
            await first.slash("/ask", "why is the sky blue")
            await eventually(lambda: answers(fake))
        # The first instance is gone mid-answer; a new one polls the prediction and delivers.
        async with running_slack_conjure(sandbox_server, database_url, fake=fake) as second:
            sandbox_server.sandbox.faults.pause_after_tokens = 0
            done = False

            async def check() -> None:
                nonlocal done
                done = await delivered(second, sandbox_server)

            async with asyncio.timeout(10):
                while not done:
                    await check()
                    await asyncio.sleep(0.02)
        [answer] = answers(fake)
        assert answer.text == ME + the_answer(sandbox_server) and not answer.streaming
        assert len(fake.calls_to("chat.postMessage")) == 1  # the status message only


async def test_a_reasoning_models_thinking_is_folded_away_live_and_at_the_end(
    sandbox_server, database_url: str
) -> None:
    sandbox_server.sandbox.faults.pause_after_tokens = 5  # inside <think>...</think>
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "why is the sky blue --model deepseek-r1")
        await eventually(lambda: answers(fake))
        [partial] = answers(fake)
        assert partial.text == ME + "💭 Reasoning…"

        sandbox_server.sandbox.faults.pause_after_tokens = 0
        await conjure.settle(sandbox_server)
        [answer] = answers(fake)
        raw = the_answer(sandbox_server)
        assert raw.startswith("<think>")
        reply = raw.split("</think>")[1].strip()
        assert answer.text.startswith(ME + "💭 Reasoning… (")
        assert answer.text.endswith("words, not shown)\n\n" + reply)
        assert "think" not in answer.text and "I am the sandbox" not in answer.text
