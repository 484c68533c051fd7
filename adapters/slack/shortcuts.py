"""Message shortcuts: a file in a Slack message, given to a command (slash commands carry none).

"Vary with Conjure" runs /imagine with the message's image (image to image, the message's text
as the prompt), "Ask Conjure about this image" runs /ask with it (the text as the question),
"Transcribe with Conjure" runs /transcribe with the message's audio file. Slack wants its ack
within 3 s: it is sent at once; the command then runs in the background as any other does, so
its type and size checks, quotas and confirmations are the same. The file is read with the bot
token (scope `files:read`), sent only to Slack's hosts (bot.commands.files). The job's messages
go in the thread of the message with the file; a refusal goes to the person alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import markup
from adapters.slack.files import SLACK_FILE_HOSTS
from adapters.slack.questions import reply_blocks
from adapters.slack.reach import SLACK_ERRORS, respond
from bot.adapter import CommandRequest, Reply
from bot.catalog import Catalog, OptionSpec
from bot.catalog.files import base_type, names
from bot.commands.handler import Commands
from bot.inputs import NOUNS, InputFile

log = logging.getLogger(__name__)

PLATFORM = "slack"


@dataclass(frozen=True)
class Shortcut:
    """One message shortcut: the command it runs, the file option the message's file fills, and
    what the prompt is (the message's text, else `default`; `text=False`: nothing typed)."""

    callback_id: str
    name: str
    description: str
    command: str
    option: str
    default: str = ""
    text: bool = True


SHORTCUTS = (
    Shortcut(
        "conjure_vary",
        "Vary with Conjure",
        "Make a new image from this message's image (its text is the prompt)",
        "imagine",
        "image",
        default="a variation",
    ),
    Shortcut(
        "conjure_ask_image",
        "Ask Conjure about this image",
        "Ask about this message's image (its text is the question)",
        "ask",
        "image",
        default="Describe this image.",
    ),
    Shortcut(
        "conjure_transcribe",
        "Transcribe with Conjure",
        "Transcribe this message's audio file",
        "transcribe",
        "file",
        text=False,
    ),
)


def enabled_shortcuts(catalog: Catalog) -> list[Shortcut]:
    """The shortcuts whose command (with its file option) the catalog has."""
    found = []
    for shortcut in SHORTCUTS:
        spec = catalog.command(shortcut.command)
        option = spec.option(shortcut.option) if spec is not None else None
        if option is not None and option.is_file:
            found.append(shortcut)
    return found


class ShortcutListener:
    """bolt's handler for Conjure's message shortcuts."""

    def __init__(self, commands: Commands, client: AsyncWebClient) -> None:
        self.commands = commands
        self.client = client
        # The bot token goes only to Slack's hosts (or the Web API's, where it is a test's fake).
        api = client.base_url.split("//", 1)[-1].split("/", 1)[0].lower()
        self.hosts = (*SLACK_FILE_HOSTS, api)

    def register(self, app: AsyncApp) -> None:
        for shortcut in enabled_shortcuts(self.commands.service.catalog):
            app.shortcut(shortcut.callback_id)(self.handle)

    async def handle(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """Ack at once (Slack's 3 s), then run the command in the background."""
        await ack()
        shortcut = next((s for s in SHORTCUTS if s.callback_id == body.get("callback_id")), None)
        if shortcut is None or body.get("type") != "message_action":
            return
        self.commands.service.spawn(self._run(shortcut, body))

    async def _run(self, shortcut: Shortcut, body: dict[str, Any]) -> None:
        spec = self.commands.service.catalog.command(shortcut.command)
        option = spec.option(shortcut.option) if spec is not None else None
        if spec is None or option is None:
            return
        message = body.get("message") or {}
        file = self._file(option, message.get("files") or [])
        if file is None:
            wanted = f"{NOUNS.get(option.type, 'file')} ({names(option.accept)})"
            await self._tell(body, f"“{shortcut.name}” works on a message with an {wanted}.")
            return
        reply = await self.commands.handle(shortcut_request(shortcut, body, option.name, file))
        if reply.text is not None:
            text = markup.render(reply.text)
            await self._tell(body, text, reply)

    def _file(self, option: OptionSpec, files: list[Any]) -> InputFile | None:
        """The message's first file of a type the option takes, else its first file (the core
        names what is wrong with it), else None."""
        usable = [f for f in files if isinstance(f, dict) and f.get("url_private_download")]
        fitting = [f for f in usable if base_type(str(f.get("mimetype") or "")) in option.accept]
        chosen = (fitting or usable or [None])[0]
        if chosen is None:
            return None
        size = chosen.get("size")
        return InputFile(
            url=str(chosen["url_private_download"]),
            content_type=str(chosen.get("mimetype") or ""),
            size=size if isinstance(size, int) else None,
            filename=str(chosen.get("name") or chosen.get("id") or "file"),
            hosts=self.hosts,
            headers={"Authorization": f"Bearer {self.client.token or ''}"},
        )

    async def _tell(self, body: dict[str, Any], text: str, reply: Reply | None = None) -> None:
        """To the person who used the shortcut only: its response_url, else an ephemeral."""
        blocks = reply_blocks(text, reply.buttons) if reply and reply.buttons else None
        if await respond(body.get("response_url"), text, in_channel=False, blocks=blocks):
            return
        where = _where(body)
        try:
            await self.client.chat_postEphemeral(
                channel=where["channel"], user=where["user"], text=text, blocks=blocks
            )
        except SLACK_ERRORS as exc:
            log.warning("could not answer a shortcut privately (%s)", type(exc).__name__)


def _where(body: Mapping[str, Any]) -> dict[str, str]:
    channel = str((body.get("channel") or {}).get("id") or "")
    user = str((body.get("user") or {}).get("id") or "")
    return {"channel": channel, "user": user}


def shortcut_request(
    shortcut: Shortcut, body: dict[str, Any], option: str, file: InputFile
) -> CommandRequest:
    """The command a shortcut runs: its file as the option, the message's text as the prompt,
    its messages in the thread of the message with the file (its root, if that is a reply)."""
    message = body.get("message") or {}
    where = _where(body)
    user = body.get("user") or {}
    team = body.get("team") or {}
    text = markup.unescape(str(message.get("text") or "")).strip() if shortcut.text else ""
    root = message.get("thread_ts") or message.get("ts")
    destination: dict[str, Any] = {"response_url": body.get("response_url"), **where}
    if root:
        destination["thread_ts"] = str(root)
    trigger_id = body.get("trigger_id")  # the same on Slack's retries of this shortcut
    return CommandRequest(
        platform=PLATFORM,
        workspace=str(team.get("id") or user.get("team_id") or ""),
        channel=where["channel"],
        user_id=where["user"],
        user_name=user.get("username") or user.get("name"),
        command=shortcut.command,
        text=text or shortcut.default,
        options={option: file},
        destination=destination,
        request_key=f"{PLATFORM}:{trigger_id}" if trigger_id else None,
    )
