"""Sending an image to a model: inline as a `data:` URL when small, else through the Files API.

A follow-up (a variation or an upscale of a delivered result) cannot reuse Replicate's output
link, which expires after an hour, so it sends the delivered file's bytes instead.
"""

from __future__ import annotations

import base64

from bot.replicate.client import ReplicateClient
from bot.replicate.errors import InvalidInputError

DATA_URL_MAX_BYTES = 256 * 1024
"""Largest file sent inline as a `data:` URL; a larger one is uploaded (`POST /v1/files`).

Replicate recommends data URLs only for files under 256 KB: the URL travels in the create body
(a third larger, as base64) and is echoed back in the prediction's `input` on every read, list
page and webhook, so a big one would bloat each of those; an upload costs one request more and
keeps every prediction object small.
"""

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
"""Replicate's limit on one uploaded file (100 MiB): a larger one is refused here, unsent."""


async def image_input(
    client: ReplicateClient, content: bytes, content_type: str, filename: str
) -> str:
    """The value to put in a model's image input for `content`: a `data:` URL when it is at
    most DATA_URL_MAX_BYTES, else the `urls.get` of an upload.

    Raises ValueError for empty content or a content type that is not `type/subtype`,
    InvalidInputError for a file over MAX_UPLOAD_BYTES, and the client's ReplicateErrors (already
    retried where that is safe) when the upload fails.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    kind, slash, subtype = mime.partition("/")
    if not content:
        raise ValueError("an image input needs content")
    if not (kind and slash and subtype) or any(c.isspace() or c in ",;" for c in mime):
        raise ValueError(f"not a content type: {content_type!r}")
    if len(content) <= DATA_URL_MAX_BYTES:
        return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"
    if len(content) > MAX_UPLOAD_BYTES:
        raise InvalidInputError(
            f"{filename}: {len(content)} bytes is over Replicate's {MAX_UPLOAD_BYTES} byte limit",
            user_message="That image is too large to send to Replicate (over 100 MiB).",
        )
    uploaded = await client.upload_file(content, filename=filename, content_type=mime)
    return uploaded.url
