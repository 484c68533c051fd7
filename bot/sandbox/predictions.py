"""Prediction objects exactly as Replicate returns them, and the bits that fill them in.

Kept apart from the runner so the wire shape (ids, RFC 3339 times, urls, metrics, tqdm log lines,
`data:` outputs for `Prefer: wait`) can be read and checked in one place.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
_BAR_CHARS = " ▏▎▍▌▋▊▉█"
_BAR_WIDTH = 10


def new_id() -> str:
    """A 26-character `[a-z0-9]` prediction id (base32 of 130 random bits: one read of the
    system's randomness, not one per character, which was 5 % of a burst's CPU)."""
    return base64.b32encode(secrets.token_bytes(17)).decode("ascii")[:26].lower()


def new_webhook_id() -> str:
    """A Standard Webhooks message id."""
    return "msg_" + secrets.token_hex(14)[:27]


def rfc3339(moment: datetime | None = None) -> str:
    """UTC time with microseconds and a `Z`, as Replicate writes it."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_prediction(
    *,
    prediction_id: str,
    base_url: str,
    model: str,
    version: str,
    input: dict[str, Any],
    webhook: str | None,
    webhook_events_filter: list[str] | None,
    cancel_after: float | None = None,
) -> dict[str, Any]:
    """A freshly created (`starting`) prediction; `cancel_after` seconds set its `deadline`."""
    api = f"{base_url}/v1/predictions/{prediction_id}"
    now = datetime.now(UTC)
    prediction = {
        "id": prediction_id,
        "model": model,
        "version": version,
        "input": input,
        "logs": "",
        "output": None,
        "data_removed": False,
        "error": None,
        "source": "api",
        "status": "starting",
        "created_at": rfc3339(now),
        "started_at": None,
        "completed_at": None,
        "urls": {"cancel": f"{api}/cancel", "get": api, "web": f"{base_url}/p/{prediction_id}"},
        "webhook": webhook,
        "webhook_events_filter": webhook_events_filter,
    }
    if cancel_after is not None:
        prediction["deadline"] = rfc3339(now + timedelta(seconds=cancel_after))
    return prediction


def tqdm_line(done: int, total: int, elapsed: float) -> str:
    """A progress line like tqdm's: `  25%|██▌       | 1/4 [00:00<00:00,  4.00it/s]`."""
    fraction = done / total if total else 1.0
    eighths = int(fraction * _BAR_WIDTH * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full
    if full < _BAR_WIDTH:
        bar += (_BAR_CHARS[part] if part else " ") + " " * (_BAR_WIDTH - full - 1)
    rate = done / elapsed if elapsed > 0 else 0.0
    remaining = (total - done) / rate if rate > 0 else 0.0
    rate_text = f"{rate:5.2f}it/s" if rate else "?it/s"
    return (
        f" {fraction * 100:3.0f}%|{bar}| {done}/{total} "
        f"[{_clock(elapsed)}<{_clock(remaining)}, {rate_text}]"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def with_data_urls(
    prediction: dict[str, Any], lookup: Callable[[str], tuple[bytes, str] | None]
) -> dict[str, Any]:
    """A copy whose file URLs are inlined as `data:` URLs (the `Prefer: wait` answer)."""

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: inline(v) for k, v in value.items()}
        if isinstance(value, list):
            return [inline(v) for v in value]
        if isinstance(value, str):
            found = lookup(value)
            if found is not None:
                data, content_type = found
                mime = content_type.split(";")[0]
                return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        return value

    return {**prediction, "output": inline(prediction["output"])}
