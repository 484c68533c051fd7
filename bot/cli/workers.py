"""`conjure serve --workers N`: N processes accepting on one socket, under a supervisor.

The parent checks the settings, migrates once and binds the port itself (so a port in use is the
same one-line error as with one process), then starts N copies of `conjure serve` that inherit
the listening socket's descriptor and each run the whole serve stack on it. The kernel hands
each new connection to one of them. Work that must happen once (the Discord gateway, the
sweeper, recovery) is the leader's: see bot.leadership.

Each worker tells the parent on its stdout that it is listening (`READY`), or the one line that
stopped it (`FAILED`). A worker that fails before it is ready the first time stops the whole
start with that line, printed once; one that dies later (killed, crashed) is started again, after
a pause that grows while it keeps dying young. SIGTERM or SIGINT stops every worker gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("conjure.workers")

READY, FAILED = "conjure-worker: ready", "conjure-worker: failed "
WORKER_HEADER = b"conjure-worker"  # which worker answered: for an operator behind the port
STOP_TIMEOUT = 30.0  # seconds a worker has to finish its requests before it is killed
MAX_PAUSE = 30.0  # seconds at most between restarts of a worker that keeps dying young
YOUNG = 10.0  # a worker that dies sooner than this after its start is restarted after a pause


# ---- in a worker ------------------------------------------------------------------------------


def tell_parent(line: str) -> None:
    """A status line for the supervisor, which reads the worker's stdout (if it is still
    there: a parent that is gone is noticed by `until_stopped`)."""
    with contextlib.suppress(BrokenPipeError):
        print(line, flush=True)


def tagged(app: ASGIApp, index: int) -> ASGIApp:
    """`app`, with a `Conjure-Worker: <index>` header on every HTTP response."""
    value = str(index).encode()

    async def with_header(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (WORKER_HEADER, value)]
            await send(message)

        await app(scope, receive, send_tagged)

    return with_header


def inherited_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


async def until_stopped() -> None:
    """Until SIGTERM or SIGINT, or until the parent is gone (then the port is nobody's to
    supervise, and a worker left behind would hold it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()
        if os.getppid() != parent:
            log.warning("the supervising process is gone; stopping")
            return


# ---- in the parent ----------------------------------------------------------------------------


@dataclass
class Worker:
    """One slot of N: its current process and what it last said."""

    index: int
    process: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None
    started_at: float = 0.0
    pause: float = 0.0
    reader: asyncio.Task[None] | None = None
    drain: asyncio.Task[None] | None = None


class Supervisor:
    """Starts, watches and stops the workers of one `conjure serve --workers N`."""

    def __init__(self, command: Callable[[int], list[str]], sock: socket.socket, count: int):
        self._command = command
        self._sock = sock
        self.workers = [Worker(index) for index in range(count)]
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def start(self) -> Worker | None:
        """Start every worker and wait until all listen (or SIGTERM/SIGINT came meanwhile);
        the first that failed, if any did."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        for worker in self.workers:
            await self._spawn(worker)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            for worker in self.workers:
                assert worker.process is not None and worker.reader is not None
                # the reader returns at READY, FAILED or the end of the worker's output
                await asyncio.wait({worker.reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if self.stopping:
                    return None
                if not worker.ready.is_set():
                    await worker.process.wait()
                    return worker
        finally:
            stopping.cancel()
        return None

    async def watch(self) -> Worker | None:
        """Restart workers that die until SIGTERM/SIGINT; a worker whose restart fails with a
        configuration error (exit 2) ends the watch: that worker is returned."""
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self.stopping:
                exits = {
                    asyncio.create_task(w.process.wait()): w for w in self.workers if w.process
                }
                done, _ = await asyncio.wait(
                    {stopping, *exits}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in exits:
                    task.cancel()
                for task in done - {stopping}:
                    worker = exits[task]
                    if await self._died(worker):
                        return worker
            return None
        finally:
            stopping.cancel()

    async def stop(self) -> None:
        """SIGTERM every worker; SIGKILL those still running after STOP_TIMEOUT."""
        self._stopping.set()
        running = [w.process for w in self.workers if w.process and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.gather(*(process.wait() for process in running))
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("worker pid %d did not stop in time; killing it", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(process.wait() for process in running))
        for worker in self.workers:
            for task in (worker.reader, worker.drain):
                if task is not None:
                    await task
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

    async def _died(self, worker: Worker) -> bool:
        """Note a worker's end and start it again; True when it must not be (config error)."""
        assert worker.process is not None
        code = worker.process.returncode
        if worker.reader is not None:
            await worker.reader
        if self.stopping:
            return False
        if not worker.ready.is_set() and code == 2:
            return True
        lived = time.monotonic() - worker.started_at
        worker.pause = 0.0 if lived >= YOUNG else min(MAX_PAUSE, max(0.5, worker.pause * 2))
        reason = f": {worker.failure}" if worker.failure else ""
        log.warning(
            "worker %d (pid %d) exited with %s%s; starting it again%s",
            worker.index,
            worker.process.pid,
            _exit_status(code),
            reason,
            f" in {worker.pause:g}s" if worker.pause else "",
        )
        if worker.pause:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(worker.pause):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return False
        await self._spawn(worker)
        return False

    async def _spawn(self, worker: Worker) -> None:
        worker.ready = asyncio.Event()
        worker.failure = None
        worker.started_at = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            *self._command(worker.index),
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(self._sock.fileno(),),
        )
        worker.reader = asyncio.create_task(_read_status(worker))


async def _read_status(worker: Worker) -> None:
    """Read a worker's stdout: its status lines until READY, then pass the rest through (so a
    worker never blocks on a full pipe). Returns at READY or FAILED; drains in the background."""
    assert worker.process is not None and worker.process.stdout is not None
    stdout = worker.process.stdout
    async for raw in stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        if line == READY:
            worker.ready.set()
            worker.drain = asyncio.create_task(_pass_through(stdout))
            return
        if line.startswith(FAILED):
            worker.failure = line.removeprefix(FAILED)
            return
        print(line, flush=True)


async def _pass_through(stdout: asyncio.StreamReader) -> None:
    async for raw in stdout:
        sys.stdout.write(raw.decode(errors="replace"))
        sys.stdout.flush()


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def worker_command(
    args: argparse.Namespace, sock: socket.socket, count: int
) -> Callable[[int], list[str]]:
    """How worker `index` is started: this same `conjure serve`, on the inherited socket, told
    how many workers there are (each takes its share of what is shared, such as a workspace's
    status edits)."""

    def command(index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bot.cli",
            *(["--debug"] if args.debug else []),
            "serve",
            *("--host", str(args.host), "--port", str(args.port), "--workers", str(count)),
            *("--worker-socket", str(sock.fileno()), "--worker-index", str(index)),
        ]

    return command
