"""A running Conjure for end-to-end tests: the real app on loopback, wired to the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.console import ConsoleAdapter
from adapters.platforms import attached
from bot.app import create_app
from bot.config import Settings
from bot.jobs import JobService
from bot.leadership import Leadership
from bot.runtime import Runtime
from bot.serving import bind_socket, serve_app, socket_url
from storage.engine import statement_engines
from storage.jobs import JobStore
from storage.models import Job
from storage.rows import from_row


@dataclass
class Conjure:
    url: str
    runtime: Runtime
    console: ConsoleAdapter
    output: io.StringIO
    http: httpx.AsyncClient

    @property
    def service(self) -> JobService:
        return self.runtime.service


def make_settings(
    sandbox: Any, database_url: str, *, webhooks: bool = True, public_url: str = "", **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "replicate_api_token": sandbox.token,
        "replicate_base_url": sandbox.url,
        "conjure_webhook_secret": sandbox.webhook_secret,
        "conjure_database_url": database_url,
        "conjure_public_url": public_url if webhooks else None,
        "conjure_poll_interval": 0.05,
        # Each test sees every status edit its progress_interval allows; the per-workspace
        # budget (bot.updates) is tested on its own, with the default.
        "conjure_status_edits_per_minute": 1e6,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_conjure(
    sandbox: Any,
    database_url: str,
    output_dir: Path,
    *,
    webhooks: bool = True,
    leadership: Leadership | None = None,
    **extra: Any,
) -> AsyncIterator[Conjure]:
    """Conjure's app served on loopback, with the console adapter, talking to `sandbox`; with
    `leadership`, its recovery and sweeper run as the leader's duty, as under `conjure serve`."""
    sock = bind_socket()
    settings = make_settings(
        sandbox, database_url, webhooks=webhooks, public_url=socket_url(sock), **extra
    )
    runtime = await Runtime.start(settings, progress_interval=0.0)
    runtime.leadership = leadership
    output = io.StringIO()
    console = ConsoleAdapter(runtime.commands, output_dir, out=output, followups=runtime.followups)
    try:
        with attached(runtime.service, console):
            async with serve_app(create_app(runtime), sock=sock) as url:
                async with httpx.AsyncClient(base_url=url) as http:
                    yield Conjure(url, runtime, console, output, http)
    finally:
        await runtime.aclose()


ROOT = Path(__file__).resolve().parent.parent


async def start_serve(
    sandbox: Any, cwd: Path, port: int, env: dict[str, str], *args: str, webhooks: bool = True
) -> asyncio.subprocess.Process:
    """`python -m bot.cli serve` on 127.0.0.1:`port` in `cwd`, running models on `sandbox` (its
    webhooks to that port unless `webhooks` is False), with only these variables and `env` set
    (no .env of the developer's leaks in); stdout and stderr piped."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "REPLICATE_API_TOKEN": sandbox.token,
        "REPLICATE_BASE_URL": sandbox.url,
    }
    if webhooks:
        base["CONJURE_WEBHOOK_SECRET"] = sandbox.webhook_secret
        base["CONJURE_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args),
        cwd=cwd,
        env={**base, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def port_for_another_process(host: str = "127.0.0.1") -> int:
    """A free port on `host` for a server that another process will bind.

    Not one from `bind_socket()` (port 0): once that socket is closed the kernel may hand the same
    ephemeral port to any socket in the meantime (a client's connection, another test's server
    in a parallel worker) and the child fails with "address already in use". Ports below the
    ephemeral range are only ever taken by an explicit bind.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ranges:
            first_ephemeral = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 49152  # IANA's dynamic range, used by Windows and macOS
    for _ in range(100):
        port = random.randrange(20000, first_ephemeral)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port below {first_ephemeral} on {host}")


async def settle(conjure: Conjure, sandbox: Any) -> None:
    """Until the sandbox has sent everything and Conjure has delivered everything."""
    await sandbox.sandbox.wait_idle()
    await conjure.service.wait_idle()


async def all_jobs(store: JobStore) -> list[Job]:
    """Every job in `store`'s database, oldest first: what the tests check the table by."""
    async with store.reader.connect() as conn:
        rows = (await conn.execute(select(Job.__table__).order_by(Job.created_at))).all()
    return [from_row(Job, row._mapping) for row in rows]


@contextlib.contextmanager
def database_not_answering(engine: AsyncEngine, touching: str = "") -> Iterator[None]:
    """Every statement of `engine` (those naming `touching`, if given) fails as a database that
    cannot be reached does, until the block ends."""
    with _statements_failing(
        engine,
        touching,
        lambda sql, params: OperationalError(sql, params, ConnectionRefusedError()),
    ):
        yield


@contextlib.contextmanager
def database_refusing_the_sql(engine: AsyncEngine, touching: str = "") -> Iterator[None]:
    """Every statement of `engine` (those naming `touching`) is refused as SQL the database
    cannot run: a mistake in what Conjure asked, not an outage."""
    with _statements_failing(
        engine, touching, lambda sql, params: ProgrammingError(sql, params, Exception("no such"))
    ):
        yield


@contextlib.contextmanager
def _statements_failing(
    engine: AsyncEngine, touching: str, error: Callable[[str, Any], Exception]
) -> Iterator[None]:
    def fail(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if touching in statement:
            raise error(statement, params)

    engines = statement_engines(engine)
    for each in engines:
        event.listen(each, "before_cursor_execute", fail)
    try:
        yield
    finally:
        for each in engines:
            event.remove(each, "before_cursor_execute", fail)
