"""The sandbox's Starlette app: routes, the /v1 guard, problem-shaped 404/405s, and a lifespan
that cancels the sandbox's background work on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from bot.sandbox import api_catalog, api_files, api_predictions, control, streams
from bot.sandbox.config import SandboxConfig
from bot.sandbox.guard import V1Guard
from bot.sandbox.problems import problem
from bot.sandbox.state import Sandbox


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


def create_sandbox_app(config: SandboxConfig | None = None) -> Starlette:
    """A Replicate-compatible app; its `Sandbox` is `app.state.sandbox`."""
    sandbox = Sandbox(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sandbox.aclose()

    app = Starlette(
        routes=[
            *api_predictions.routes,
            *api_files.routes,
            *api_catalog.routes,
            *control.routes,
            *streams.routes,
        ],
        middleware=[Middleware(V1Guard, sandbox=sandbox)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
