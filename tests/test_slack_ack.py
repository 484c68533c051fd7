"""The Slack ack of a job command goes in the turn of the event loop its listener runs in.

On a busy loop every turn waits behind all the callbacks ready before it (the bench measured
18-27 ms a turn under load), so each turn between a command and its ack is time a person's
command waits. The job is recorded first (a crash after the ack must not lose it); with SQLite
the recording never suspends, so it fits in the listener's own turn (bot.eager).
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck

from adapters.slack.listener import SlashCommandListener
from tests.slack_harness import SlackConjure, command_fields, running_slack_conjure


class TurnCounter:
    """Counts the event loop's turns: one callback that schedules itself for the next."""

    def __init__(self) -> None:
        self.turns = 0
        self._running = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.turns += 1
        if self._running:
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._running = False


class RecordingAck(AsyncAck):
    """bolt's ack, noting the turn it was called in and whether the job was recorded by then."""

    def __init__(self, counter: TurnCounter, recorded: Any) -> None:
        super().__init__()
        self.counter = counter
        self.recorded = recorded
        self.turn: int | None = None
        self.job_recorded_first: bool | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.turn = self.counter.turns
        self.job_recorded_first = await self.recorded()
        return await super().__call__(*args, **kwargs)


async def slash_through_the_listener(conjure: SlackConjure, text: str) -> tuple[RecordingAck, int]:
    """Run `/imagine text` through Conjure's listener with a turn counter going: bolt's ack as
    the listener left it, and how many turns after the listener started the ack was sent."""
    listener = SlashCommandListener(conjure.runtime.commands)
    command = command_fields(conjure.fake, "/imagine", text)
    key = f"slack:{command['trigger_id']}"
    counter = TurnCounter()
    await asyncio.sleep(0)
    ack = RecordingAck(counter, lambda: conjure.runtime.store.has_request(key))
    started = counter.turns
    await listener.handle(ack, command)
    counter.stop()
    assert ack.turn is not None
    return ack, ack.turn - started


async def test_a_job_command_is_acked_in_its_listeners_turn_with_its_job_recorded(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        ack, turns = await slash_through_the_listener(conjure, "a red fox in the snow")

        assert turns == 0  # not two turns later, as a plain task took
        assert ack.job_recorded_first is True
        assert ack.response is not None and ack.response.status == 200
        assert ack.response.body == ""  # a bare ack: the job speaks in the channel

        await conjure.settle(sandbox_server)
        [parent] = conjure.fake.channel_messages("C0GENERAL")
        assert "✅ done in " in parent.text
        assert len(conjure.fake.shared_uploads()) == 1


async def test_bad_input_is_answered_in_the_ack_in_the_same_turn(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        ack, turns = await slash_through_the_listener(conjure, "")

        assert turns == 0
        assert ack.job_recorded_first is False
        assert ack.response is not None and "prompt" in ack.response.body.lower()
        assert await conjure.runtime.store.count() == 0
