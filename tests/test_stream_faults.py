"""Streamed answers when a Slack call fails in the worst place: after Slack applied it.

The real app (slack-bolt) against the fake Slack Web API and the sandbox. The fake holds a
call (`delays`) longer than the client waits, then applies it anyway: the bot sees a timeout
for a write that landed, as on a slow network. The answer must still end whole, once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from adapters.slack import lifecycle
from bot.replicate.client import Prediction
from storage.models import Delivery, Job
from tests.fakes.slack_api import FakeSlack, serve_fake_slack
from tests.slack_harness import running_slack_conjure
from tests.test_slack_streaming import ME, answers, eventually, running, the_answer

CLIENT_TIMEOUT = 0.5  # seconds the bot's Slack client waits for an answer in these tests
HELD = 1.0  # seconds the fake holds a call before applying it (past CLIENT_TIMEOUT)


async def hold_once(fake: FakeSlack, method: str) -> None:
    """Hold the next call of `method` past the client's timeout; it is applied all the same."""
    before = len(fake.calls_to(method))
    fake.delays[method] = HELD
    await eventually(lambda: len(fake.calls_to(method)) > before)
    del fake.delays[method]


async def one_whole_answer(conjure: Any, sandbox_server: Any, fake: FakeSlack) -> None:
    """The model let write on to its end: the thread holds one answer, all of it, finished."""
    sandbox_server.sandbox.faults.pause_after_tokens = 0
    await conjure.settle(sandbox_server)
    [answer] = answers(fake)
    assert answer.text == ME + the_answer(sandbox_server) and not answer.streaming


async def the_run_ended(instance: Any, sandbox_server: Any) -> tuple[Job, Prediction]:
    """The model let write on to its end; its job and final prediction as `instance` reads them
    (whose webhook it is: the caller applies it)."""
    sandbox_server.sandbox.faults.pause_after_tokens = 0
    [prediction_id] = sandbox_server.sandbox.predictions
    await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 10)
    final = await instance.runtime.replicate.get_prediction(prediction_id)
    job = await instance.runtime.store.find_by_prediction(prediction_id)
    assert job is not None
    return job, final


async def test_an_append_that_timed_out_after_slack_applied_it_is_not_written_twice(
    sandbox_server, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "WEB_API_TIMEOUT", CLIENT_TIMEOUT)
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "why is the sky blue")
        await eventually(lambda: answers(fake))
        [message] = answers(fake)
        started = message.text

        held = asyncio.create_task(hold_once(fake, "chat.appendStream"))
        faults.pause_after_tokens = 8  # four more tokens: one append, which times out
        await held
        await eventually(lambda: message.text != started)  # ... and Slack applied it
        await asyncio.sleep(HELD)  # the bot's relay has seen its timeout by now

        await one_whole_answer(conjure, sandbox_server, fake)


