"""What `POST /_bench/faults` on the benchmark's fake Slack accepts: a method (or the upload
route) to fail or hold, for a number of calls or a number of seconds.

Kept apart from the server so that the benches build the same objects they send.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response

ACTIONS = ("fail", "hold", "hold_after")


@dataclass
class SlackFault:
    """`method` ("*" for every Web API method, "upload" for the upload URL) answers `status`
    ("fail"), or is held `hold_seconds` before it is handled ("hold") or after, its answer kept
    back ("hold_after"); for the next `calls` calls, or every call for `seconds` from now."""

    method: str
    action: str = "fail"
    status: int = 500
    retry_after: float | None = None
    calls: int = 1
    seconds: float | None = None
    hold_seconds: float = 60.0
    until: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.seconds is not None and not self.until:
            self.until = time.monotonic() + self.seconds
            self.calls = 1 << 30

    def live(self, now: float) -> bool:
        return self.calls > 0 and (self.seconds is None or now < self.until)

    def matches(self, target: str) -> bool:
        if self.method == "*":
            return target != "upload"
        return self.method == target

    def response(self) -> Response:
        """A Slack-shaped failure: ok false, the status, Retry-After on a 429."""
        error = "ratelimited" if self.status == 429 else "internal_error"
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = f"{self.retry_after:g}"
        return JSONResponse({"ok": False, "error": error}, self.status, headers=headers)

    def to_json(self) -> dict[str, Any]:
        """The body to POST (without the server-side deadline)."""
        body = asdict(self)
        body.pop("until")
        return body


def fault_from_json(data: Any) -> SlackFault:
    """A checked SlackFault from a request body; ValueError says what is wrong."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ValueError("a fault is an object with a method")
    known = set(SlackFault.__dataclass_fields__) - {"until"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}")
    fault = SlackFault(**data)
    if fault.action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if not isinstance(fault.status, int) or not 400 <= fault.status <= 599:
        raise ValueError("status must be 400..599")
    if not isinstance(fault.calls, int) or fault.calls < 0:
        raise ValueError("calls must be a non-negative integer")
    for name in ("retry_after", "seconds", "hold_seconds"):
        value = getattr(fault, name)
        if value is not None and (isinstance(value, bool) or float(value) < 0):
            raise ValueError(f"{name} must not be negative")
    return fault
