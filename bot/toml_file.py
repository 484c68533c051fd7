"""Reading conjure.toml: one reader for every part that reads it (the catalog, the quotas), so a
file that is too large, not UTF-8 or not TOML gets the same one line naming it wherever it is
read first, never a bare UnicodeDecodeError or RecursionError."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1024 * 1024
"""A conjure.toml is a few KB; this much is some other file (and would take seconds to parse)."""


class TomlFileError(Exception):
    """The file cannot be read as TOML; the message names it and says why."""


def read_toml(path: Path | str) -> dict[str, Any]:
    """The TOML document at `path`, read at most MAX_FILE_BYTES + 1 bytes of it (never all of a
    wrong path such as /dev/zero)."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise TomlFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise TomlFileError(
            f"{source}: too large (over {MAX_FILE_BYTES // 1024} KiB): is CONJURE_CONFIG the "
            "conjure.toml? (see conjure.example.toml)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TomlFileError(f"{source}: not UTF-8 text (line {line}): save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise TomlFileError(
            f"{source}: not valid TOML: arrays or tables nested too deeply"
        ) from None
