"""Signed slash commands, sent the way Slack sends them, at a fixed concurrency.

The form fields and the signature come from tests/slack_harness.py (`command_fields`, `sign`), so
the benchmark speaks to bolt exactly as the end-to-end tests do. Each command's prompt carries a
tag (`bench-<phase>-<n>`) that shows up in the status message and the prediction's input, which
is how the benchmark follows one command through the fake Slack and the sandbox.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from tests.fakes.slack_api import FakeSlack
from tests.slack_harness import command_fields, sign

TAG = re.compile(r"\bbench-(\w+)-(\d+)\b")
USERS = 100  # commands are spread over this many users (one workspace)
CHANNEL = "C0BENCH"
REQUEST_TIMEOUT = 30.0


def tag(phase: str, index: int) -> str:
    return f"bench-{phase}-{index}"


@dataclass
class Sent:
    """One slash command: when it left (monotonic), how long the ack took, what came back."""

    tag: str
    sent_at: float
    seconds: float
    status: int
    body: str


class SlashSender:
    """Signs and posts `/imagine` commands to POST /slack/events of one app, or of several
    (instances sharing a database): command number i goes to app i mod their count."""

    def __init__(
        self, app_url: str | Sequence[str], fake_slack_url: str, signing_secret: str
    ) -> None:
        urls = [app_url] if isinstance(app_url, str) else list(app_url)
        self.events_urls = [url.rstrip("/") + "/slack/events" for url in urls]
        self.signing_secret = signing_secret
        self._addresses = FakeSlack()  # only for response_url addresses in the fields
        self._addresses.url = fake_slack_url

    def events_url(self, index: int) -> str:
        """Where command number `index` goes: round-robin over the apps."""
        return self.events_urls[index % len(self.events_urls)]

    def request(
        self, phase: str, index: int, text: str, command: str = "/imagine"
    ) -> tuple[str, dict[str, str]]:
        """The form body and headers of one command (`/imagine`), signed now."""
        fields = command_fields(
            self._addresses,
            command,
            text,
            user_id=f"U0B{index % USERS:04d}",
            user_name=f"bench{index % USERS}",
            channel_id=CHANNEL,
            channel_name="bench",
            response_id=f"{phase}-{index}",
        )
        body = urlencode(fields)
        stamp = int(time.time())
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(stamp),
            "x-slack-signature": sign(self.signing_secret, stamp, body),
        }
        return body, headers

    async def send(
        self, phase: str, count: int, concurrency: int, *, deadline: float, first: int = 0
    ) -> list[Sent]:
        """`count` commands (numbered from `first`) from `concurrency` keep-alive connections;
        stops at `deadline`."""
        results: list[Sent] = []
        indexes = iter(range(first, first + count))
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def worker() -> None:
                for index in indexes:
                    if time.monotonic() > deadline:
                        return
                    label = tag(phase, index)
                    body, headers = self.request(phase, index, prompt(label))
                    url = self.events_url(index)
                    results.append(await self._post(session, url, label, body, headers))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results

    async def send_one(self, label: str, command: str, text: str, index: int) -> Sent:
        """One command (`command text`), on a connection of its own."""
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        ) as session:
            body, headers = self.request(label, index, text, command)
            return await self._post(session, self.events_url(index), label, body, headers)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        label: str,
        body: str,
        headers: dict[str, str],
    ) -> Sent:
        sent_at = time.monotonic()
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            text, status = type(exc).__name__, 0
        return Sent(label, sent_at, time.perf_counter() - started, status, text)


def prompt(label: str) -> str:
    """The command text: the issue's example, tagged."""
    return f"a red fox in the snow {label} --ar 16:9"


def acked(sent: Sent) -> bool:
    """A plain ack: 200 with an empty body (a usage answer would carry text)."""
    return sent.status == 200 and not sent.body.strip()
