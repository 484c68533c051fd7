"""Uploads that a second delivery can recognise: Slack's three upload steps, with the file ids
recorded (a checkpoint) before they are shared, and `files.info` to ask where they were.

slack_sdk's `files_upload_v2` does the same three calls in one (files.getUploadURLExternal, the
bytes to the upload URL, files.completeUploadExternal) and leaves no moment to record the ids;
they are spelled out here so that a delivery interrupted after the share (the instance died
before marking it delivered) is not posted twice by the instance that takes it over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

Checkpoint = Callable[[Mapping[str, Any]], Awaitable[None]]
FILES_KEY = "slack_files"  # in job.destination: the ids of the files being shared in the thread


async def upload_and_share(
    client: AsyncWebClient,
    uploads: Sequence[Mapping[str, Any]],
    *,
    channel: str,
    thread_ts: str | None,
    comment: str,
    checkpoint: Checkpoint | None = None,
) -> list[str]:
    """Upload each file (`content`, `filename`, `title`, optional `alt_txt`, `snippet_type`),
    call `checkpoint({FILES_KEY: ids})` once every byte is up, then share them all in one
    message; returns the file ids."""
    ids: list[str] = []
    for upload in uploads:
        content: bytes = upload["content"]
        answer = await client.files_getUploadURLExternal(
            filename=upload["filename"],
            length=len(content),
            alt_txt=upload.get("alt_txt"),
            snippet_type=upload.get("snippet_type"),
        )
        # slack_sdk's own step 2 (what files_upload_v2 calls), with its session, proxy and TLS.
        result = await client._upload_file(
            url=str(answer["upload_url"]),
            data=content,
            logger=client._logger,
            timeout=client.timeout,
            proxy=client.proxy,
            ssl=client.ssl,
        )
        if result.status != 200:
            raise SlackRequestError(f"Failed to upload a file (status: {result.status})")
        ids.append(str(answer["file_id"]))
    if checkpoint is not None:
        await checkpoint({FILES_KEY: ids})
    await client.files_completeUploadExternal(
        files=[
            {"id": file_id, "title": upload.get("title")}
            for file_id, upload in zip(ids, uploads, strict=True)
        ],
        channel_id=channel,
        thread_ts=thread_ts,
        initial_comment=comment,
    )
    return ids


async def already_shared(
    client: AsyncWebClient, file_ids: Sequence[str], channel: str, thread_ts: str
) -> bool:
    """Whether an earlier delivery's files were shared in this thread: they are shared all at
    once (one files.completeUploadExternal), so the first file's shares answer for all."""
    if not file_ids:
        return False
    try:
        answer = await client.files_info(file=file_ids[0])
    except SlackApiError as exc:
        if exc.response.status_code == 200 and exc.response.get("error") == "file_not_found":
            return False
        raise
    shares = (answer.get("file") or {}).get("shares") or {}
    for kind in ("public", "private"):
        for share in (shares.get(kind) or {}).get(channel) or []:
            if share.get("thread_ts") == thread_ts:
                return True
    return False
