"""Run an ASGI app under uvicorn on a socket we bind ourselves.

Binding first means the caller knows the real port before the server starts (port 0 picks a free
one), which the demo, the tests and the benchmarks all need to wire servers to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from bot.http_head_limit import BoundedHttpToolsProtocol

T = TypeVar("T")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (not on Windows), else asyncio's default.

    The server is bound by its event loop's sockets and callbacks: uvloop's (libuv, in C) take a
    fraction of the CPU per request, webhook and Slack call that asyncio's selector loop does.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest event loop available; SIGTERM stops it gracefully.

    asyncio turns Ctrl-C (SIGINT) into a cancellation of `main`, which unwinds it: a server stops
    accepting, finishes what is in flight and closes its connections. SIGTERM, how systemd,
    Docker and Kubernetes stop a process, had no handler and killed it where it stood; it now
    cancels `main` the same way, and the process then exits 0 (SystemExit).
    """
    terminated = False

    async def until_done_or_terminated() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def terminate() -> None:
            nonlocal terminated
            if not terminated and task is not None:  # a second SIGTERM: already stopping
                terminated = True
                task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, terminate)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not main thread
            return await main
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        try:
            return runner.run(until_done_or_terminated())
        except asyncio.CancelledError:
            if terminated:
                raise SystemExit(0) from None
            raise


YOUNG_COLLECTION_AFTER = 10_000  # new container objects between two young collections


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, SQLAlchemy and pydantic caches, clients) out of the
    garbage collector's full passes, and collect from now on.

    A full (generation 2) collection walks every tracked object; with a started server's
    hundreds of thousands of them, each pass held the event loop for 50-60 ms, which was the
    p99 of slash-command acks under load. Frozen objects are never scanned again.

    A young collection waits for 10,000 new container objects instead of 700: a server with
    thousands of jobs in flight allocated its way through a collection every few requests, and
    each one that reached the older generations walked the jobs again. Measured in the bench,
    serve spent about a quarter less CPU per webhook delivered (2.4-3.2 -> 1.9-2.2 ms); garbage
    in cycles waits a little longer to be freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, *gc.get_threshold()[1:])
    gc.enable()  # off during the CLI's start-up (bot.cli.main)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process and stops promptly.

    uvicorn notices `should_exit` on a 0.1 s tick, then sleeps a fixed 0.1 s and polls its
    connections every 0.1 s: 0.2-0.3 s per stop even when nothing is in flight. Here a stop wakes
    the main loop at once and the same graceful shutdown (no new connections, in-flight
    responses finished, idle keep-alive connections closed, lifespan shut down) polls finely.
    """

    _POLL = 0.005  # seconds between checks while connections and requests finish

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()
        self._exit_requested = asyncio.Event()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit_requested.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.started_event.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):  # on_tick also refreshes the Date header
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._exit_requested.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                # uvicorn's sets of connections and request tasks have no event to wait on
                while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
                    await asyncio.sleep(self._POLL)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every kept-alive request waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> AsyncIterator[str]:
    """Serve `app` in this event loop for the duration of the block; yields its base URL.

    Pass `sock` (from `bind_socket`) when the URL must be known before the app is built.
    """
    sock = sock or bind_socket(host, port)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,  # uvicorn's lines go through Conjure's own format (bot.logs)
        lifespan="on",
        access_log=False,
        http=BoundedHttpToolsProtocol,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    started = asyncio.create_task(server.started_event.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not server.started:
            task.result()  # re-raise a start-up failure
            raise RuntimeError("server stopped before it started")
        yield socket_url(sock)
    finally:
        started.cancel()
        server.request_exit()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()
