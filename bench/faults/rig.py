"""The servers a fault bench runs against, each its own process on loopback, and what it reads.

The sandbox (speed 0) and the benchmark's fake Slack stay up for the whole run; `conjure serve`
is started, SIGKILLed and started again on the same port (its public URL, which the sandbox's
webhooks were given, must keep working), each lifetime with its own log. The database (a SQLite
file, or a scratch PostgreSQL database) is read directly to check what each job was charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procs import Child, child_env, free_port, start, stop, wait_ready
from bench.stack import SANDBOX_TOKEN, SIGNING_SECRET, database, start_fake_slack, start_sandbox
from bot.sandbox.config import generate_webhook_secret
from storage.engine import create_engine
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack
from tests.slack_harness import command_fields, sign

CHANNEL = "C0FAULTS"


@dataclass
class Ledger:
    """What the fake Slack showed, per person (each job of a bench has its own user): status
    messages, and shared uploads (in the job's thread, or its DM), with their arrival times."""

    statuses: dict[str, list[float]] = field(default_factory=dict)
    uploads: dict[str, list[float]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    _thread_user: dict[tuple[str, str], str] = field(default_factory=dict)
    _next: int = 0

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "status":
            user = _mentioned(event.get("text") or "")
            if user:
                self.statuses.setdefault(user, []).append(event["at"])
                self._thread_user[(event["channel"], event["ts"])] = user
        elif kind == "upload":
            channel = str(event.get("channel") or "")
            user = _mentioned(event.get("comment") or "")
            if user is None and channel.startswith("D"):
                user = channel[1:]
            if user is None:
                user = self._thread_user.get((channel, event.get("thread_ts") or ""))
            if user:
                self.uploads.setdefault(user, []).append(event["at"])
        elif kind == "fault":
            self.faults.append(event)


def _mentioned(words: str) -> str | None:
    start = words.find("<@")
    end = words.find(">", start)
    if start < 0 or end < 0:
        return None
    return words[start + 2 : end].split("|")[0]


@dataclass
class Rig:
    """The running servers, a session to reach them, and the database."""

    work: Path
    sandbox: Child
    slack: Child
    database_url: str
    engine: AsyncEngine
    session: aiohttp.ClientSession
    serve_port: int
    webhook_secret: str
    platform_env: dict[str, str]
    serve_extra_env: dict[str, str] = field(default_factory=dict)
    serve: Child | None = None
    lifetimes: int = 0
    ledger: Ledger = field(default_factory=Ledger)
    _addresses: FakeSlack = field(default_factory=FakeSlack)

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    # ---- conjure serve --------------------------------------------------------------------

    async def start_serve(self) -> float:
        """Start `conjure serve` (again) on its port; returns when it started (monotonic),
        once it answers /healthz."""
        self.lifetimes += 1
        env = child_env(
            {
                **self.platform_env,
                "REPLICATE_API_TOKEN": SANDBOX_TOKEN,
                "REPLICATE_BASE_URL": self.sandbox.url,
                "CONJURE_WEBHOOK_SECRET": self.webhook_secret,
                "CONJURE_PUBLIC_URL": self.serve_url,
                "CONJURE_DATABASE_URL": self.database_url,
                **self.serve_extra_env,
            }
        )
        started = time.monotonic()
        scratch = self.work / "serve"
        scratch.mkdir(exist_ok=True)
        self.serve = start(
            f"serve-{self.lifetimes}",
            ["-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(self.serve_port)],
            self.serve_port,
            self.work / "logs",
            env=env,
            cwd=scratch,
        )
        await wait_ready(self.serve, "/healthz", timeout=60)
        return started

    def kill_serve(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like to everyone else."""
        if self.serve is not None and self.serve.proc.poll() is None:
            self.serve.proc.send_signal(signal.SIGKILL)
            self.serve.proc.wait(10)

    def stop_serve(self) -> None:
        if self.serve is not None:
            stop(self.serve)

    # ---- the sandbox and the fake Slack ---------------------------------------------------

    async def sandbox_faults(self, **faults: Any) -> dict[str, Any]:
        async with self.session.post(f"{self.sandbox.url}/_sandbox/faults", json=faults) as r:
            r.raise_for_status()
            return dict(await r.json())

    async def sandbox_faults_now(self) -> dict[str, Any]:
        async with self.session.get(f"{self.sandbox.url}/_sandbox/faults") as r:
            return dict(await r.json())

    async def clear_sandbox_faults(self) -> None:
        async with self.session.delete(f"{self.sandbox.url}/_sandbox/faults") as r:
            r.raise_for_status()

    async def sandbox_stats(self) -> dict[str, int]:
        async with self.session.get(f"{self.sandbox.url}/_sandbox/stats") as r:
            return dict(await r.json())

    async def slack_fault(self, **fault: Any) -> None:
        async with self.session.post(f"{self.slack.url}/_bench/faults", json=fault) as r:
            if r.status != 200:
                raise RuntimeError(f"fake Slack refused the fault {fault}: {await r.text()}")

    async def clear_slack_faults(self) -> None:
        async with self.session.delete(f"{self.slack.url}/_bench/faults") as r:
            r.raise_for_status()

    async def poll_slack(self) -> Ledger:
        """Read the fake Slack's feed up to now into the ledger."""
        while True:
            url = f"{self.slack.url}/_bench/events?after={self.ledger._next}"
            async with self.session.get(url) as r:
                page = await r.json()
            for event in page["events"]:
                self.ledger.apply(event)
            self.ledger._next = page["next"]
            if not page["events"]:
                return self.ledger

    async def send_imagine(self, user: str, prompt: str) -> int:
        """A signed `/imagine` from `user` in the bench channel; the HTTP status of the ack."""
        fields = command_fields(
            self._addresses,
            "/imagine",
            prompt,
            user_id=user,
            user_name=user.lower(),
            channel_id=CHANNEL,
            channel_name="faults",
        )
        body = urlencode(fields)
        stamp = int(time.time())
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(stamp),
            "x-slack-signature": sign(SIGNING_SECRET, stamp, body),
        }
        try:
            async with self.session.post(
                f"{self.serve_url}/slack/events",
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r:
                await r.read()
                return r.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    # ---- the database ---------------------------------------------------------------------

    async def jobs(self, users: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each user's jobs as rows (every column), by user id."""
        found: dict[str, list[dict[str, Any]]] = {user: [] for user in users}
        if not users:
            return found
        async with self.engine.connect() as conn:
            try:
                rows = await conn.execute(text("SELECT * FROM job"))
            except Exception:  # before serve migrated the schema
                return found
            for row in rows.mappings():
                if row["user_id"] in found:
                    found[row["user_id"]].append(dict(row))
        return found

    async def counters(self) -> dict[str, list[dict[str, Any]]]:
        """Usage counters of users, by user id (from the subject 'platform:workspace:user')."""
        found: dict[str, list[dict[str, Any]]] = {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT * FROM usage_counter WHERE scope = 'user'"))
            for row in rows.mappings():
                found.setdefault(str(row["subject"]).rsplit(":", 1)[-1], []).append(dict(row))
        return found


def slack_env(slack: Child) -> dict[str, str]:
    """What `conjure serve` needs to speak to the fake Slack over HTTP."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"{slack.url}/api/",
    }


@contextlib.asynccontextmanager
async def running_rig(
    work: Path,
    db: str,
    postgres_url: str,
    *,
    platform_env: dict[str, str] | None = None,
    serve_env: dict[str, str] | None = None,
) -> AsyncIterator[Rig]:
    """The sandbox and the fake Slack running, a fresh database; serve not started yet. It
    will speak to the fake Slack, and to whatever else `platform_env` names (Discord)."""
    logs = _fresh_logs(work)
    secret = generate_webhook_secret()
    children: list[Child] = []
    try:
        async with database(db, work, postgres_url) as database_url:
            sandbox = start_sandbox(logs, work, secret)
            children.append(sandbox)
            slack = start_fake_slack(logs, work)
            children.append(slack)
            await wait_ready(sandbox, "/_sandbox/stats")
            await wait_ready(slack, "/_bench/events")
            env = {**slack_env(slack), **(platform_env or {})}
            engine = create_engine(database_url)
            try:
                async with aiohttp.ClientSession() as session:
                    rig = Rig(
                        work,
                        sandbox,
                        slack,
                        database_url,
                        engine,
                        session,
                        free_port(),
                        secret,
                        env,
                        dict(serve_env or {}),
                    )
                    try:
                        yield rig
                    finally:
                        rig.stop_serve()
            finally:
                await engine.dispose()
    finally:
        for child in reversed(children):
            stop(child)


def _fresh_logs(work: Path) -> Path:
    """The log directory, without a kept directory's last run (its database, its logs)."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in (*work.glob("bench.db*"), *logs.glob("*.log")):
        old.unlink()
    return logs


async def wait_until(check: Any, timeout: float, interval: float = 0.02) -> bool:
    """Until the coroutine function `check()` returns something true; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return False
