"""Injectable misbehaviour, so the bot's error handling can be exercised on purpose.

Faults are plain dataclasses that tests set directly, or that other processes (the demo, the
benchmarks) set over `POST /_sandbox/faults`; `faults_from_json` is the one place that checks them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FAIL_ERROR = "NSFW content detected. Try running it again, or try a different prompt."


@dataclass
class HttpFault:
    """Answer `status` instead of handling a matching request, or hold the answer `delay` s."""

    status: int | None = None
    count: int = 1
    method: str | None = None
    path_prefix: str | None = None
    retry_after: float | None = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a /v1 request."""
        if self.count <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path_prefix or "/v1")

    def response_headers(self) -> dict[str, str]:
        """Retry-After when set: whole seconds as an integer, else a decimal (fast tests)."""
        if self.retry_after is None:
            return {}
        value = self.retry_after
        text = str(int(value)) if float(value).is_integer() else f"{value:g}"
        return {"Retry-After": text}


@dataclass
class Faults:
    """Everything that can be made to go wrong; `reset` puts it all back to normal."""

    http: list[HttpFault] = field(default_factory=list)
    fail_next: int = 0
    fail_error: str = DEFAULT_FAIL_ERROR
    slow_start: float = 0.0
    drop_webhooks: int = 0
    # Predictions created while this is set run this many times their usual length (a long
    # input, a slow GPU): how a run that overshoots its expected time, and its deadline, is shown.
    run_time_factor: float = 1.0
    # Predictions created while this is set (> 0) spend exactly this many real seconds in
    # `processing`, whatever the model and speed (their steps spread evenly over it): a model
    # of known length, for the benchmark's burst.
    run_seconds: float = 0.0
    # Videos made while this is set are padded to this many bytes (0: their natural ~17 KB),
    # so a test can make one larger than a platform takes.
    video_bytes: int = 0
    # Streams (urls.stream) close after this many events (0: never), as a dropped connection.
    cut_streams_after: int = 0
    # Text runs hold after this many tokens until it is set back to 0 (a half-written answer).
    pause_after_tokens: int = 0
    # Text runs write a token every this many real seconds more (not scaled by speed), so a
    # streamed answer can be watched at speed 0 (the benchmark's time to first token).
    token_seconds: float = 0.0
    # The next this many image runs return their images as `{"images": [...],
    # "has_nsfw_concepts": [true, ...]}`: outputs the model flagged as not safe for work.
    flag_nsfw_next: int = 0

    def reset(self) -> None:
        """Back to no faults at all (in place: holders of this object see the change)."""
        for f in dataclasses.fields(self):
            value = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            setattr(self, f.name, value)

    def take_http(self, method: str, path: str) -> HttpFault | None:
        """The first HTTP fault matching this request, its count used up by one."""
        for fault in self.http:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count <= 0:
                    self.http.remove(fault)
                return fault
        return None

    def take_failure(self) -> str | None:
        """The error the next prediction must fail with, if `fail_next` says so."""
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_error
        return None

    def take_nsfw_flag(self) -> bool:
        """Whether the next image run's outputs are flagged (`flag_nsfw_next`)."""
        if self.flag_nsfw_next > 0:
            self.flag_nsfw_next -= 1
            return True
        return False

    def to_json(self) -> dict[str, Any]:
        """A JSON view (for `GET`/`POST /_sandbox/faults`)."""
        return dataclasses.asdict(self)


def faults_from_json(data: Any) -> dict[str, Any]:
    """Check a `/_sandbox/faults` body and turn it into field values; ValueError says why not."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    known = {f.name for f in dataclasses.fields(Faults)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name == "http":
            if not isinstance(value, list):
                raise ValueError("http must be a list of objects")
            values[name] = [_http_fault(item) for item in value]
        elif name == "fail_error":
            values[name] = _typed(name, value, str)
        elif name in (
            "fail_next",
            "drop_webhooks",
            "video_bytes",
            "cut_streams_after",
            "pause_after_tokens",
            "flag_nsfw_next",
        ):
            values[name] = _non_negative(name, _typed(name, value, int))
        else:
            values[name] = _non_negative(name, float(_typed(name, value, (int, float))))
    return values


def _http_fault(item: Any) -> HttpFault:
    if not isinstance(item, dict):
        raise ValueError("each http fault must be an object")
    known = {f.name for f in dataclasses.fields(HttpFault)}
    unknown = sorted(set(item) - known)
    if unknown:
        raise ValueError(f"unknown http fault fields: {', '.join(unknown)}")
    fault = HttpFault(**item)
    if fault.status is not None and not (
        isinstance(fault.status, int) and 400 <= fault.status <= 599
    ):
        raise ValueError("http fault status must be an integer 400..599")
    _typed("count", fault.count, int)
    for name in ("method", "path_prefix"):
        if getattr(fault, name) is not None:
            _typed(name, getattr(fault, name), str)
    _non_negative("delay", float(_typed("delay", fault.delay, (int, float))))
    if fault.retry_after is not None:
        _non_negative("retry_after", float(_typed("retry_after", fault.retry_after, (int, float))))
    return fault


def _typed(name: str, value: Any, types: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) or not isinstance(value, types):
        raise ValueError(f"{name} has the wrong type")
    return value


def _non_negative(name: str, value: Any) -> Any:
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value
