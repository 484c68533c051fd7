"""Discord attachment options, on their way into the core as InputFiles.

Discord's attachment links are signed CDN URLs that need no token, so none is sent; they are
read only from Discord's CDN hosts (plus a loopback fake's host when DISCORD_API_URL points at
one, as in tests), so a payload cannot make Conjure fetch from anywhere else.
"""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import urlsplit

import discord

from bot.inputs import InputFile

DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
DISCORD_API_HOST = "discord.com"


def attachment_hosts(api_url: str) -> tuple[str, ...]:
    """Where attachments may be read from: Discord's CDN, or the fake Discord's own address."""
    parts = urlsplit(api_url)
    if parts.hostname and parts.hostname != DISCORD_API_HOST:
        return (*DISCORD_CDN_HOSTS, parts.netloc.lower())
    return DISCORD_CDN_HOSTS


def input_file(attachment: discord.Attachment, hosts: tuple[str, ...]) -> InputFile:
    """What Discord says about an attachment (its type and size are checked against the
    option before anything is read)."""
    return InputFile(
        url=attachment.url,
        # Discord leaves it out for types it does not know: the file's name may still say.
        content_type=attachment.content_type or mimetypes.guess_type(attachment.filename)[0] or "",
        size=attachment.size,
        filename=attachment.filename,
        hosts=hosts,
    )


def with_files(options: dict[str, Any], hosts: tuple[str, ...]) -> dict[str, Any]:
    """The options with each attachment turned into an InputFile."""
    return {
        name: input_file(value, hosts) if isinstance(value, discord.Attachment) else value
        for name, value in options.items()
    }
