"""How people write a limit, and the one reader of it for chat, the CLI, the environment and
conjure.toml: a number, `unlimited` for no limit, `0` for none allowed, and for an admin's
override `default` to clear it.

Kept apart from bot.quotas.limits (which reads the settings) so that the settings can check
their own limits with it at start-up.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation

from bot.money import MICROS_PER_USD
from storage.limit_change import DEFAULT, Default

MAX_LIMIT = 1_000_000  # jobs, dollars or jobs at once: anything larger is a typo
UNLIMITED = "unlimited"
CLEAR_WORDS = frozenset({"default", "reset"})
LIMIT_WORDS = f"a number, {UNLIMITED} (no limit) or 0 (none allowed)"

EXACT = Context(traps=[Inexact])
"""Arithmetic that raises rather than round: a fraction of a micro-dollar too small (1e-9999999,
past the exponent's range) or too long (30 digits, past the precision) is rounded away
silently by the default context, to 0 (none allowed) or to a neighbouring amount."""

Limit = int | None
"""A limit in force: None is unlimited, 0 allows none, n allows n (micro-dollars for money)."""


class LimitError(ValueError):
    """A limit as written is not one: `<what was written>: <why>`, for the person who wrote it
    (`reason` alone for a setting, whose value is not repeated)."""

    def __init__(self, word: str, reason: str) -> None:
        super().__init__(f"{word}: {reason}")
        self.reason = reason


def parse_limit(kind: str, raw: str) -> Limit | Default:
    """What an admin typed (chat or CLI) → a limit, or DEFAULT to clear the override.

    `50`, `$10`, `unlimited` (no limit), `0` (none allowed) or `default`. `kind` is "usd" for a
    monthly budget (in micro-dollars), anything else for a count. Refused, saying why: what is
    not a number (nan too), infinity (write unlimited), negatives, counts that are not whole,
    more than MAX_LIMIT, and money finer than a micro-dollar (rounding it would change it,
    maybe to 0, which allows none).
    """
    word = str(raw).strip()
    if word.lower() in CLEAR_WORDS:
        return DEFAULT
    return parse_setting(kind, word)


def parse_setting(kind: str, raw: object) -> Limit:
    """A limit from the environment or conjure.toml: as `parse_limit`, without `default`."""
    word = str(raw).strip()
    lowered = word.lower()
    if lowered in CLEAR_WORDS:
        raise LimitError(word, f"only clears an admin's override; write {LIMIT_WORDS}.")
    if lowered == UNLIMITED:
        return None
    if isinstance(raw, bool):
        raise LimitError(word, f"not a number; write {LIMIT_WORDS}.")
    usd = kind == "usd"
    try:
        value = Decimal(word.removeprefix("$") if usd else word)
    except InvalidOperation:
        raise LimitError(word, f"not a number; write {LIMIT_WORDS}.") from None
    if value.is_nan():
        raise LimitError(word, f"not a number; write {LIMIT_WORDS}.")
    if value < 0:
        raise LimitError(word, f"cannot be negative; 0 allows none, {UNLIMITED} has no limit.")
    if value.is_infinite() or value > MAX_LIMIT:
        raise LimitError(word, f"at most {MAX_LIMIT:,}; for no limit write {UNLIMITED}.")
    if not usd:
        if value != value.to_integral_value():
            raise LimitError(word, "must be a whole number.")
        return int(value)
    try:
        micros = EXACT.multiply(value, MICROS_PER_USD)
    except Inexact:
        micros = None
    if micros is None or micros != micros.to_integral_value():
        raise LimitError(
            word,
            "finer than a millionth of a dollar ($0.000001), the smallest amount Conjure counts.",
        )
    return int(micros)
