"""What stands in front of every `/v1` route: the bearer token check and injected HTTP faults.

Output files (`/files/...`, replicate.delivery's stand-in) take no token, but a fault whose
`path_prefix` names them applies there too: a file host that fails, throttles, or hangs.

Done as plain ASGI so a "delay" fault can let the real handler run (a create IS created) and
then hold back its answer, which is how a lost or timed-out response looks to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.sandbox.problems import fault_response, unauthenticated

if TYPE_CHECKING:
    from bot.sandbox.state import Sandbox


async def hold(receive: Receive, seconds: float, until: asyncio.Event | None = None) -> bool:
    """Wait `seconds`, or until `until` is set, or the client hangs up (then returns True).

    Watching for the hang-up keeps a held request from outliving its client, so a server
    shutdown is never stuck behind a request nobody is waiting for any more.
    """
    hangup = asyncio.ensure_future(_disconnected(receive))
    waiters: set[asyncio.Future[object]] = {hangup}
    if until is not None:
        waiters.add(asyncio.ensure_future(until.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
    return hangup.done() and not hangup.cancelled()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class V1Guard:
    """ASGI middleware: 401 without the sandbox token, then apply any matching HTTP fault."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        files = path.startswith(("/files/", "/stream/"))  # capability URLs: no token
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/") or files):
            await self.app(scope, receive, send)
            return
        if not files and not self._authorized(scope):
            await unauthenticated()(scope, receive, send)
            return
        fault = self.sandbox.faults.take_http(scope["method"], path)
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.status is not None:
            if fault.delay > 0:
                await hold(receive, fault.delay)
            await fault_response(fault.status, fault.response_headers())(scope, receive, send)
            return
        held: list[Message] = []

        async def keep(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, keep)
        await hold(receive, fault.delay)
        for message in held:
            await send(message)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").strip().partition(" ")
                return scheme.lower() == "bearer" and token.strip() == self.sandbox.config.api_token
        return False
