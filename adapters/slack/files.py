"""A job's delivered images, read back from Slack: the input of an Upscale or a Variation.

Replicate's output links die after an hour; the files Conjure shared in Slack do not. Their ids
are in `job.destination` (recorded before they were shared, adapters/slack/uploads.py), with the
output each one is (`slack_file_outputs`, 1-based). `files.info` (scope `files:read`) gives the
file's `url_private_download`, which is read with the bot token, bounded in size and time.
The token is only ever sent to Slack's own hosts (or the Web API's, where it is a test's fake).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.reach import SLACK_ERRORS
from adapters.slack.uploads import FILES_KEY
from bot.adapter import OutputFile
from storage.models import Job

log = logging.getLogger(__name__)

OUTPUTS_KEY = "slack_file_outputs"  # in job.destination: output number of each shared file
DOWNLOAD_DEADLINE = 60.0  # seconds for one file, whatever its pace
SLACK_FILE_HOSTS = ("slack.com", "slack-edge.com")


class SlackFiles:
    """Output `n` of a job from the Slack file it was delivered as (`Press.source`)."""

    def __init__(
        self,
        client: AsyncWebClient,
        http: httpx.AsyncClient,
        max_bytes: int,
        *,
        deadline: float = DOWNLOAD_DEADLINE,
    ) -> None:
        self.client = client
        self.http = http
        self.max_bytes = max_bytes
        self.deadline = deadline

    async def output(self, job: Job, index: int) -> OutputFile | None:
        """The file, or None when the job has no such delivered file or Slack no longer has it.
        Slack being unreachable raises (the core logs it and tries Replicate's link)."""
        file_id = file_for_output(job.destination, index)
        if file_id is None:
            return None
        try:
            answer = await self.client.files_info(file=file_id)
        except SLACK_ERRORS as exc:
            log.info("job %s: file %d not readable in Slack (%s)", job.id, index, _reason(exc))
            return None
        info = answer.get("file") or {}
        url = info.get("url_private_download") or info.get("url_private")
        if not url or not self._is_slack(str(url)):
            return None
        size = info.get("size")
        if isinstance(size, int) and size > self.max_bytes:
            log.info("job %s: file %d is over the download limit", job.id, index)
            return None
        content, content_type = await self._download(str(url))
        if content is None:
            return None
        return OutputFile(
            filename=str(info.get("name") or f"{job.id[:8]}-{index}"),
            content=content,
            content_type=str(info.get("mimetype") or content_type or "application/octet-stream"),
        )

    def _is_slack(self, url: str) -> bool:
        """Whether the bot token may go to `url`: Slack's hosts over https, or the Web API's
        own origin (SLACK_API_URL, where it is not Slack's)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and any(
            host == h or host.endswith("." + h) for h in SLACK_FILE_HOSTS
        ):
            return True
        api = urlsplit(self.client.base_url)
        return (parts.scheme, parts.netloc.lower()) == (api.scheme, api.netloc.lower())

    async def _download(self, url: str) -> tuple[bytes | None, str]:
        token = self.client.token or ""
        headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
        try:
            async with asyncio.timeout(self.deadline):
                async with self.http.stream(
                    "GET", url, headers=headers, follow_redirects=False
                ) as response:
                    if response.status_code != 200:
                        log.info("Slack file download answered %s", response.status_code)
                        return None, ""
                    if response.headers.get("content-encoding", "identity") != "identity":
                        return None, ""  # identity was asked for: a compressed body is not it
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > self.max_bytes:
                            log.info("Slack file is over the download limit")
                            return None, ""
                        chunks.append(chunk)
                    content_type = response.headers.get("content-type", "").split(";")[0]
        except (TimeoutError, httpx.HTTPError) as exc:
            log.info("Slack file download failed (%s)", type(exc).__name__)
            return None, ""
        return b"".join(chunks), content_type


def file_for_output(destination: dict[str, Any], index: int) -> str | None:
    """The id of the Slack file that is output `index` (1-based) of a job: by the recorded
    output numbers, or, for a job delivered before they were recorded, the index-th file."""
    ids = destination.get(FILES_KEY) or []
    outputs = destination.get(OUTPUTS_KEY)
    if isinstance(outputs, list) and len(outputs) == len(ids):
        for file_id, number in zip(ids, outputs, strict=True):
            if number == index:
                return str(file_id)
        return None
    return str(ids[index - 1]) if 1 <= index <= len(ids) else None


def _reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "get"):
        return str(response.get("error") or type(exc).__name__)
    return type(exc).__name__
