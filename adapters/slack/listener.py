"""Slash commands: acknowledge within Slack's 3 seconds, then run the job in the background.

Parsing is pure, so it runs before the ack and bad input is answered in the ack itself, with
nothing created. Everything that touches the database or the network happens after `ack()`, in a
task the job service tracks (bolt's own background task is fire-and-forget), so failures are
logged and shutdown can wait for or cancel it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck

from adapters.slack import markup as say
from adapters.slack.adapter import PLATFORM
from adapters.slack.reach import respond
from bot.adapter import CommandRequest
from bot.commands.conjure import run_conjure_command
from bot.commands.parsing import Invocation, UsageError
from bot.jobs import CommandRefused, JobService

log = logging.getLogger(__name__)

CONJURE = "conjure"
CONJURE_ACK_BUDGET = 1.5  # seconds a /conjure answer may take to ride in the ack itself


class SlashCommands:
    """The one bolt listener for every command: catalog commands and /conjure."""

    def __init__(self, service: JobService, *, conjure_ack_budget: float | None = None) -> None:
        self.service = service
        self.conjure_ack_budget = (
            CONJURE_ACK_BUDGET if conjure_ack_budget is None else conjure_ack_budget
        )

    async def handle(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """Bad input is answered in the ack; a good command is acked, then submitted."""
        request = _request(command)
        if request.command == CONJURE:
            await self._conjure(ack, request)
            return
        try:
            invocation = self.service.parse(request.command, request.text)
        except UsageError as exc:
            await ack(response_type="ephemeral", text=say.usage_answer(exc))
            return
        await ack()
        self.service.spawn(self._submit(request, invocation))

    async def _submit(self, request: CommandRequest, invocation: Invocation) -> None:
        response_url = request.destination.get("response_url")
        try:
            await self.service.submit(request, invocation)
        except CommandRefused as exc:
            await respond(response_url, say.escape_keeping_mentions(str(exc)), in_channel=False)
        except Exception:
            log.exception("could not start /%s for %s", request.command, request.user_id)
            await respond(response_url, say.INTERNAL_ERROR, in_channel=False)

    async def _conjure(self, ack: AsyncAck, request: CommandRequest) -> None:
        """Answer in the ack when the answer is quick; otherwise ack now, answer via response_url.

        `/conjure usage`, `quota` and `report` read or write the database: a slow database must
        never cost Slack's 3-second deadline.
        """
        answer = self.service.spawn(run_conjure_command(self.service, request))
        await asyncio.wait({answer}, timeout=self.conjure_ack_budget)
        if answer.done():
            await ack(response_type="ephemeral", text=_answer_text(answer))
            return
        await ack()
        self.service.spawn(self._answer_later(answer, request.destination.get("response_url")))

    async def _answer_later(self, answer: asyncio.Task[str], response_url: str | None) -> None:
        await asyncio.wait({answer})
        await respond(response_url, _answer_text(answer), in_channel=False)


def _answer_text(answer: asyncio.Task[str]) -> str:
    if answer.cancelled() or answer.exception() is not None:
        return say.CONJURE_FAILED  # the job service has logged the exception
    return say.escape_keeping_mentions(answer.result())


def _request(command: dict[str, Any]) -> CommandRequest:
    """A CommandRequest from a slash command payload, its text unescaped to what was typed."""
    user_id = str(command.get("user_id", ""))
    channel = str(command.get("channel_id", ""))
    return CommandRequest(
        platform=PLATFORM,
        workspace=str(command.get("team_id", "")),
        channel=channel,
        user_id=user_id,
        user_name=command.get("user_name"),
        command=str(command.get("command", "")).strip().lstrip("/").lower(),
        text=say.unescape(str(command.get("text") or "")),
        destination={
            "response_url": command.get("response_url"),
            "channel": channel,
            "user": user_id,
        },
    )
