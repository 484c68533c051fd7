"""A job's delivered images, read back from Slack: the input of an Upscale or a Variation.

Replicate's output links die after an hour; the files Conjure shared in Slack do not. Their ids
are in `job.destination` (recorded before they were shared, adapters/slack/uploads.py), with the
output each one is (`slack_file_outputs`, 1-based). `files.info` (scope `files:read`) gives the
file's `url_private_download`, which is read with the bot token, bounded in size and time.
The token is only ever sent to Slack's own hosts (or the Web API's, where it is a test's fake).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.reach import SLACK_ERRORS, error_code, passing
from adapters.slack.uploads import FILES_KEY
from bot.adapter import OutputFile
from bot.catalog.files import is_web_page
from bot.replicate.outputs import OutputFetcher, OutputRejected, OutputUnavailable
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
        self.max_bytes = max_bytes
        # The same bounded download as Replicate's outputs (size cap as it streams, identity
        # encoding, an overall deadline), allowed only Slack's hosts and the Web API's origin
        # (SLACK_API_URL, where it is not Slack's), so the bot token goes nowhere else.
        api = urlsplit(client.base_url).netloc.lower()
        self.fetcher = OutputFetcher(http, (*SLACK_FILE_HOSTS, api), max_bytes, deadline=deadline)

    async def output(self, job: Job, index: int) -> OutputFile | None:
        """The file, or None when the job has no such delivered file, or Slack no longer has
        it (or refuses it); OutputUnavailable when Slack cannot answer just now, so that a
        passing outage is not told as a deleted image (the core tries Replicate's link, then
        says so either way)."""
        file_id = file_for_output(job.destination, index)
        if file_id is None:
            return None
        try:
            answer = await self.client.files_info(file=file_id)
        except SLACK_ERRORS as exc:
            log.info("job %s: file %d not readable in Slack (%s)", job.id, index, error_code(exc))
            if passing(exc):
                raise OutputUnavailable(f"file {index} of job {job.id}: {error_code(exc)}") from exc
            return None
        info = answer.get("file") or {}
        url = str(info.get("url_private_download") or info.get("url_private") or "")
        size = info.get("size")
        if not url or (isinstance(size, int) and size > self.max_bytes):
            return None
        token = {"Authorization": f"Bearer {self.client.token or ''}"}
        try:
            downloaded = await self.fetcher.download(url, index - 1, headers=token)
        except OutputRejected as exc:
            log.info("job %s: file %d not downloaded (%s)", job.id, index, exc)
            return None
        mimetype = str(info.get("mimetype") or "")
        if is_web_page(downloaded.content_type, [mimetype]):  # not the file: see is_web_page
            log.warning(
                "job %s: Slack sent a web page for file %d (is files:read granted?)", job.id, index
            )
            return None
        return OutputFile(
            filename=str(info.get("name") or downloaded.filename),
            content=downloaded.content,
            content_type=mimetype or downloaded.content_type,
        )


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
