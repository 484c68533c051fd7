"""Slack's text rules and Conjure's wording in Slack.

Slack sends `&`, `<` and `>` in command text as `&amp;`, `&lt;` and `&gt;`, and reads the same
three as markup in anything posted: `<!channel>` pings everyone, `<prompt>` disappears. So text
from a person is unescaped before parsing (the model sees what was typed) and escaped again
before it is shown; the core's typed markup (bot.markup) becomes Slack's: `<@U123>` for a
mention, backticks for code.
"""

from __future__ import annotations

import re

from bot.markup import Text
from bot.messages import followup_label, status_text
from storage.models import Job

_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}

ALT_TEXT_LIMIT = 1000  # Slack's limit on an image's alt text
TITLE_LIMIT = 120


def unescape(text: str) -> str:
    """Command text as typed (one pass, so a typed `&amp;lt;` stays `&lt;`)."""
    return _ENTITY.sub(lambda match: _ENTITIES[match[1]], text)


def escape(text: str) -> str:
    """Text shown literally in a Slack message, never read as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(text: Text) -> str:
    """The core's text in Slack's markup: literal parts escaped, real mentions, code in
    backticks."""
    return text.render(escape, lambda who: mention(who.user_id), lambda code: f"`{escape(code)}`")


def mention(user_id: str) -> str:
    return f"<@{user_id}>"


def clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def announcement(job: Job, limit: int | None = None) -> str:
    """The status message: who asked (a real mention), the prompt, the model, the status; a
    job started by a button says which, since it sits in another job's thread.

    Within `limit` characters (a section's 3,000), the prompt is what is cut, before it is
    escaped: cutting the whole would drop the status line after it (escaping makes a prompt
    of markup up to five times longer) and could split an entity."""
    label = followup_label(job.followup)

    def shown(prompt_limit: int | None) -> str:
        text = render(status_text(job, prompt_limit))
        return f"{label} · {text}" if label else text

    text = shown(None)
    if limit is None or len(text) <= limit:
        return text
    # The longest cut of the prompt that fits (a halving search: a few renders).
    fits, low, high = shown(1), 1, len(job.prompt) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if len(candidate := shown(middle)) <= limit:
            fits, low = candidate, middle
        else:
            high = middle - 1
    return fits


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
# Where Slack failed the status post for a while (5xx, 429s, a timeout) in a conversation the
# bot may well be in: telling the person to invite it would be wrong, and it may post next time.
SLACK_BUSY_NOTE = (
    "_Slack would not take my message just now, so there is no thread and no progress here. "
    "The result will come here when it is ready._"
)
DM_NOTE = "I sent the result to you in a direct message, since it has no thread here."
DM_FAILED = (
    "your result is ready, but I could not send it to you: I can't upload files here or "
    "message you directly. Invite me to the channel and run the command there."
)
# The bot's token refused (the app uninstalled, its token revoked): running the command again
# would be paid for and fail the same way; only an admin can mend it.
NO_ACCESS = (
    "your result is ready, but I could not send it to you: Slack no longer accepts this "
    "app's access. A workspace admin needs to reinstall Conjure."
)
CONJURE_FAILED = "Conjure could not answer that just now. Please try again in a minute."
