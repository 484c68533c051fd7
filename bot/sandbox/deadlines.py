"""`Cancel-After`: the deadline a create may set, in Go's duration syntax (`30s`, `5m`, `1h30m`).

Replicate's servers are written in Go and take what Go's `time.ParseDuration` takes: one or more
decimal numbers, each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `1.5s` or `2h45m`.
A deadline must lie in the future, so zero and negative durations are refused here too.
"""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),  # U+00B5 MICRO SIGN
    "μs": Decimal("1e-6"),  # U+03BC GREEK SMALL LETTER MU
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_WHOLE = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")


class BadDuration(ValueError):
    """Not a positive Go duration; the message says what was expected."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as `30s`, `5m`, `1h30m` or `1.5s`; BadDuration otherwise."""
    value = text.strip()
    if value.startswith(("-", "+")) or value == "0":
        raise BadDuration(f"{text!r} is not a positive duration")
    if not _WHOLE.fullmatch(value):
        raise BadDuration(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = sum(Decimal(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    if seconds <= 0:
        raise BadDuration(f"{text!r} is not a positive duration")
    return float(seconds)
