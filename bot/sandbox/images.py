"""Reading a prediction's image input, as a model on Replicate would before it runs.

The value passed the schema's `format: uri` check at create (else a 422); what is behind it is
only found out when the prediction runs, so a file that cannot be fetched or decoded fails the
prediction with an error, as on Replicate. Accepted: `data:` URLs, the sandbox's own output
files and Files API uploads (looked up directly, so no token or network is involved), and any
other http(s) URL, fetched with the sandbox's client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from bot.sandbox.state import Sandbox

MAX_INPUT_BYTES = 50 * 1024 * 1024
"""Largest input file fetched: enough for any photo, small enough that a test cannot exhaust RAM."""
MAX_INPUT_PIXELS = 16_000_000
"""Largest input decoded (about 4000 x 4000): Pillow refuses only at 179 MP, which a sandbox
should never try to hold."""
FETCH_TIMEOUT = 10.0


class ImageInputError(Exception):
    """Why an input image could not be used; the message becomes the prediction's `error`."""


async def read_image(sandbox: Sandbox, url: str, base_url: str) -> Image.Image:
    """The RGB image behind `url`, or ImageInputError saying what went wrong."""
    data = await _fetch(sandbox, url, base_url)
    return await asyncio.to_thread(decode_image, data)


async def read_local(sandbox: Sandbox, url: str, base_url: str) -> bytes | None:
    """The bytes behind `url` when they can be had without the internet (a `data:` URL, the
    sandbox's own files, a loopback server), else None: the demo and old tests pass made-up
    audio URLs the sandbox must not try to reach. ImageInputError when they cannot be read."""
    host = urlsplit(url).hostname or ""
    local = url.startswith(("data:", base_url + "/")) or host in ("127.0.0.1", "localhost", "::1")
    return await _fetch(sandbox, url, base_url) if local else None


def decode_image(data: bytes) -> Image.Image:
    """Decode and fully load `data` as an RGB image (ImageInputError when it is not one)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_INPUT_PIXELS:
                raise ImageInputError(
                    f"Input image is too large: {width}x{height} pixels "
                    f"(at most {MAX_INPUT_PIXELS:,} pixels)"
                )
            image.load()
            return image.convert("RGB")
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"cannot identify image file: {exc}") from None


def _shown(url: str) -> str:
    """The URL for an error message (a data URL is shortened: it can be megabytes long)."""
    if url.startswith("data:"):
        return url[: url.find(",") + 1] + "..." if "," in url else "data:..."
    return url if len(url) <= 200 else url[:200] + "..."


async def _fetch(sandbox: Sandbox, url: str, base_url: str) -> bytes:
    if url.startswith("data:"):
        return _data_url_bytes(url)
    own = _own_file(sandbox, url, base_url)
    if own is not None:
        return own
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImageInputError(f"Failed to download {_shown(url)}: unsupported URL scheme")
    try:
        async with sandbox.http().stream(
            "GET", url, follow_redirects=True, timeout=FETCH_TIMEOUT
        ) as response:
            if response.status_code != 200:
                raise ImageInputError(
                    f"Failed to download {_shown(url)}: HTTP {response.status_code}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_INPUT_BYTES:
                    raise ImageInputError(
                        f"Failed to download {_shown(url)}: larger than {MAX_INPUT_BYTES} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        raise ImageInputError(f"Failed to download {_shown(url)}: {reason}") from None


def _data_url_bytes(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise ImageInputError("Invalid data URL: no ',' before the data")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ImageInputError("Invalid data URL: the data is not valid base64") from None
    return unquote_to_bytes(payload)


def _own_file(sandbox: Sandbox, url: str, base_url: str) -> bytes | None:
    """The bytes of one of the sandbox's own files, None when `url` is not one of its own."""
    if not url.startswith(base_url + "/"):
        return None
    path = urlsplit(url).path.split("/")
    if len(path) == 4 and path[1] == "files":  # /files/{prediction id}/{name}
        found = sandbox.file(path[2], path[3])
        if found is None:
            raise ImageInputError(f"Failed to download {_shown(url)}: HTTP 404")
        return found[0]
    if len(path) in (4, 5) and path[1:3] == ["v1", "files"]:  # urls.get, or its /download
        if len(path) == 5 and path[4] != "download":
            return None
        upload = sandbox.uploads.get(path[3])
        if upload is None:
            raise ImageInputError(f"Failed to download {_shown(url)}: HTTP 404")
        return upload.content
    return None
