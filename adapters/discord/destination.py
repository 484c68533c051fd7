"""Where a Discord job's messages go, as kept in `job.destination` (JSON: ids as strings).

An interaction's token answers for 15 minutes; everything needed to reach its response (or,
after that, the channel) is stored with the job, so any instance, or this one after a restart,
can deliver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import discord

from storage.models import Job

TOKEN_LIFETIME = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=20)  # don't start a token call that may land after expiry
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Destination:
    """A job's interaction: its webhook (application id and token), channel and response."""

    application_id: int
    token: str | None  # None once the job was delivered (finish_delivery strips it)
    channel_id: int
    guild_id: int | None
    message_id: int | None  # the original response, once known
    created_at: datetime  # the interaction's; its token lives 15 minutes from here
    attachment_size_limit: int
    age_restricted: bool = False  # the channel is marked NSFW (flagged outputs shown plainly)

    @classmethod
    def of(cls, job: Job) -> Destination:
        d = job.destination
        return cls(
            application_id=int(d["application_id"]),
            token=d.get("token"),
            channel_id=int(d["channel_id"]),
            guild_id=int(d["guild_id"]) if d.get("guild_id") else None,
            message_id=int(d["message_id"]) if d.get("message_id") else None,
            created_at=datetime.fromisoformat(d["created_at"]),
            attachment_size_limit=int(d.get("attachment_size_limit") or DEFAULT_ATTACHMENT_LIMIT),
            age_restricted=d.get("channel_nsfw") is True,
        )

    def token_alive(self, now: datetime) -> bool:
        """Whether the interaction's token may still be used: known, and not near its expiry.
        A job delivered once (a cancel's notice) and delivered again (its run, charged late)
        has none left: it goes to the channel."""
        return self.token is not None and now < self.created_at + TOKEN_LIFETIME - TOKEN_MARGIN


def destination_of(interaction: discord.Interaction, message_id: int | None) -> dict[str, Any]:
    return {
        "application_id": str(interaction.application_id),
        "token": interaction.token,
        "interaction_id": str(interaction.id),
        "channel_id": str(interaction.channel_id),
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        "message_id": str(message_id) if message_id else None,
        "created_at": interaction.created_at.isoformat(),
        "attachment_size_limit": interaction.filesize_limit or DEFAULT_ATTACHMENT_LIMIT,
        # Age-restricted ("NSFW") channel, as the interaction said at command time; unknown
        # (a partial channel) counts as not, so flagged outputs are hidden behind spoilers.
        "channel_nsfw": getattr(interaction.channel, "nsfw", False) is True,
    }
