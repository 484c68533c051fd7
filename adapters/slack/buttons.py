"""Follow-up buttons in Slack: Block Kit on a job's status message, and bolt's handler for a press.

A button's `action_id` and `value` are the core's custom id (`conjure:<action>:<job>:<n>`),
nothing else: the press is turned into a `bot.followups.service.Press` and everything else comes
from the database, so a press works after a restart and on any instance. Slack wants its ack
within 3 s: it is sent at once, before the database is read; what the core says back to the
person who pressed goes to them privately (the press's response_url, else chat.postEphemeral).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import markup
from adapters.slack.blocks import SECTION_TEXT_LIMIT, button_element, clip
from adapters.slack.files import SlackFiles
from adapters.slack.questions import reply_blocks, settle_question
from adapters.slack.reach import SLACK_ERRORS, respond
from bot.adapter import Reply, no_acknowledgement
from bot.catalog import Catalog
from bot.followups.buttons import PREFIX, job_buttons
from bot.followups.service import Followups, Press
from storage.models import Job

log = logging.getLogger(__name__)

PLATFORM = "slack"
ACTION_IDS = re.compile(rf"^{PREFIX}:")
BLOCK_ID = "conjure_buttons_{row}"  # unique within the message: one actions block per row


def status_blocks(job: Job, catalog: Catalog) -> list[dict[str, Any]]:
    """The status message as Block Kit: the status text (its prompt cut to fit a section),
    then a row of buttons per kind (Cancel while the job may run; Re-roll, U1..Un, V1..Vn once
    it succeeded; none else). Always the full set, so chat.update replaces buttons that no
    longer apply."""
    text = markup.announcement(job, SECTION_TEXT_LIMIT)
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(text)},
        }
    ]
    for row, buttons in enumerate(job_buttons(catalog, job)):
        elements = [button_element(button) for button in buttons]
        block_id = BLOCK_ID.format(row=row)
        blocks.append({"type": "actions", "block_id": block_id, "elements": elements})
    return blocks


class ButtonListener:
    """bolt's handler for every Conjure button (`action_id` starting `conjure:`)."""

    def __init__(self, followups: Followups, client: AsyncWebClient, files: SlackFiles) -> None:
        self.followups = followups
        self.client = client
        self.files = files

    def register(self, app: AsyncApp) -> None:
        app.action(ACTION_IDS)(self.handle)

    async def handle(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Ack at once (Slack's 3 s), then press the button in the background."""
        await ack()
        press = press_from(body, self.files.output)
        if press is None:
            log.warning("Slack button press without a usable action; ignored")
            return
        self.followups.service.spawn(self._press(press, body))

    async def _press(self, press: Press, body: dict[str, Any]) -> None:
        reply = await self.followups.press(press, no_acknowledgement)
        if await settle_question(press.custom_id, body, reply):
            return  # the price question now says what happened (adapters.slack.questions)
        if reply.text is not None:
            await self._tell(press, body, reply)

    async def _tell(self, press: Press, body: dict[str, Any], reply: Reply) -> None:
        """The core's answer, only for the person who pressed."""
        assert reply.text is not None
        text = markup.render(reply.text)
        blocks = reply_blocks(text, reply.buttons) if reply.buttons else None  # a price question
        response_url = body.get("response_url")
        if await respond(
            response_url, text, in_channel=False, replace_original=False, blocks=blocks
        ):
            return
        try:
            await self.client.chat_postEphemeral(
                channel=press.channel,
                user=press.user_id,
                text=text,
                thread_ts=press.destination.get("thread_ts"),
            )
        except SLACK_ERRORS as exc:
            log.warning("could not answer a button press privately (%s)", type(exc).__name__)


def press_from(body: dict[str, Any], source: Any = None) -> Press | None:
    """A Press from a `block_actions` payload: who (user id, team), where (the channel, and the
    thread the pressed message belongs to, where a new job's messages go), which button."""
    actions = body.get("actions") or []
    if not actions or not isinstance(actions[0], dict):
        return None
    action = actions[0]
    custom_id = str(action.get("value") or action.get("action_id") or "")
    user = body.get("user") or {}
    team = body.get("team") or {}
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
    user_id = str(user.get("id") or "")
    workspace = str(team.get("id") or user.get("team_id") or "")
    if not (custom_id and channel and user_id and workspace):
        return None
    # The thread root: a reply (a follow-up's own status) names it; a root is its own. A
    # private message (the price question) is no thread root: only a thread it is in counts.
    if container.get("is_ephemeral"):
        root = container.get("thread_ts")
    else:
        root = (
            message.get("thread_ts")
            or container.get("thread_ts")
            or container.get("message_ts")
            or message.get("ts")
        )
    destination: dict[str, Any] = {
        "response_url": body.get("response_url"),
        "channel": channel,
        "user": user_id,
    }
    if root:
        destination["thread_ts"] = str(root)
    return Press(
        platform=PLATFORM,
        workspace=workspace,
        channel=channel,
        user_id=user_id,
        custom_id=custom_id,
        user_name=user.get("username") or user.get("name"),
        destination=destination,
        source=source,
    )
