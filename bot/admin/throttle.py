"""Wrong admin tokens, counted per client: guessing is slowed to a few tries a minute.

The admin token is a password for every quota and budget; without a bound, a guesser could try
hundreds a second, unseen. Each client (its address, as the proxy headers give it) may offer
MAX_FAILURES wrong tokens within WINDOW seconds; after that its sign-ins are refused (429) until
the oldest failure leaves the window. Per client, so a guesser cannot lock the admins out; per
process, which is enough to turn hundreds a second into a handful a minute.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW = 60.0
MAX_CLIENTS = 10_000  # clients remembered at once; the longest-quiet are forgotten first


class SignInThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str) -> bool:
        """Whether `client` has used up its wrong tokens for now."""
        failures = self._recent(client)
        return failures is not None and len(failures) >= MAX_FAILURES

    def failed(self, client: str) -> None:
        """`client` offered a wrong token."""
        failures = self._recent(client)
        if failures is None:
            if len(self._failures) >= MAX_CLIENTS:
                del self._failures[next(iter(self._failures))]
            failures = self._failures[client] = deque()
        else:  # the most recent to the end: dicts keep insertion order
            self._failures[client] = self._failures.pop(client)
        failures.append(self.clock())

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        since = self.clock() - WINDOW
        while failures and failures[0] <= since:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures
