"""Refused requests, logged without their content and at a bounded rate.

Anyone can send junk to a public endpoint, as fast as they like. Logging each refusal would let
them grow the log at their pace (slack-bolt once wrote a 300 MB body into it), and logging what
they sent would let them forge log lines. So a refusal is logged by its reason alone (a constant
from Conjure's code, never request text), the first time at once, then at most once a minute per
reason with how many more there were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

INTERVAL = 60.0  # seconds between two lines for the same reason


@dataclass
class _Reason:
    logged_at: float
    unlogged: int = 0


@dataclass
class Rejections:
    """Counts refusals per reason; logs each reason at most once per `interval`."""

    logger: logging.Logger
    interval: float = INTERVAL
    clock: Callable[[], float] = time.monotonic
    totals: dict[str, int] = field(default_factory=dict)
    _reasons: dict[str, _Reason] = field(default_factory=dict)

    def note(self, reason: str, *, level: int = logging.WARNING) -> None:
        """One refusal. `reason` must be a constant of Conjure's, never text from the request."""
        self.totals[reason] = self.totals.get(reason, 0) + 1
        now = self.clock()
        seen = self._reasons.get(reason)
        if seen is None:
            self._reasons[reason] = _Reason(logged_at=now)
            self.logger.log(level, "refused a request: %s", reason)
            return
        seen.unlogged += 1
        if now - seen.logged_at >= self.interval:
            self.logger.log(
                level,
                "refused %d more request(s) in the last %.0f s: %s",
                seen.unlogged,
                now - seen.logged_at,
                reason,
            )
            seen.logged_at, seen.unlogged = now, 0
