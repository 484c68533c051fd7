"""What a platform's lifecycle yields while it runs (see adapters.platforms)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.routing import BaseRoute

from bot.adapter import ChatAdapter


@dataclass(frozen=True)
class RunningPlatform:
    """A started platform: the adapter that posts its jobs, and the HTTP routes it serves."""

    adapter: ChatAdapter
    routes: list[BaseRoute] = field(default_factory=list)
