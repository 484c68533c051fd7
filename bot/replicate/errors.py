"""Replicate's errors as exceptions, each with one plain sentence a chat user can be shown.

Replicate answers errors with problem details (`{"title", "detail", "status"}`, plus
`invalid_fields` on a 422). The class says what the caller can do about it; `user_message` says it
to the person who typed the command. Nothing here ever holds the API token.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx


class ReplicateError(Exception):
    """Replicate refused or failed a request; `user_message` is safe to show in chat."""

    default_user_message = "Replicate refused the request; ask an admin to check Conjure's logs."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        invalid_fields: list[dict[str, Any]] | None = None,
        user_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.invalid_fields = invalid_fields or []
        self.user_message = user_message or self.default_user_message
        self.retry_after = retry_after


class AuthenticationError(ReplicateError):
    """401: the token is wrong or revoked; only an admin can fix it."""

    default_user_message = (
        "Conjure's Replicate API token was rejected; ask an admin to check REPLICATE_API_TOKEN."
    )


class InsufficientCreditError(ReplicateError):
    """402: the Replicate account has run out of credit."""

    default_user_message = (
        "Conjure's Replicate account is out of credit; ask an admin to add billing or credit."
    )


class ModelNotFoundError(ReplicateError):
    """404: the model, version, deployment or prediction does not exist (or is not visible)."""

    default_user_message = "Replicate could not find that model; check its name or ask an admin."


class InvalidInputError(ReplicateError):
    """422: the input does not match the model's schema; `invalid_fields` says where."""

    default_user_message = "Replicate rejected the input; check the command's options."


class RateLimitedError(ReplicateError):
    """429: too many requests; `retry_after` is set when Replicate said how long to wait."""

    default_user_message = "Replicate is busy with too many requests; try again in a minute."


class ReplicateUnavailableError(ReplicateError):
    """5xx, or no answer in time to a request that is safe to repeat."""

    default_user_message = "Replicate is having trouble right now; try again in a few minutes."


class ReplicateConnectionError(ReplicateError):
    """No connection could be made, so nothing was sent: always safe to try again."""

    default_user_message = "Conjure could not reach Replicate; try again in a few minutes."


class PredictionOutcomeUnknown(ReplicateError):
    """A create timed out or got a 5xx: the prediction may exist. Look before creating another.

    Creates are not idempotent, so this is never retried blindly; `webhook` is the URL the create
    carried, which `ReplicateClient.find_prediction_by_webhook` uses to find out.
    """

    # Says what is known, and promises nothing: the caller decides what happens next.
    default_user_message = "Replicate did not confirm that the job started."

    def __init__(self, message: str, *, webhook: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.webhook = webhook


_BY_STATUS: dict[int, type[ReplicateError]] = {
    401: AuthenticationError,
    402: InsufficientCreditError,
    404: ModelNotFoundError,
    422: InvalidInputError,
    429: RateLimitedError,
}


def error_from_response(response: httpx.Response, *, redact: Sequence[str] = ()) -> ReplicateError:
    """The exception for an error answer, read from its problem-details body when there is one.

    Any string in `redact` (the API token) is blanked out of the server's text, in case a proxy
    or a misbehaving server echoes the request back.
    """
    status = response.status_code
    problem = _problem(response, redact)
    title = _redacted(_text(problem.get("title")), redact)
    detail = _redacted(_text(problem.get("detail")), redact)
    invalid_fields = [f for f in problem.get("invalid_fields") or [] if isinstance(f, dict)]
    retry_after = parse_retry_after(response.headers.get("retry-after"))

    cls = _BY_STATUS.get(status) or (ReplicateUnavailableError if status >= 500 else ReplicateError)
    request = response.request
    message = f"{request.method} {request.url.path} -> {status}"
    if title or detail:
        message += ": " + " - ".join(part for part in (title, detail) if part)

    user_message = None
    if cls is InvalidInputError:
        user_message = _invalid_input_message(invalid_fields, detail)
    elif cls is RateLimitedError and retry_after is not None:
        seconds = max(1, math.ceil(retry_after))
        user_message = f"Replicate is busy with too many requests; try again in {seconds} seconds."
    return cls(
        message,
        status=status,
        title=title,
        detail=detail,
        invalid_fields=invalid_fields,
        user_message=user_message,
        retry_after=retry_after,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _problem(response: httpx.Response, redact: Sequence[str] = ()) -> dict[str, Any]:
    """The problem details; a body that is not JSON is its first 200 characters as `detail`,
    cut only after `redact` is blanked out (cut first, a secret's first part would stay)."""
    try:
        body = response.json()
    except ValueError:
        text = _redacted(response.text, redact) or ""
        return {"detail": text[:200]} if text.strip() else {}
    return body if isinstance(body, dict) else {}


def _redacted(text: str | None, secrets: Sequence[str]) -> str | None:
    for secret in secrets:
        if text and secret:
            text = text.replace(secret, "[redacted]")
    return text


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _invalid_input_message(fields: list[dict[str, Any]], detail: str | None) -> str:
    reasons = [str(f.get("description") or f.get("field") or "").strip() for f in fields]
    reasons = [r for r in reasons if r]
    if not reasons and detail:
        # detail reads "- input: prompt is required\n- input: ...": keep the part after the colon.
        reasons = [line.lstrip("- ").split(": ", 1)[-1] for line in detail.splitlines()]
        reasons = [r.strip() for r in reasons if r.strip()]
    if not reasons:
        return InvalidInputError.default_user_message
    return f"Replicate rejected the input: {'; '.join(reasons)}."
