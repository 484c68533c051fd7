"""What a file option (type `image` or `audio`) accepts by default, and how to name a file type.

A person sees "that file is a PDF; /transcribe takes audio: mp3, wav, m4a, ogg, ...", so content
types are named the way people name files, not as MIME types.
"""

from __future__ import annotations

from collections.abc import Iterable

import filetype

MIB = 1024 * 1024

DEFAULT_ACCEPT: dict[str, tuple[str, ...]] = {
    # What LLaVA and FLUX read (Pillow) and Discord and Slack preview as images.
    "image": ("image/png", "image/jpeg", "image/webp", "image/gif"),
    # What Whisper reads (ffmpeg), under the names browsers and chat apps give those files.
    "audio": (
        "audio/mpeg",
        "audio/mp3",
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/mp4",
        "audio/x-m4a",
        "audio/m4a",
        "audio/ogg",
        "audio/webm",
        "audio/flac",
        "audio/x-flac",
        "audio/aac",
    ),
}
DEFAULT_MAX_MB: dict[str, float] = {"image": 10, "audio": 25}
"""The size cap when conjure.toml sets none: 10 MB is Discord's own upload limit without
Nitro and far above any photo a model needs; 25 MB is about half an hour of mp3 speech."""

_NAMES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WebP",
    "image/gif": "GIF",
    "image/heic": "HEIC",
    "image/svg+xml": "SVG",
    "application/pdf": "PDF",
    "application/zip": "zip file",
    "text/plain": "text file",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/ogg": "ogg",
    "audio/webm": "webm",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/aac": "aac",
    "video/mp4": "mp4 video",
    "video/quicktime": "QuickTime video",
}


def base_type(content_type: str) -> str:
    """`image/png` from `Image/PNG; charset=x`."""
    return content_type.split(";", 1)[0].strip().lower()


WEB_PAGES = frozenset({"text/html", "application/xhtml+xml"})


def is_web_page(content_type: str, expected: Iterable[str] = ()) -> bool:
    """Whether a download answered with a web page where a file of the `expected` types was
    asked for: a platform that will not serve a file to the bot's token (Slack without
    `files:read`, a workspace's file policy) answers 200 with its sign-in page, which is not
    the person's file, and a model given it fails or draws from a web page's bytes."""
    return base_type(content_type) in WEB_PAGES and not WEB_PAGES & set(expected)


# Names one file format goes by (a container of sound or of pictures is one format to the models
# that read it): what a file's bytes show is taken when any of its names is accepted.
_ALIKE: tuple[frozenset[str], ...] = (
    frozenset({"image/jpeg", "image/jpg", "image/pjpeg"}),
    frozenset({"image/png", "image/x-png", "image/apng"}),
    frozenset({"image/heic", "image/heif"}),
    frozenset({"audio/mpeg", "audio/mp3"}),
    frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}),
    frozenset({"audio/mp4", "audio/x-m4a", "audio/m4a", "video/mp4"}),
    frozenset({"audio/flac", "audio/x-flac"}),
    frozenset({"audio/ogg", "video/ogg", "application/ogg"}),
    frozenset({"audio/webm", "video/webm"}),
)


def contents_not_taken(content: bytes, accept: Iterable[str]) -> str | None:
    """The type a file's first bytes show (filetype's table of magic numbers), when it is not
    one `accept` takes under any of its names: a PDF sent as a `.png`. None when it is taken, or
    when the bytes are of no format known (the model decides: refusing what is not recognised
    would refuse good files)."""
    shown = filetype.guess_mime(content[:_SNIFFED])
    if shown is None:
        return None
    names = next((alike for alike in _ALIKE if shown in alike), frozenset({shown}))
    return None if names & set(accept) else shown


_SNIFFED = 8192  # bytes: as many as filetype reads


def type_name(content_type: str) -> str:
    """A file type as people say it: `PDF`, `mp3`, else the subtype (`image/x-foo` -> `X-FOO`)."""
    mime = base_type(content_type)
    if not mime:
        return "a file of unknown type"
    name = _NAMES.get(mime)
    if name is None:
        name = mime.partition("/")[2].removeprefix("x-").upper() or mime
    return name


def names(accept: Iterable[str]) -> str:
    """`mp3, wav, m4a, ogg`: each accepted type once, by its name, in order."""
    seen: list[str] = []
    for mime in accept:
        name = type_name(mime)
        if name not in seen:
            seen.append(name)
    return ", ".join(seen)


def megabytes(size: int) -> str:
    """`30 MB`, `2.5 MB`, `0.2 MB`: one decimal below 10, whole numbers above (MB = MiB)."""
    value = size / MIB
    if value >= 10:
        return f"{value:.0f} MB"
    return f"{value:.1f}".rstrip("0").rstrip(".") + " MB"
