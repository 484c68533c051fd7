"""Money: dollars to whole micro-dollars (how every amount is stored) and back to words.

One conversion for prices, budgets and admins' limits alike: through the decimal text of the
number (so $0.003 is exactly 3,000, not a binary float's tail), rounded up, since a reservation
must never fall short of the bill.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float | int | str | Decimal) -> int:
    """Dollars as whole micro-dollars, rounded up. Raises ValueError for a non-number."""
    try:
        amount = usd if isinstance(usd, Decimal) else Decimal(str(usd))
    except InvalidOperation:
        raise ValueError(f"{usd!r} is not an amount of dollars") from None
    if not amount.is_finite():
        raise ValueError(f"{usd!r} is not an amount of dollars")
    return int((amount * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def format_usd(micros: int | None) -> str:
    """Micro-dollars as dollars: $0.003, $1.25 (at least two decimals, at most six)."""
    if micros is None:
        return "$?"
    text = f"{micros / MICROS_PER_USD:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"