async def test_a_stream_slack_expired_while_quiet_still_ends_with_the_whole_answer(
    sandbox_server, database_url: str
) -> None:
    """Slack ends a streaming message's streaming state when nothing is appended for a while
    (a reasoning model thinking for minutes shows one unchanging line): appends and the final
    chat.stopStream then answer `message_not_in_streaming_state`."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "why is the sky blue")
        await eventually(lambda: answers(fake))
        [message] = answers(fake)
        message.streaming = False  # Slack stopped it on its own
        started = message.text

        faults.pause_after_tokens = 8  # more text: shown all the same, by an edit
        await eventually(lambda: message.text != started)
        assert message.text.startswith(started) and running(sandbox_server)

        faults.pause_after_tokens = 0
        await conjure.settle(sandbox_server)
        [answer] = answers(fake)
        assert answer.text == ME + the_answer(sandbox_server)
        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.delivery == Delivery.DELIVERED


async def test_a_stream_cut_before_done_is_read_on_from_its_last_event(
    sandbox_server, database_url: str
) -> None:
    """A connection that ends before `done` (a proxy or the server closing it) is opened again
    after its last event id, as an EventSource does: the answer keeps showing as it is written."""
    faults = sandbox_server.sandbox.faults
    faults.cut_streams_after = 2  # every connection ends after two events
    faults.pause_after_tokens = 6
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "why is the sky blue")
        await eventually(lambda: sandbox_server.sandbox.predictions)
        [prediction] = sandbox_server.sandbox.predictions.values()
        await eventually(lambda: len(prediction["output"] or []) == 6)
        six = ME + "".join(prediction["output"])
        await eventually(lambda: [m.text for m in answers(fake)] == [six])
        assert running(sandbox_server)

        await one_whole_answer(conjure, sandbox_server, fake)


async def test_an_append_slack_delays_past_another_instances_delivery_leaves_the_answer_whole(
    sandbox_server, database_url: str
) -> None:
    """Instance A streams the answer; the outcome reaches instance B (a load balancer), whose
    delivery stops the stream and writes the whole answer while A's append waits out a 429.
    Sent again after it, that append finds the stream stopped: A must not then edit its partial
    text over the answer B wrote (A checked before the append that the job still ran, not
    since)."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    faults.drop_webhooks = 1_000_000  # the outcome below goes to instance B, as the test says
    async with serve_fake_slack() as fake:
        async with (
            running_slack_conjure(sandbox_server, database_url, fake=fake) as first,
            running_slack_conjure(sandbox_server, database_url, fake=fake) as second,
        ):
            await first.slash("/ask", "why is the sky blue")
            await eventually(lambda: answers(fake))
            [message] = answers(fake)

            fake.rate_limit("chat.appendStream", retry_after=1)
            before = len(fake.calls_to("chat.appendStream"))
            faults.pause_after_tokens = 8  # four more tokens: A appends them, Slack says 429
            await eventually(lambda: len(fake.calls_to("chat.appendStream")) > before)
            # While A waits out its Retry-After, the run ends; its webhook goes to B.
            job, final = await the_run_ended(second, sandbox_server)
            await second.service.apply_prediction(job.id, final)
            await second.service.wait_idle()
            whole = ME + the_answer(sandbox_server)
            assert message.text == whole and not message.streaming  # B delivered it

            await first.service.wait_idle()  # A's relay, past its Retry-After, has ended
            assert answers(fake) == [message]
            assert message.text == whole
            delivered = await second.runtime.store.get(job.id)
            assert delivered is not None and delivered.delivery == Delivery.DELIVERED


class AnswerDropper:
    """A loopback TCP relay in front of the fake Slack that, armed with a Web API method, passes
    that method's next request on and then closes the connection instead of passing on Slack's
    answer: a write Slack applied whose answer the bot never gets (a reset, a proxy's idle
    cut). `api_url` is the Web API through the relay."""

    def __init__(self, fake: FakeSlack) -> None:
        target = urlsplit(fake.url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.armed: bytes | None = None
        self.dropped = 0
        self.api_url = ""

    def arm(self, method: str) -> None:
        self.armed = f"POST /api/{method} ".encode()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        dropping = asyncio.Event()

        async def requests() -> None:
            with contextlib.suppress(OSError):
                while data := await client_r.read(65536):
                    if self.armed is not None and data.startswith(self.armed):
                        self.armed = None
                        dropping.set()
                    server_w.write(data)
                    await server_w.drain()
            server_w.close()

        async def answers() -> None:
            with contextlib.suppress(OSError):
                while data := await server_r.read(65536):
                    if dropping.is_set():  # Slack has answered, so it has applied the call
                        self.dropped += 1
                        break
                    client_w.write(data)
                    await client_w.drain()
            client_w.close()
            server_w.close()

        await asyncio.gather(requests(), answers())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AnswerDropper]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.api_url = f"http://127.0.0.1:{port}/api/"
        try:
            yield self
        finally:
            server.close()


