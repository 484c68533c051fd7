"""Each model's input schema, fetched from Replicate once and kept, so checking a command against
it costs nothing on the command path.

Commands must be answered within the platforms' 3 seconds, so a lookup never waits long: schemas
are fetched in the background at start-up (`prefetch`), kept for `ttl` (a pinned version's
forever: a version never changes), served stale while a fresh copy is fetched behind, and a
failed fetch (Replicate down, a 404, too slow) is remembered for `failure_ttl` so that the
commands meanwhile go straight on with the catalog's own rules. Only a model never asked about
before makes a command wait, and then at most `wait` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.replicate.input_schema import InputSchema, SchemaUnreadable

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 3.0  # seconds for one fetch, in the background
WAIT = 0.75  # seconds a command waits for a schema it has never had
TTL = 3600.0  # an official model's latest version (and a deployment's release) may change
FAILURE_TTL = 30.0  # a failure is not retried sooner; commands meanwhile use the catalog's rules


class SchemaSource(Protocol):
    """The three reads a schema may come from (ReplicateClient has them)."""

    async def get_model(self, model: str) -> dict[str, Any]: ...
    async def get_version(self, model: str, version_id: str) -> dict[str, Any]: ...
    async def get_deployment(self, deployment: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SchemaRef:
    """Where a model's schema is: `route` as in the catalog, `owner/name`, the pinned version."""

    route: str  # "official" | "version" | "deployment"
    name: str
    version: str | None = None


@dataclass
class _Entry:
    schema: InputSchema | None  # None: the last fetch failed and nothing older is known
    expires: float | None  # monotonic; None: never (a pinned version)


class ModelSchemas:
    """Input schemas by model, fetched through `source` with the timings above."""

    def __init__(
        self,
        source: SchemaSource,
        *,
        fetch_timeout: float = FETCH_TIMEOUT,
        wait: float = WAIT,
        ttl: float = TTL,
        failure_ttl: float = FAILURE_TTL,
        clock: Callable[[], float] = time.monotonic,
        close_source: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.source = source
        self._close_source = close_source
        self.fetch_timeout = fetch_timeout
        self.wait = wait
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._entries: dict[SchemaRef, _Entry] = {}
        self._fetching: dict[SchemaRef, asyncio.Task[None]] = {}

    def tried(self, ref: SchemaRef) -> bool:
        """Whether a fetch of `ref` has ended, well or not (a failure is remembered too)."""
        return ref in self._entries

    def cached(self, ref: SchemaRef) -> InputSchema | None:
        """The schema known now, fresh or stale; never waits, never fetches."""
        entry = self._entries.get(ref)
        return entry.schema if entry is not None else None

    async def get(self, ref: SchemaRef) -> InputSchema | None:
        """The schema, or None when it is not known (the catalog's rules apply). Waits at most
        `wait` seconds, and only for a model never asked about before."""
        entry = self._entries.get(ref)
        if entry is not None:
            if entry.expires is not None and self._clock() >= entry.expires:
                self._fetch(ref)  # stale or failed: fetched again behind this command
            return entry.schema
        task = self._fetch(ref)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self.wait)
        entry = self._entries.get(ref)
        return entry.schema if entry is not None else None

    def prefetch(self, refs: Iterable[SchemaRef]) -> None:
        """Start fetching every schema not yet known, in the background."""
        for ref in refs:
            if ref not in self._entries:
                self._fetch(ref)

    async def wait_idle(self) -> None:
        """Until no fetch is running (for tests and a tidy shutdown)."""
        while self._fetching:
            await asyncio.gather(*self._fetching.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the fetches in flight, and close the source if this cache was given it to own."""
        for task in list(self._fetching.values()):
            task.cancel()
        await asyncio.gather(*self._fetching.values(), return_exceptions=True)
        if self._close_source is not None:
            await self._close_source()

    def _fetch(self, ref: SchemaRef) -> asyncio.Task[None]:
        """The one fetch of `ref` in flight, started if there is none."""
        task = self._fetching.get(ref)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(ref))
            self._fetching[ref] = task
            task.add_done_callback(lambda _: self._fetching.pop(ref, None))
        return task

    async def _refresh(self, ref: SchemaRef) -> None:
        old = self._entries.get(ref)
        try:
            async with asyncio.timeout(self.fetch_timeout):
                document = await self._document(ref)
            schema = InputSchema.from_openapi(document)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            level = logging.WARNING if old is None or old.schema is not None else logging.DEBUG
            log.log(
                level,
                "input schema of %s unavailable (%s): using the catalog's rules",
                ref.name,
                _why(exc),
            )
            # Keep a stale schema rather than forget it; either way, not asked again too soon.
            schema = old.schema if old is not None else None
            self._entries[ref] = _Entry(schema, self._clock() + self.failure_ttl)
            return
        pinned = ref.route == "version"
        self._entries[ref] = _Entry(schema, None if pinned else self._clock() + self.ttl)

    async def _document(self, ref: SchemaRef) -> Any:
        """The OpenAPI document of the version `ref` runs."""
        if ref.route == "version" and ref.version:
            return (await self.source.get_version(ref.name, ref.version)).get("openapi_schema")
        if ref.route == "deployment":
            release = (await self.source.get_deployment(ref.name)).get("current_release") or {}
            model, version = release.get("model"), release.get("version")
            if not isinstance(model, str) or not isinstance(version, str):
                raise SchemaUnreadable("deployment without a current release")
            return (await self.source.get_version(model, version)).get("openapi_schema")
        latest = (await self.source.get_model(ref.name)).get("latest_version") or {}
        return latest.get("openapi_schema") if isinstance(latest, dict) else None


def _why(exc: Exception) -> str:
    """A short reason for the log; the client's errors carry no token."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]
