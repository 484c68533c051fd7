"""Where adapters meet the core: the one place a platform is started and attached to the service.

Each platform package has a `lifecycle` module whose `running(runtime)` is an async context
manager: it checks its credentials, starts what it needs (a Socket Mode connection, a Discord
gateway client) and yields a `RunningPlatform` (its adapter and the HTTP routes it serves),
stopping everything on exit. This module attaches the adapter to the job service for exactly as
long as the platform runs. A platform with no credentials configured is simply not started.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.routing import BaseRoute

from adapters.running import RunningPlatform
from bot.adapter import ChatAdapter
from bot.config import Settings
from bot.jobs import JobService
from bot.runtime import Runtime

log = logging.getLogger(__name__)

# Seconds a stop waits for the jobs' work in flight before closing the platforms: short of
# Docker's 10 s between SIGTERM and SIGKILL, with room for the HTTP server's own stop.
DRAIN_SECONDS = 5.0


def configured_platforms(settings: Settings) -> list[str]:
    """The platforms whose credentials are set."""
    platforms = []
    if settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token):
        platforms.append("slack")
    if settings.discord_token:
        platforms.append("discord")
    return platforms


@contextlib.contextmanager
def attached(service: JobService, adapter: ChatAdapter) -> Iterator[ChatAdapter]:
    """`adapter` posts its platform's jobs for the duration of the block."""
    service.add_adapter(adapter)
    try:
        yield adapter
    finally:
        service.remove_adapter(adapter.platform)


@contextlib.asynccontextmanager
async def start_platforms(runtime: Runtime) -> AsyncIterator[list[BaseRoute]]:
    """Run every configured platform for the duration of the block; yields the HTTP routes
    they serve."""
    routes: list[BaseRoute] = []
    async with contextlib.AsyncExitStack() as stack:
        for name in configured_platforms(runtime.settings):
            routes += (await stack.enter_async_context(run_platform(runtime, name))).routes
        try:
            yield routes
        finally:
            await drain(runtime.service)


async def drain(service: JobService, timeout: float | None = None) -> None:
    """At a stop, before the platforms close: let the jobs' work in flight finish (a command
    acked just before, whose status message and prediction were on their way), for at most
    `timeout` seconds (DRAIN_SECONDS). Closing the platforms' sessions under that work, and
    then cancelling it, left the channel silent until a restart's recovery found the job."""
    try:
        await service.wait_idle(DRAIN_SECONDS if timeout is None else timeout)
    except TimeoutError as exc:
        log.warning("stopping with %s; the next start picks them up", exc)


@contextlib.asynccontextmanager
async def run_platform(
    runtime: Runtime, name: str, **options: Any
) -> AsyncIterator[RunningPlatform]:
    """Run one platform, its adapter attached to the job service, for the block."""
    async with _lifecycle(name, runtime, **options) as platform:
        with attached(runtime.service, platform.adapter):
            yield platform


def _lifecycle(
    name: str, runtime: Runtime, **options: Any
) -> contextlib.AbstractAsyncContextManager[RunningPlatform]:
    """The platform's lifecycle, imported only when it is used (each pulls in its SDK)."""
    if name == "slack":
        from adapters.slack.lifecycle import running
    elif name == "discord":
        from adapters.discord.lifecycle import running
    else:
        raise ValueError(f"no chat platform called {name!r}")
    return running(runtime, **options)
