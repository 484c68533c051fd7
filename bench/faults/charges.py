"""Whether a person was charged exactly once for their one job, read from the database.

Each job of a fault bench has its own user, so that user's counters hold that job alone: the
day counts it once (or not at all if it was given back), the month's spend is exactly what the
job cost, and nothing stays reserved or in flight.
"""

from __future__ import annotations

from typing import Any


def charge_problem(rows: list[dict[str, Any]], counters: list[dict[str, Any]]) -> str | None:
    """Why this user's charges are wrong, or None: one job, settled; its day counted once (none
    if it was given back), its month's spend exactly its cost, nothing reserved or in flight."""
    if len(rows) != 1:
        return f"{len(rows)} jobs"
    job = rows[0]
    if job["reservation"] != "settled":
        return f"reservation {job['reservation']}"
    actual = job["actual_micros"]
    if job["status"] == "succeeded" and not actual:
        return "succeeded but charged nothing"
    for counter in counters:
        period = str(counter["period"])
        if period == "live" and counter["jobs"]:
            return f"{counter['jobs']} still in flight"
        if period.startswith("day:") and counter["jobs"] != int(job["status"] == "succeeded"):
            return f"{counter['jobs']} jobs counted ({period})"
        if period.startswith("month:"):
            if counter["reserved_micros"]:
                return f"{counter['reserved_micros']} still reserved ({period})"
            if counter["spent_micros"] != (actual or 0):
                return f"spent {counter['spent_micros']} != cost {actual} ({period})"
    return None