async def test_an_append_whose_answer_was_lost_after_slack_applied_it_is_not_written_twice(
    sandbox_server, database_url: str
) -> None:
    """The connection drops after Slack applied an append, before its answer: the append is
    not sent again (slack_sdk would, for a dropped connection), which would write its text
    twice in the answer, for good (the end of the answer is appended after it)."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    async with serve_fake_slack() as fake, AnswerDropper(fake).running() as dropper:
        async with running_slack_conjure(
            sandbox_server, database_url, fake=fake, slack_api_url=dropper.api_url
        ) as conjure:
            await conjure.slash("/ask", "why is the sky blue")
            await eventually(lambda: answers(fake))
            [message] = answers(fake)
            started = message.text

            dropper.arm("chat.appendStream")
            faults.pause_after_tokens = 8  # four more tokens: one append, its answer lost
            await eventually(lambda: dropper.dropped == 1)
            assert message.text != started  # Slack applied it

            await one_whole_answer(conjure, sandbox_server, fake)


async def test_an_edit_slack_delays_past_another_instances_delivery_leaves_the_answer_whole(
    sandbox_server, database_url: str
) -> None:
    """As above, where the workspace refuses streaming messages and the answer is one message
    edited: A's edit of the text so far, held by a 429 past B's delivery, must not be sent
    again over the whole answer B wrote (A checked before it that the job still ran)."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    faults.drop_webhooks = 1_000_000  # the outcome below goes to instance B, as the test says
    async with serve_fake_slack() as fake:
        fake.refuse_streaming = "unknown_method"
        async with (
            running_slack_conjure(sandbox_server, database_url, fake=fake) as first,
            running_slack_conjure(sandbox_server, database_url, fake=fake) as second,
        ):
            await first.slash("/ask", "why is the sky blue")
            await eventually(lambda: answers(fake))
            [message] = answers(fake)
            [parent] = fake.channel_messages("C0GENERAL")
            await eventually(lambda: "starting" in parent.text)  # A's last status edit

            fake.rate_limit("chat.update", retry_after=1)
            faults.pause_after_tokens = 8  # four more tokens: A edits, Slack says 429
            await eventually(lambda: any(c.status == 429 for c in fake.calls_to("chat.update")))
            # While A waits out its Retry-After, the run ends; its webhook goes to B.
            job, final = await the_run_ended(second, sandbox_server)
            await second.service.apply_prediction(job.id, final)
            await second.service.wait_idle()
            whole = ME + the_answer(sandbox_server)
            assert message.text == whole  # B delivered it

            await first.service.wait_idle()  # A's relay, past its Retry-After, has ended
            assert answers(fake) == [message]
            assert message.text == whole


async def test_an_append_slack_rate_limited_is_shown_after_its_retry_after(
    sandbox_server, database_url: str
) -> None:
    """A 429 on an append: the text so far is shown once Slack's Retry-After has passed, while
    the model still writes (the relay sends it again, after checking the job still runs)."""
    faults = sandbox_server.sandbox.faults
    faults.pause_after_tokens = 4
    async with running_slack_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.fake
        await conjure.slash("/ask", "why is the sky blue")
        await eventually(lambda: answers(fake))
        [message] = answers(fake)
        [prediction] = sandbox_server.sandbox.predictions.values()

        fake.rate_limit("chat.appendStream", retry_after=1)
        faults.pause_after_tokens = 8  # four more tokens: their append is answered 429
        await eventually(lambda: len(prediction["output"] or []) == 8)
        eight = ME + "".join(prediction["output"])
        await eventually(lambda: message.text == eight)
        assert running(sandbox_server) and message.streaming
        [limited, shown] = fake.calls_to("chat.appendStream")
        assert limited.status == 429 and shown.at - limited.at >= 1

        await one_whole_answer(conjure, sandbox_server, fake)
