"""A mapping that keeps only its newest entries.

For what an instance keeps per job that it may never see end, or must remember past its end:
the answer being written (the instance that delivers it forgets it, but with several instances
the one that streamed it may never see its end), and the jobs whose outcome it recorded
(bot.updates). Losing the oldest entry costs little: the delivery writes a message whole, or an
old copy of a long-ended job is followed for a while.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

KEPT = 1_000
"""Entries kept: far more answers than one instance writes at once."""


class Recent(OrderedDict[K, V]):
    """An OrderedDict of at most `most` entries; setting one makes it the newest, and the
    oldest goes when there are too many."""

    def __init__(self, most: int = KEPT) -> None:
        super().__init__()
        self.most = most

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.most:
            self.popitem(last=False)
