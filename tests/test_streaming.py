"""bot.reasoning (the <think> fold) and bot.streaming's relay, against the real sandbox."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from bot.adapter import Checkpoint
from bot.reasoning import THINKING, folded, live
from bot.replicate.client import ReplicateClient
from bot.sandbox import HttpFault
from bot.streaming import StillRunning, StreamRelay
from storage.models import Job
from tests.sandbox_fixtures import SandboxServer


def test_plain_text_is_shown_as_it_is():
    assert live("Hello there") == folded("Hello there") == "Hello there"


def test_the_reasoning_is_folded_into_one_line_live_and_at_the_end():
    assert live("<thi") == ""  # may be opening <think>: nothing shown yet
    assert live("<think>\nLet me see") == THINKING
    done = "<think>\nLet me see this.\n</think>\n\nThe answer."
    assert folded(done) == f"{THINKING} (4 words, not shown)\n\nThe answer."
    # Every live text is a prefix of the next and of the final one (appending is enough).
    steps = [live(done[:i]) for i in range(len(done) + 1)]
    shown = [text for text in steps if text]
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown))
    assert folded(done).startswith(shown[-1])
    assert folded("<think>never done") == f"{THINKING} (stopped before it answered)"


class Recorder:
    """A stand-in adapter that records what it is shown."""

    platform = "test"
    streams_text = True
    stream_interval = 0.0

    def __init__(self) -> None:
        self.shown: list[str] = []

    async def show_partial(self, job: Job, text: str, checkpoint: Checkpoint) -> None:
        if not self.shown:
            await checkpoint({"message": "m1"})
        self.shown.append(text)


@pytest.fixture
async def client(sandbox_server: SandboxServer) -> AsyncIterator[ReplicateClient]:
    """A client of the sandbox, closed after the test (its session was left to the collector,
    which logged "Unclosed client session" at the end of the run)."""
    client = ReplicateClient(sandbox_server.url, sandbox_server.token)
    yield client
    await client.aclose()


async def relay_of(
    client: ReplicateClient, prompt: str, still_running: StillRunning | None = None
) -> tuple[StreamRelay, Recorder]:
    prediction = await client.create_prediction(
        model="meta/meta-llama-3-8b-instruct", input={"prompt": prompt}
    )
    recorded: list[Mapping[str, Any]] = []

    async def checkpoint(fields: Mapping[str, Any]) -> None:
        recorded.append(fields)

    adapter = Recorder()
    job = Job(id="j1", platform="test", workspace="w", channel="c", user_id="u", command="ask")
    url = (prediction.urls or {})["stream"]
    relay = StreamRelay(
        adapter,  # type: ignore[arg-type]
        job,
        url,
        client.stream,
        checkpoint,
        still_running,
    )
    return relay, adapter


async def test_the_relay_shows_the_text_as_it_grows_and_records_the_message(
    sandbox_server: SandboxServer,
    client: ReplicateClient,
):
    relay, adapter = await relay_of(client, "why")
    await asyncio.wait_for(relay.run(), 10)
    [prediction] = sandbox_server.sandbox.predictions.values()
    # Shown as it grew; after `done` the delivery (not the relay) writes the whole answer.
    assert adapter.shown and "".join(prediction["output"]).startswith(adapter.shown[-1])
    assert all(b.startswith(a) for a, b in itertools.pairwise(adapter.shown))
    assert relay.recorded == {"message": "m1"}


async def test_a_closed_relay_shows_nothing_more(
    sandbox_server: SandboxServer, client: ReplicateClient
):
    sandbox_server.sandbox.faults.pause_after_tokens = 3
    relay, adapter = await relay_of(client, "why")
    relay.start(asyncio.create_task)
    async with asyncio.timeout(10):
        while not adapter.shown:
            await asyncio.sleep(0.01)
    await relay.close()
    count = len(adapter.shown)
    sandbox_server.sandbox.faults.pause_after_tokens = 0
    await sandbox_server.sandbox.wait_idle()
    assert len(adapter.shown) == count


async def test_a_stream_that_cannot_be_read_ends_the_relay_quietly(
    sandbox_server: SandboxServer, client: ReplicateClient
):
    sandbox_server.sandbox.faults.http.append(
        HttpFault(status=500, count=10, path_prefix="/stream/")
    )
    relay, adapter = await relay_of(client, "why")
    await asyncio.wait_for(relay.run(), 10)
    assert adapter.shown == []


async def test_no_show_once_the_outcome_is_recorded_elsewhere(
    sandbox_server: SandboxServer, client: ReplicateClient
):
    """Another instance took the webhook and delivers the whole answer: this one's relay (which
    nothing there closes) shows nothing after it, though the stream goes on."""
    sandbox_server.sandbox.faults.pause_after_tokens = 3
    running = True

    async def still_running() -> bool:
        return running

    relay, adapter = await relay_of(client, "why", still_running)
    relay.start(asyncio.create_task)
    async with asyncio.timeout(10):
        while not adapter.shown:
            await asyncio.sleep(0.01)
    running = False  # the outcome is recorded (by another instance)
    count = len(adapter.shown)
    sandbox_server.sandbox.faults.pause_after_tokens = 0
    await sandbox_server.sandbox.wait_idle()
    async with asyncio.timeout(10):
        while not relay.done:
            await asyncio.sleep(0.01)
    assert len(adapter.shown) == count
