"""What the benchmark reads back: the fake Slack's event feed and the sandbox's predictions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from bench.slash import TAG


@dataclass
class Thread:
    """One job as the fake Slack saw it: its status message and when its files were shared."""

    tag: str
    channel: str
    ts: str
    posted_at: float
    uploaded_at: float | None = None
    first_text_at: float | None = None  # a streamed answer's first text (chat.startStream)
    answer_at: float | None = None  # that answer finished (chat.stopStream)
    replies: int = 0


@dataclass
class SlackFeed:
    """Follows `GET /_bench/events` of the fake Slack, indexing threads by tag and by ts."""

    url: str
    session: aiohttp.ClientSession
    by_tag: dict[str, Thread] = field(default_factory=dict)
    by_ts: dict[tuple[str, str], Thread] = field(default_factory=dict)
    uploads: int = 0
    _next: int = 0

    async def poll(self) -> None:
        """Read every event not read yet."""
        while True:
            async with self.session.get(f"{self.url}/_bench/events?after={self._next}") as r:
                page = await r.json()
            for event in page["events"]:
                self._apply(event)
            if not page["events"]:
                return
            self._next = page["next"]

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "status":
            found = TAG.search(event.get("text") or "")
            if found:
                thread = Thread(found[0], event["channel"], event["ts"], event["at"])
                self.by_tag[thread.tag] = thread
                self.by_ts[(thread.channel, thread.ts)] = thread
        elif kind in ("first_text", "answer"):
            thread = self.by_ts.get((event.get("channel"), event.get("thread_ts")))
            if thread is not None and kind == "first_text":
                thread.first_text_at = thread.first_text_at or event["at"]
            elif thread is not None:
                thread.answer_at = event["at"]
        elif kind in ("upload", "reply"):
            thread = self.by_ts.get((event.get("channel"), event.get("thread_ts")))
            if thread is None:
                return
            if kind == "upload":
                self.uploads += 1
                if thread.uploaded_at is None:
                    thread.uploaded_at = event["at"]
            else:
                thread.replies += 1

    async def calls(self) -> dict[str, int]:
        """The fake Slack's calls so far, by Web API method."""
        async with self.session.get(f"{self.url}/_bench/calls") as r:
            return dict(await r.json())

    async def wait_for(
        self, tags: list[str], *, uploaded: bool, timeout: float, interval: float = 0.2
    ) -> int:
        """Until every tag has a status message (and with `uploaded`, its files); how many do."""
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            done = sum(1 for t in tags if self._done(t, uploaded))
            if done == len(tags) or time.monotonic() > deadline:
                return done
            await asyncio.sleep(interval)

    def _done(self, label: str, uploaded: bool) -> bool:
        thread = self.by_tag.get(label)
        return thread is not None and (not uploaded or thread.uploaded_at is not None)


@dataclass
class SandboxReader:
    """The sandbox's Replicate API and `/_sandbox/...` control routes."""

    url: str
    token: str
    session: aiohttp.ClientSession

    async def stats(self) -> dict[str, int]:
        async with self.session.get(f"{self.url}/_sandbox/stats") as r:
            return dict(await r.json())

    async def set_faults(self, **faults: Any) -> None:
        async with self.session.post(f"{self.url}/_sandbox/faults", json=faults) as r:
            r.raise_for_status()

    async def predictions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first, following `next` (at most `limit`)."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.url}/v1/predictions"
        headers = {"authorization": f"Bearer {self.token}"}
        while url and (limit is None or len(found) < limit):
            async with self.session.get(url, headers=headers) as r:
                r.raise_for_status()
                page = await r.json()
            found += page["results"]
            url = page["next"]
        return found if limit is None else found[:limit]

    async def wait_created(self, count: int, timeout: float) -> int:
        """Until the sandbox has created `count` predictions in all; how many it has."""
        deadline = time.monotonic() + timeout
        while True:
            created = (await self.stats())["create_count"]
            if created >= count or time.monotonic() > deadline:
                return created
            await asyncio.sleep(0.25)

    async def wait_webhooks(self, count: int, timeout: float) -> int:
        """Until the sandbox has sent `count` webhooks in all; how many it has."""
        deadline = time.monotonic() + timeout
        while True:
            sent = (await self.stats())["webhook_deliveries"]
            if sent >= count or time.monotonic() > deadline:
                return sent
            await asyncio.sleep(0.25)


def prompt_tag(prediction: dict[str, Any]) -> str | None:
    found = TAG.search(str((prediction.get("input") or {}).get("prompt", "")))
    return found[0] if found else None


def job_id(prediction: dict[str, Any]) -> str | None:
    """The job id in the prediction's webhook URL (`...?job=<id>`)."""
    webhook = prediction.get("webhook") or ""
    values = parse_qs(urlsplit(webhook).query).get("job")
    return values[0] if values else None
