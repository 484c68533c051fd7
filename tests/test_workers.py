"""`conjure serve --workers N`: N processes on one port under a supervisor, the singletons (the
Discord gateway, the sweeper) in one of them only, and what happens when a worker dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bot.cli.main import main
from tests.discord_harness import imagine_over_gateway, serve_env
from tests.fakes.discord_api import running_fake_discord, running_fake_gateway
from tests.fakes.slack_api import BOT_TOKEN, serve_fake_slack
from tests.harness import port_for_another_process, start_serve
from tests.sandbox_fixtures import SandboxServer
from tests.slack_harness import SIGNING_SECRET, command_fields, signed_headers

# The timeouts below are generous: on a loaded machine starting three Pythons takes a while.


@dataclass
class Served:
    process: asyncio.subprocess.Process
    http: httpx.AsyncClient
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def workers(self) -> list[int]:
        """The pids of the supervisor's children (Linux: /proc)."""
        pid = self.process.pid
        with contextlib.suppress(FileNotFoundError):
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return []


@contextlib.asynccontextmanager
async def serve(
    sandbox: SandboxServer,
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    stop: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[Served]:
    """`python -m bot.cli serve *args` on a free port, healthy; stopped with `stop` afterwards,
    when it must exit 0 with no traceback and leave no worker behind."""
    port = port_for_another_process()
    url = f"http://127.0.0.1:{port}"
    process = await start_serve(sandbox, tmp_path, port, env, *args)
    served = Served(process, httpx.AsyncClient(base_url=url, timeout=10))
    readers = [
        asyncio.create_task(_collect(process.stdout, served.stdout)),
        asyncio.create_task(_collect(process.stderr, served.stderr)),
    ]
    children: list[int] = []
    try:
        async with served.http:
            await _wait_healthy(served)
            children = served.workers()
            yield served
    finally:
        children += served.workers()
        if process.returncode is None:
            process.send_signal(stop)
        await asyncio.wait_for(process.wait(), timeout=60)
        await asyncio.gather(*readers)
    log = "\n".join(served.stderr)
    assert process.returncode == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    for pid in children:  # every worker stopped with its parent
        assert _gone(pid), log[-3000:]


def _gone(pid: int) -> bool:
    """No such process, or only its exit status left (a zombie)."""
    with contextlib.suppress(FileNotFoundError):
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    return True


def _pid_in(lock: Path) -> int:
    """The pid the leader wrote into its lock file (bot.leadership.FileLock)."""
    return int(lock.read_text())


async def _collect(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
    assert stream is not None
    async for raw in stream:
        lines.append(raw.decode(errors="replace").rstrip("\n"))


async def _wait_healthy(served: Served) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if served.process.returncode is not None:
            raise AssertionError("serve exited: " + "\n".join(served.stderr)[-3000:])
        with contextlib.suppress(httpx.TransportError):
            if (await served.http.get("/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("serve did not become healthy in 90 s")


async def _until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_two_workers_on_postgres_serve_each_slack_command_once(
    sandbox_server: SandboxServer, tmp_path: Path, postgres_url: str
) -> None:
    """Commands sent to the one port, each twice (Slack retries), on fresh connections: both
    workers answer some, and each command becomes one job, announced and delivered once. The
    database is at head, so neither the parent nor a worker ever imports Alembic."""
    async with serve_fake_slack() as fake:
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.api_url,
            "CONJURE_DATABASE_URL": postgres_url,
            "CONJURE_WORKERS": "2",  # the setting; --workers overrides it (see below)
            "PYTHONPROFILEIMPORTTIME": "1",  # every process lists what it imports, on stderr
        }
        async with serve(sandbox_server, tmp_path, env, stop=signal.SIGINT) as served:
            assert len(served.workers()) == 2
            answered: list[str] = []
            sent = 0
            # The kernel picks the worker. Batches are small: PostgreSQL's connections are
            # shared with the rest of the suite, and each worker has a pool of its own.
            while len(set(answered)) < 2 and sent < 30:
                batch = [
                    urlencode(command_fields(fake, "/imagine", f"a lighthouse number {sent + i}"))
                    for i in range(5)
                ]
                sent += len(batch)
                acks = await asyncio.gather(*(_post_new_connection(served, b) for b in batch * 2))
                assert all(ack.status_code == 200 for ack in acks)
                answered += [ack.headers["conjure-worker"] for ack in acks]
            assert set(answered) == {"0", "1"}
            await _until(lambda: len(fake.shared_uploads()) >= sent)
            await asyncio.sleep(0.3)  # a duplicate, were there one, would show by now

    parents = fake.channel_messages("C0GENERAL")
    assert len(parents) == sent  # one status message per command, not per delivery
    uploads = fake.shared_uploads()
    assert len(uploads) == sent
    assert sorted(u.thread_ts for u in uploads) == sorted(p.ts for p in parents)
    [listening] = served.stdout
    assert listening.endswith("(slack; 2 workers)")
    imported = [line.rpartition("|")[2].strip() for line in served.stderr if "import time:" in line]
    assert "bot.runtime" in imported and "bot.cli.workers" in imported  # the workers' and parent's
    assert not [name for name in imported if name.split(".")[0] in ("alembic", "mako")]


async def _post_new_connection(served: Served, body: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=str(served.http.base_url), timeout=10) as http:
        return await http.post(
            "/slack/events", content=body, headers=signed_headers(SIGNING_SECRET, body)
        )


async def test_the_gateway_is_one_workers_and_moves_when_it_is_killed(
    sandbox_server: SandboxServer, tmp_path: Path, sqlite_url: str
) -> None:
    """Two workers on SQLite: one connects to the gateway (the one holding the flock). kill -9
    of it: the supervisor starts a new worker, and the other takes the gateway over, which
    then serves an interaction once."""
    database = sqlite_url.replace("sqlite+aiosqlite:", "sqlite:")
    lock = Path(sqlite_url.removeprefix("sqlite+aiosqlite:///") + ".leader.lock")
    async with running_fake_discord() as fake, running_fake_gateway(fake) as gateway:
        env = {**serve_env(fake, gateway), "CONJURE_DATABASE_URL": database}
        async with serve(sandbox_server, tmp_path, env, "--workers", "2") as served:
            first = served.workers()
            await _until(lambda: gateway.connected == 1 and lock.read_text().strip())
            leader = _pid_in(lock)
            assert leader in first
            await asyncio.sleep(0.3)
            assert len(gateway.identifies) == 1  # the other worker stays off the gateway

            os.kill(leader, signal.SIGKILL)
            await _until(lambda: len(gateway.identifies) == 2 and gateway.connected == 1)
            successor = _pid_in(lock)
            assert successor != leader
            await _until(lambda: len(served.workers()) == 2 and leader not in served.workers())
            assert successor in served.workers()

            message = await imagine_over_gateway(fake, gateway, "a lighthouse at dusk")
    assert "✅ done" in message["content"]
    assert gateway.connected == 0
    assert any("worker" in line and "SIGKILL" in line for line in served.stderr)


async def test_a_worker_that_cannot_start_stops_the_start_with_one_line(
    sandbox_server: SandboxServer, tmp_path: Path, sqlite_url: str
) -> None:
    """A rejected DISCORD_TOKEN is found by the workers (they log in): said once, exit 2, and
    no worker is started again."""
    async with running_fake_discord() as fake:
        port = port_for_another_process()
        process = await start_serve(
            sandbox_server,
            tmp_path,
            port,
            {
                "DISCORD_TOKEN": "not-the-token",
                "DISCORD_API_URL": fake.api_url,
                "CONJURE_DATABASE_URL": sqlite_url,
            },
            *("--workers", "2"),
            webhooks=False,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 2
    assert stdout == b""
    [line] = stderr.decode().splitlines()
    assert line.startswith("conjure: DISCORD_TOKEN: Discord rejected the token")


def test_workers_must_be_one_or_more(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", "0"]) == 2
    assert capsys.readouterr().err == (
        "conjure: --workers: must be 1 or more (the processes serving the port)\n"
    )


def test_conjure_workers_must_be_one_or_more(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONJURE_WORKERS", "0")
    assert main(["serve"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("conjure: CONJURE_WORKERS: ")


def test_a_port_in_use_is_the_parents_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    """The parent binds before any worker starts: the same line as with one process."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    monkeypatch.setenv("CONJURE_DATABASE_URL", sqlite_url)
    from bot.serving import bind_socket

    with bind_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        code = main(["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "3"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"conjure: --host/--port: cannot listen on 127.0.0.1:{port} (address already in use); "
        "choose another --port\n"
    )


def test_each_worker_is_told_how_many_workers_share_the_port() -> None:
    """So that each takes its share of what the workers share (a workspace's status edits)."""
    import argparse
    import socket

    from bot.cli.workers import worker_command

    args = argparse.Namespace(debug=False, host="127.0.0.1", port=8080)
    with socket.socket() as sock:
        command = worker_command(args, sock, 3)(1)
    assert command[command.index("--workers") + 1] == "3"
    assert command[command.index("--worker-index") + 1] == "1"
