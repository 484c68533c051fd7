"""Run an ASGI app under uvicorn on a socket we bind ourselves.

Binding first means the caller knows the real port before the server starts (port 0 picks a free
one), which the demo, the tests and the benchmarks all need to wire servers to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

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
    """`asyncio.run(main)` on the fastest event loop available."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, SQLAlchemy and pydantic caches, clients) out of the
    garbage collector's full passes.

    A full (generation 2) collection walks every tracked object; with a started server's
    hundreds of thousands of them, each pass held the event loop for 50-60 ms, which was the
    p99 of slash-command acks under load. Frozen objects are never scanned again.
    """
    gc.collect()
    gc.freeze()


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raise a start-up failure
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()
