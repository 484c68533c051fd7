"""The jobs this process recorded and is about to start, each one's claim kept fresh meanwhile.

A job recorded but not started (no prediction yet) and untouched for `START_TAKEOVER` is taken for
abandoned by any instance's sweeper, which searches Replicate for it and starts it. In a burst,
or with several workers, a job can wait longer than that for its turn here. So while it waits,
its `updated_at` is touched every third of `START_TAKEOVER` (the same compare-and-set as the
claim just before its create, JobStore.touch_unstarted): no instance takes over a job that is
only queued, and one that did take it over makes the next touch fail, so this process never
creates it too. The touches and that claim go one at a time per job (a lock), since each
compares and then moves the job's `updated_at`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from storage.errors import UNANSWERED
from storage.jobs import JobStore
from storage.models import Job, utcnow

log = logging.getLogger(__name__)


class StartClaims:
    """`holding(job)` while this process is to start `job`; `touch(job)` to claim it now."""

    def __init__(self, store: JobStore, takeover_after: Callable[[], timedelta]) -> None:
        self._store = store
        self._takeover_after = takeover_after  # read at each use (tests shorten it)
        self._held: dict[str, Job] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._keeper: asyncio.Task[None] | None = None

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._held

    @contextlib.contextmanager
    def holding(self, job: Job) -> Iterator[None]:
        """While this process is to start `job`: no sweeper here takes it for abandoned, and
        its claim is kept fresh for the others."""
        self._held[job.id] = job
        self._locks.setdefault(job.id, asyncio.Lock())
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_fresh())
            self._keeper.add_done_callback(_log_failure)
        try:
            yield
        finally:
            self._held.pop(job.id, None)
            self._locks.pop(job.id, None)
            if not self._held:
                self.close()

    async def touch(self, job: Job, **values: Any) -> bool:
        """Write `values` and a new `updated_at` to `job` if it is still unstarted and untouched
        since this process last saw it; False when another instance took it over."""
        lock = self._locks.get(job.id)
        async with lock if lock is not None else contextlib.nullcontext():
            return await self._touch(job, values)

    async def _touch(self, job: Job, values: dict[str, Any]) -> bool:
        now = utcnow()
        if not await self._store.touch_unstarted(job.id, job.updated_at, now, **values):
            return False
        job.updated_at = now
        return True

    async def _keep_fresh(self) -> None:
        while self._held:
            every = self._takeover_after() / 3
            await asyncio.sleep(every.total_seconds())
            stale = utcnow() - every
            for job in [job for job in self._held.values() if job.updated_at <= stale]:
                try:
                    await self._freshen(job, stale)
                except UNANSWERED as exc:
                    log.warning("job %s: could not keep its start claimed (%s)", job.id, exc)

    async def _freshen(self, job: Job, stale: datetime) -> None:
        """Touch `job` if its claim is still older than `stale` once its lock is free: the lock
        may have been held by this process's own start, which claimed the job afresh and then
        started it (a touch then fails, the job being started: not taken over)."""
        lock = self._locks.get(job.id)
        if lock is None:
            return  # started (or given up) meanwhile
        async with lock:
            if job.id not in self._held or job.updated_at > stale:
                return
            if not await self._touch(job, {}):
                log.warning("job %s was taken over while it waited to start", job.id)

    def close(self) -> None:
        """Stop keeping claims fresh (nothing is held, or the service stops)."""
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None


def _log_failure(task: asyncio.Task[None]) -> None:
    """A keeper that failed is said (the next job held starts another): never a silent stop."""
    if not task.cancelled() and task.exception() is not None:
        log.error("keeping start claims fresh failed", exc_info=task.exception())
