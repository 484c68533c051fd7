"""The servers under test, each its own process on loopback, and the database they use.

The sandbox (speed 0), the fake Slack Web API, `conjure serve` and the bare bolt app. `serve`
runs in an empty scratch directory, so no stray `.env` or `conjure.toml` changes what is
measured, with a fresh SQLite file, or a fresh PostgreSQL database that is dropped afterwards,
which `conjure migrate` brings to head before any serve starts, as a deployment does.

`serve` may be several processes: `workers` > 1 passes `--workers N` (N processes sharing one
port), and `instances` > 1 starts that many separate `conjure serve`, each on its own port with
its own CONJURE_PUBLIC_URL (so each job's webhooks come back to the instance that started it),
all sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.procs import Child, child_env, free_port, start, stop, wait_ready
from bot.sandbox.config import generate_webhook_secret
from tests.fakes.slack_api import BOT_TOKEN

SIGNING_SECRET = "bench-signing-secret-0123456789ab"
SANDBOX_TOKEN = "r8_bench_token"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
POLL_INTERVAL = 3600  # seconds: see serve_env below


@dataclass
class Stack:
    """Everything that runs: the processes and the secrets they share."""

    sandbox: Child
    slack: Child
    serves: list[Child]  # one per `conjure serve` instance (each may have worker children)
    bare: Child
    webhook_secret: str
    database_url: str

    @property
    def serve(self) -> Child:
        """The first instance."""
        return self.serves[0]

    @property
    def slack_api_url(self) -> str:
        return f"{self.slack.url}/api/"


@contextlib.asynccontextmanager
async def database(kind: str, work: Path, postgres_url: str) -> AsyncIterator[str]:
    """A fresh database URL: a SQLite file in `work`, or a new PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{work / 'bench.db'}"
        return
    name = f"conjure_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{postgres_url}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{postgres_url}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def start_sandbox(logs: Path, cwd: Path, webhook_secret: str, speed: float = 0) -> Child:
    """`conjure sandbox` on a free port, with the bench's token and `webhook_secret`."""
    port = free_port()
    args = [
        *("-m", "bot.cli", "sandbox", "--host", "127.0.0.1", "--port", str(port)),
        *("--speed", f"{speed:g}", "--token", SANDBOX_TOKEN, "--webhook-secret", webhook_secret),
    ]
    return start("sandbox", args, port, logs, env=child_env({}), cwd=cwd)


def start_fake_slack(logs: Path, cwd: Path) -> Child:
    """The fake Slack Web API (bench/fake_slack_server.py) on a free port."""
    port = free_port()
    args = ["-m", "bench.fake_slack_server", "--port", str(port)]
    return start("fake-slack", args, port, logs, env=child_env({}), cwd=cwd)


def slack_serve_env(
    slack: Child, sandbox: Child, webhook_secret: str, database_url: str
) -> dict[str, str]:
    """What `conjure serve` needs to take commands from the fake Slack and run them on the
    sandbox, recording them in `database_url`."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"{slack.url}/api/",
        "REPLICATE_API_TOKEN": SANDBOX_TOKEN,
        "REPLICATE_BASE_URL": sandbox.url,
        "CONJURE_WEBHOOK_SECRET": webhook_secret,
        "CONJURE_DATABASE_URL": database_url,
    }


def start_serve(
    name: str, logs: Path, cwd: Path, extra_env: dict[str, str], workers: int = 1
) -> Child:
    """One `conjure serve` on a free port, its CONJURE_PUBLIC_URL that port."""
    port = free_port()
    env = child_env(
        {
            **extra_env,
            "CONJURE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            # Held jobs outlive the sweeper's 5 minutes of silence on a long run: each is then
            # read once from the sandbox, not every 2 s (which would swamp it).
            "CONJURE_POLL_INTERVAL": str(POLL_INTERVAL),
        }
    )
    args = ["-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    return start(name, args, port, logs, env=env, cwd=cwd)


async def migrate_first(logs: Path, cwd: Path, env: dict[str, str]) -> None:
    """`conjure migrate` before any serve starts, as a deployment does (README: Running it):
    serve then finds the schema at head and never loads Alembic (storage.schema_head)."""
    with (logs / "migrate.log").open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "bot.cli", "migrate"),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(env),
            cwd=cwd,
        )
        if await asyncio.wait_for(process.wait(), timeout=120) != 0:
            raise RuntimeError(f"conjure migrate failed:\n{(logs / 'migrate.log').read_text()}")


@contextlib.asynccontextmanager
async def running_stack(
    kind: str, work: Path, postgres_url: str, *, workers: int = 1, instances: int = 1
) -> AsyncIterator[Stack]:
    """Start every server, wait until each answers, and stop them all on exit."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    scratch = work / "serve"
    scratch.mkdir(exist_ok=True)
    secret = generate_webhook_secret()
    children: list[Child] = []
    try:
        async with database(kind, work, postgres_url) as database_url:
            sandbox = start_sandbox(logs, scratch, secret)
            children.append(sandbox)
            slack = start_fake_slack(logs, scratch)
            children.append(slack)
            await wait_ready(sandbox, "/_sandbox/stats")
            await wait_ready(slack, "/_bench/events")

            serve_env = slack_serve_env(slack, sandbox, secret, database_url)
            await migrate_first(logs, scratch, serve_env)
            serves: list[Child] = []
            for number in range(1, instances + 1):
                name = "serve" if number == 1 else f"serve-{number}"
                serves.append(start_serve(name, logs, scratch, serve_env, workers))
                children.append(serves[-1])
            port = free_port()
            bare = start(
                "bare-bolt",
                ["-m", "bench.bare_bolt", "--port", str(port), "--api-url", f"{slack.url}/api/"],
                port,
                logs,
                env=child_env(
                    {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
                ),
                cwd=scratch,
            )
            children.append(bare)
            for serve in serves:
                await wait_ready(serve, "/healthz", timeout=60)
            await wait_ready(bare, "/slack/events")
            try:
                yield Stack(sandbox, slack, serves, bare, secret, database_url)
            finally:
                for child in reversed(children):
                    stop(child)
    finally:
        for child in children:
            stop(child)
