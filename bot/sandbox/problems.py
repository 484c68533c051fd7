"""Error answers shaped like Replicate's: RFC 7807 problem details with title, detail, status.

Clients branch on these bodies (the official client reads `title` and `detail`), so every error
the sandbox gives goes through here to keep the shape identical everywhere.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

PROBLEM_JSON = "application/problem+json"

UNAUTHENTICATED_DETAIL = "You did not pass a valid authentication token"
THROTTLED_DETAIL = "Request was throttled. Your rate limit resets in ~30s."
INSUFFICIENT_CREDIT_DETAIL = (
    "You have insufficient credit to run this model. "
    "Go to https://replicate.com/account/billing#billing to purchase credit. "
    "Once you purchase credit, please wait a few minutes before trying again."
)


def problem(
    status: int,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json answer; `title` defaults to the status phrase, None drops the key."""
    body: dict[str, Any] = {}
    if title is None:
        title = _phrase(status)
    if title:
        body["title"] = title
    body["detail"] = detail
    body["status"] = status
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def unauthenticated() -> JSONResponse:
    """The 401 Replicate gives for a missing or wrong token."""
    return problem(401, UNAUTHENTICATED_DETAIL, "Unauthenticated")


def not_found(detail: str = "The requested resource could not be found.") -> JSONResponse:
    """A 404 problem."""
    return problem(404, detail, "Not found")


def validation_failed(invalid_fields: list[dict[str, str]]) -> JSONResponse:
    """The 422 Replicate gives when a body or its `input` breaks the model's schema."""
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in invalid_fields)
    return problem(422, detail, "Input validation failed", invalid_fields=invalid_fields)


def fault_response(status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer an injected HTTP fault gives, with the body Replicate uses for that status."""
    if status == 429:
        body = {"detail": THROTTLED_DETAIL, "status": 429}
        return JSONResponse(body, status_code=429, headers=headers, media_type=PROBLEM_JSON)
    if status == 402:
        return problem(402, INSUFFICIENT_CREDIT_DETAIL, "Insufficient credit", headers)
    detail = {
        500: "An internal error occurred. Please try again.",
        502: "The upstream server returned an invalid response. Please try again.",
        503: "The service is temporarily unavailable. Please try again.",
    }.get(status, f"Injected fault: {_phrase(status) or status}.")
    return problem(status, detail, None, headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
