"""What a person reads about an output too large to upload where they asked, or too slow to
download: its link, and when that link dies.

Replicate deletes a prediction's files an hour after it ends, so the note says when (in UTC):
a link that silently stops working the next morning would read as Conjure losing the video.
Platform-free, as plain text that every adapter posts as it posts any text answer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from bot.adapter import JobResult, LinkedOutput
from storage.models import utcnow

LINKS_LAST = timedelta(hours=1)  # Replicate removes an API prediction's files after this


def megabytes(size: int) -> str:
    """`23.4 MB` (decimal megabytes, as the platforms state their limits)."""
    return f"{size / 1_000_000:.1f} MB"


def link_note(link: LinkedOutput, noun: str, finished: datetime | None, several: bool) -> str:
    """One line: what is linked, why, the URL, and when the link stops working."""
    what = f"{noun} {link.number}" if several else f"The {noun}"
    if several:
        what = what[0].upper() + what[1:]
    size = f" ({megabytes(link.size)})" if link.size is not None else ""
    if link.too_slow is not None:
        why = f"took longer than {link.too_slow:g} s to download"
    else:
        why = f"is larger than can be uploaded here ({megabytes(link.limit)})"
    expires = (finished or utcnow()) + LINKS_LAST
    if expires <= utcnow():  # delivered late (retried for over an hour): say so, not a dead link
        return (
            f"🔗 {what}{size} {why}, and Replicate's link to it expired at {expires:%H:%M} UTC, "
            "an hour after the run. Run the command again for a new one."
        )
    return (
        f"🔗 {what}{size} {why}, so here is Replicate's link to it: {link.url}\n"
        f"It expires at {expires:%H:%M} UTC, an hour after the run; download it before then."
    )


def with_link_notes(result: JobResult, noun: str, finished: datetime | None) -> JobResult:
    """`result` with a note for each linked output before its text (if any)."""
    if not result.links:
        return result
    several = len(result.links) + len(result.files) > 1
    notes = [link_note(link, noun, finished, several) for link in result.links]
    text = "\n".join([*notes, result.text] if result.text else notes)
    return replace(result, text=text)
