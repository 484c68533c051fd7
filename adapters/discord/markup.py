"""Discord's text rules: the core's typed markup as Discord markdown, and message-sized pieces.

Mentions become `<@id>` (who is actually pinged is decided by each post's `allowed_mentions`,
so a prompt that says @everyone pings no one); everything else is shown as written.
"""

from __future__ import annotations

import discord

from bot.markup import Text
from storage.models import Job

MESSAGE_LIMIT = 2000  # characters of content per message


def render(text: Text) -> str:
    """The core's text as Discord content: `<@id>` for mentions, the rest as written."""
    return text.render(str, lambda who: mention(who.user_id), str)


def mention(user_id: str) -> str:
    return f"<@{user_id}>"


def pings_only_the_asker(job: Job) -> discord.AllowedMentions:
    """Ping only the person who asked, whatever the prompt says."""
    return discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(int(job.user_id))]
    )


def fit(content: str) -> str:
    """At most one message's worth of content (a model's error can be long)."""
    return content if len(content) <= MESSAGE_LIMIT else content[: MESSAGE_LIMIT - 1] + "…"


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at line breaks where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > 0 else limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*pieces, text] if text or not pieces else pieces


def megabytes(size: int) -> str:
    """Sizes as Discord shows them (binary units, called KB and MB)."""
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
