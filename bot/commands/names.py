"""The names an admin types to aim a quota or a safety rule (platform, workspace, user id),
checked before anything is stored, the same way in chat, on the admin page and in the CLI.

Why: the columns hold 64 characters (PostgreSQL refuses a longer value, so the change failed
as an internal error there and was stored on SQLite), and a platform Conjure does not serve
makes an override or a rule that never applies.
"""

from __future__ import annotations

import re

from bot.config import PLATFORMS

MAX_ID = 64  # storage.models: Job.workspace, Job.user_id, SafetyRule.workspace


_MENTION = re.compile(r"<@!?([^>|]+)(?:\|[^>]*)?>")


def user_id_of(text: str) -> str:
    """A user's id as an admin types it: `U123`, `@U123`, or a mention pasted from the chat
    (`<@U123>`, `<@U123|ada>`, Discord's `<@!123>`). Stored as typed, `@U123` would make an
    override that never applies to anyone."""
    value = text.strip()
    found = _MENTION.fullmatch(value)
    return found.group(1) if found else value.lstrip("@")


def name_problem(platform: str, workspace: str, user: str | None = None) -> str | None:
    """Why these names cannot be a quota's or a rule's subject, or None when they can."""
    if platform not in PLATFORMS:
        return f"the platform is one of {', '.join(PLATFORMS)}, not {platform[:40]!r}."
    for what, name in (("workspace", workspace), ("user", user)):
        if name is not None and len(name) > MAX_ID:
            return f"a {what} id is at most {MAX_ID} characters."
    return None
