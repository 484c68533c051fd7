"""The bolt listener for every slash command: a Slack payload in, the core's Reply out.

Slack gives 3 seconds. The core's `handle` runs in a task the job service tracks; the listener
acks as soon as the core acknowledges (a valid job command, once its job is recorded) or
answers (bad input, a limit reached, a quick `/conjure`), whichever comes first, and at the
latest after CONJURE_ACK_BUDGET. A reply that comes after the ack goes through the command's
response_url.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from adapters.slack import markup
from adapters.slack.questions import reply_blocks
from adapters.slack.reach import respond
from bot.adapter import CommandRequest, Reply
from bot.commands.handler import Commands

log = logging.getLogger(__name__)

PLATFORM = "slack"
CONJURE_ACK_BUDGET = 1.5  # seconds an answer may take to ride in the ack itself


class SlashCommandListener:
    """Turns a slash command payload into a CommandRequest and the Reply into Slack answers."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    def register(self, app: AsyncApp) -> None:
        app.command(re.compile(r"^/.+"))(self.handle)

    async def handle(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """Ack within Slack's deadline, with the answer when it is ready by then."""
        request = command_request(command)
        # One future, resolved by whichever comes first: the core's acknowledgement or its
        # reply. Awaited directly, it wakes this task in one turn of the event loop; an Event
        # waited on in a task of its own, under asyncio.wait, took three, each behind every
        # callback ready on a busy loop.
        ready = asyncio.get_running_loop().create_future()
        acknowledged = False

        def settle(_: object = None) -> None:
            if not ready.done():
                ready.set_result(None)

        async def acknowledge() -> None:
            nonlocal acknowledged
            acknowledged = True
            settle()

        service = self.commands.service
        # Started eagerly (bot.eager): the job is recorded, and its status message sent, in
        # this turn of the event loop, so the ack usually goes in it too, not two turns later
        # on a busy loop. (A yield after the acknowledgement, to ack before the status message
        # is sent, measured no better in the bench: it only put each job's next step a turn
        # later, behind a burst's whole recording.)
        reply = service.spawn(self.commands.handle(request, acknowledge), eager=True)
        reply.add_done_callback(settle)
        if reply.done():
            settle()  # answered in this turn (bad input, a limit): no turn to wait for it
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONJURE_ACK_BUDGET):
                await ready
        if reply.done() and not acknowledged:
            answer = _answer(reply)
            if answer:
                await ack(response_type="ephemeral", text=answer, blocks=_blocks(reply, answer))
            else:
                await ack()  # a copy of a command already taken: nothing to say
            return
        await ack()
        service.spawn(self._answer_later(reply, request.destination.get("response_url")))

    async def _answer_later(self, reply: asyncio.Future[Reply], response_url: str | None) -> None:
        await asyncio.wait({reply})
        if reply.cancelled() or reply.result().text is not None:
            answer = _answer(reply)
            await respond(response_url, answer, in_channel=False, blocks=_blocks(reply, answer))


def _answer(reply: asyncio.Future[Reply]) -> str:
    if reply.cancelled():
        return markup.CONJURE_FAILED
    text = reply.result().text
    return markup.render(text) if text is not None else ""


def _blocks(reply: asyncio.Future[Reply], answer: str) -> list[dict[str, Any]] | None:
    """The answer's buttons (the price question's Run it and Cancel) as Block Kit, if any."""
    if reply.cancelled() or not reply.result().buttons:
        return None
    return reply_blocks(answer, reply.result().buttons)


def command_request(command: dict[str, Any]) -> CommandRequest:
    """A CommandRequest from a slash command payload, its text unescaped to what was typed."""
    user_id = str(command.get("user_id", ""))
    channel = str(command.get("channel_id", ""))
    trigger_id = command.get("trigger_id")  # the same on Slack's retries of this command
    return CommandRequest(
        platform=PLATFORM,
        workspace=str(command.get("team_id", "")),
        channel=channel,
        user_id=user_id,
        user_name=command.get("user_name"),
        command=str(command.get("command", "")).strip().lstrip("/").lower(),
        text=markup.unescape(str(command.get("text") or "")),
        destination={
            "response_url": command.get("response_url"),
            "channel": channel,
            "user": user_id,
        },
        request_key=f"{PLATFORM}:{trigger_id}" if trigger_id else None,
    )
