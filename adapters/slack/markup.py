"""Slack's text rules and Conjure's wording in Slack.

Slack sends `&`, `<` and `>` in command text as `&amp;`, `&lt;` and `&gt;`, and reads the same
three as markup in anything posted: `<!channel>` pings everyone, `<prompt>` disappears. So text
from a person is unescaped before parsing (the model sees what was typed) and escaped again
before it is shown; only the mentions Conjure writes itself stay markup.
"""

from __future__ import annotations

import re

from bot.commands.parsing import UsageError
from bot.messages import status_text
from storage.models import Job

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_MENTION = re.compile(r"<(?:@[UW][A-Z0-9]+|#[CG][A-Z0-9]+)(?:\|[^<>]*)?>")
_WHO = "\ue000"  # a private-use placeholder for the mention while the rest is escaped

ALT_TEXT_LIMIT = 1000  # Slack's limit on an image's alt text
TITLE_LIMIT = 120


def unescape(text: str) -> str:
    """Command text as typed (one pass, so a typed `&amp;lt;` stays `&lt;`)."""
    return _ENTITY.sub(lambda match: _ENTITIES[match[1]], text)


def escape(text: str) -> str:
    """Text shown literally in a Slack message, never read as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_keeping_mentions(text: str) -> str:
    """Conjure's own text (answers, alerts) shown literally, except the mentions it writes."""
    parts, last = [], 0
    for match in _MENTION.finditer(text):
        parts += [escape(text[last : match.start()]), match[0]]
        last = match.end()
    return "".join([*parts, escape(text[last:])])


def mention(user_id: str) -> str:
    return f"<@{user_id}>"


def clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def announcement(job: Job) -> str:
    """The thread parent: the core's status text, escaped, with a real mention of who asked."""
    return escape(status_text(job, mention=_WHO)).replace(_WHO, mention(job.user_id), 1)


def usage_answer(error: UsageError) -> str:
    """The ephemeral answer to bad input: what is wrong, then the usage line as code."""
    text = escape(error.message)
    return f"{text}\nUsage: `{escape(error.usage)}`" if error.usage else text


def file_title(job: Job, index: int, count: int) -> str:
    title = clip(job.prompt, TITLE_LIMIT)
    return f"{title} ({index + 1} of {count})" if count > 1 else title


def alt_text(job: Job) -> str:
    return clip(job.prompt, ALT_TEXT_LIMIT)


def files_comment(user_id: str, count: int, noun: str) -> str:
    """The comment that carries the files and pings the person who asked."""
    if count == 1:
        return f"{mention(user_id)} here is your {noun}."
    return f"{mention(user_id)} here are your {count} {noun}s."


def long_text_comment(user_id: str) -> str:
    return f"{mention(user_id)} the answer is long, so here it is as a file."


def skipped_note(skipped: list[str]) -> str:
    return "".join(f"\n⚠️ Not delivered: {escape(reason)}" for reason in skipped)


def nothing_to_show(skipped: list[str]) -> str:
    """For a result with no file and no text: outputs that were skipped, or none at all."""
    if skipped:
        return "the model finished, but its output could not be delivered."
    return "the model finished but returned no output."


def failure_reply(job: Job, message: str) -> str:
    return f"{mention(job.user_id)} {escape(message)}"


NO_THREAD_NOTE = (
    "_I can't post in this conversation, so there is no thread and no progress here. "
    "Invite me to the channel (or use a channel I'm in) to get results in a thread._"
)
DM_NOTE = "I sent the result to you in a direct message, since I can't upload files here."
DM_FAILED = (
    "your result is ready, but I could not send it to you: I can't upload files here or "
    "message you directly. Invite me to the channel and run the command there."
)
INTERNAL_ERROR = (
    "Conjure hit an internal error while starting your job. Please try again in a minute."
)
CONJURE_FAILED = "Conjure could not answer that just now. Please try again in a minute."
