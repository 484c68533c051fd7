"""Which outputs one Discord message can carry as attachments, and a line for each of the rest."""

from __future__ import annotations

import io
from collections.abc import Sequence

import discord

from adapters.discord.markup import megabytes
from bot.adapter import OutputFile

MAX_ATTACHMENTS = 10  # files per message
UPLOAD_OVERHEAD = 64 * 1024  # room for the message itself and the multipart framing


def fit_files(files: Sequence[OutputFile], limit: int) -> tuple[list[OutputFile], list[str]]:
    """The files one message can carry, and a line linking each of the others.

    Discord caps the whole upload, not each file, so the files share `limit` (less room for
    the rest of the request); a file that does not fit is linked rather than failing the post.
    """
    room = limit - UPLOAD_OVERHEAD
    attach: list[OutputFile] = []
    notes: list[str] = []
    for output in files:
        size = len(output.content)
        if size <= room and len(attach) < MAX_ATTACHMENTS:
            attach.append(output)
            room -= size
            continue
        if size > limit - UPLOAD_OVERHEAD:
            why = f"is over this server's {megabytes(limit)} upload limit"
        elif len(attach) >= MAX_ATTACHMENTS:
            why = f"did not fit ({MAX_ATTACHMENTS} files per message)"
        else:
            why = f"did not fit in this message's {megabytes(limit)} upload limit"
        head = f"📎 {output.filename} ({megabytes(size)}) {why}"
        if output.source_url:
            notes.append(f"{head}; the link expires in an hour: <{output.source_url}>")
        else:
            notes.append(f"{head}, and there is no link to share.")
    return attach, notes


def as_files(outputs: Sequence[OutputFile], spoiler: bool = False) -> list[discord.File]:
    """Fresh File objects (discord.py closes them after each request); `spoiler` hides each
    behind Discord's spoiler cover (its name gets the SPOILER_ prefix)."""
    return [
        discord.File(io.BytesIO(o.content), filename=o.filename, spoiler=spoiler) for o in outputs
    ]
