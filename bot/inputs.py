"""Files people give commands (a Discord attachment, a Slack message's file) on their way in.

Checked twice before anything is spent: by what the platform says (type and size, while
parsing, bot.commands.parsing) and again while downloading (bot.commands.files: the size cap
as the bytes arrive, a deadline, only the platform's own hosts). A platform token in `headers`
is sent only to `hosts`, which the adapter sets to its own platform's file hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.catalog import CommandSpec, OptionSpec
from bot.catalog.files import base_type, megabytes, names, type_name

NOUNS = {"image": "image", "audio": "audio file"}
_PLURAL = {"image": "images", "audio": "audio"}


@dataclass(frozen=True)
class InputFile:
    """A file given to a command: where to read it and what its platform says it is.

    `size` is None when the platform does not say. `hosts` are where it may be read from
    (OutputFetcher's allow-list form); `headers` (a bot token) go only there and never into a
    repr, a log or a message.
    """

    url: str = field(repr=False)
    content_type: str
    size: int | None
    filename: str
    hosts: tuple[str, ...] = field(default=(), repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.filename


class FileRefused(Exception):
    """A file that cannot be used; the message is for the person who gave it."""


def file_problem(command: CommandSpec, option: OptionSpec, file: InputFile) -> str | None:
    """What is wrong with `file` for `option` by its platform's word (type, size), or None."""
    mime = base_type(file.content_type)
    if mime not in option.accept:
        return f"That file is {wrong_type(command, option, mime)}"
    if file.size is not None and option.max_bytes is not None and file.size > option.max_bytes:
        return too_large(option, file.size)
    return None


def wrong_type(command: CommandSpec, option: OptionSpec, mime: str, by: str = "") -> str:
    """`a PDF; /transcribe takes audio: mp3, wav, ...` (`by`: how it was found out)."""
    name = type_name(mime)
    article = "an" if name[:1].lower() in "aeiou" and name.isupper() else "a"
    article = "" if name.startswith("a file") else f"{article} "
    return (
        f"{article}{name}{by}; /{command.name} takes "
        f"{_PLURAL.get(option.type, 'files')}: {names(option.accept)}."
    )


def too_large(option: OptionSpec, size: int | None) -> str:
    """`The image is 30 MB; the limit is 10 MB.` (without the size when it is not known)."""
    noun = NOUNS.get(option.type, "file")
    limit = megabytes(option.max_bytes or 0)
    if size is None:
        return f"The {noun} is larger than {limit}, the limit."
    return f"The {noun} is {megabytes(size)}; the limit is {limit}."
