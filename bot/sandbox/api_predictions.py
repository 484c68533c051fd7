"""Prediction routes: the three creates, get, cancel and the paginated list.

Create bodies are checked strictly (unknown fields, events filter, webhook URL) before the
input is checked against the model, mirroring the order and shapes of Replicate's 422s; then
the `Cancel-After` header (a malformed one is a 422 of the same shape).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox.deadlines import BadDuration, parse_duration
from bot.sandbox.guard import hold
from bot.sandbox.models import (
    FakeModel,
    ModelNotFound,
    find_deployment,
    find_official,
    resolve_version,
)
from bot.sandbox.predictions import WEBHOOK_EVENTS, with_data_urls
from bot.sandbox.problems import not_found, problem, validation_failed
from bot.sandbox.runner import cancel_prediction, create_prediction
from bot.sandbox.state import Run, Sandbox
from bot.sandbox.validation import invalid_type, validate_input

PAGE_SIZE = 100  # predictions per list page (tests lower it)
# Replicate's docs do not say whether list entries carry `webhook`; tests turn this off to check
# that a client finds a prediction by its webhook URL either way.
LIST_CARRIES_WEBHOOK = True
MAX_WAIT = 60
_BODY_FIELDS = frozenset({"version", "input", "webhook", "webhook_events_filter", "stream"})


def _sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


def base_url(request: Request) -> str:
    """The sandbox's own address as the client reached it (for absolute URLs)."""
    return str(request.base_url).rstrip("/")


async def create_by_version(request: Request) -> Response:
    """POST /v1/predictions: `version` is an id, `owner/name:id` or an official `owner/name`."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    errors = _body_errors(body, allow_version=True)
    if not errors and "version" not in body:
        errors = [{"type": "required", "field": "(root)", "description": "version is required"}]
    if not errors and not isinstance(body["version"], str):
        errors = [invalid_type("version", "string", body["version"])]
    if errors:
        return validation_failed(errors)
    try:
        model, shown = resolve_version(body["version"])
    except ModelNotFound as exc:
        return not_found(str(exc))
    return await _create(request, model, shown, body)


async def create_by_model(request: Request) -> Response:
    """POST /v1/models/{owner}/{name}/predictions (official models only)."""
    try:
        model = find_official(request.path_params["owner"], request.path_params["name"])
    except ModelNotFound as exc:
        return not_found(str(exc))
    return await _create_checked(request, model, "hidden")


async def create_by_deployment(request: Request) -> Response:
    """POST /v1/deployments/{owner}/{name}/predictions."""
    try:
        model = find_deployment(request.path_params["owner"], request.path_params["name"])
    except ModelNotFound as exc:
        return not_found(str(exc))
    return await _create_checked(request, model, model.version_id)


async def _create_checked(request: Request, model: FakeModel, shown: str) -> Response:
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    errors = _body_errors(body, allow_version=False)
    if errors:
        return validation_failed(errors)
    return await _create(request, model, shown, body)


async def _create(request: Request, model: FakeModel, shown: str, body: dict[str, Any]) -> Response:
    raw_input = body.get("input", {})
    inputs, errors = validate_input(model, raw_input)
    if errors:
        return validation_failed(errors)
    cancel_after = request.headers.get("cancel-after")
    try:
        deadline = None if cancel_after is None else parse_duration(cancel_after)
    except BadDuration as exc:
        invalid = {"type": "format", "field": "Cancel-After", "description": str(exc)}
        return validation_failed([invalid])
    run = create_prediction(
        _sandbox(request),
        model=model,
        version=shown,
        raw_input=raw_input,
        inputs=inputs,
        webhook=body.get("webhook"),
        events_filter=body.get("webhook_events_filter"),
        base_url=base_url(request),
        cancel_after=deadline,
    )
    wait = prefer_wait(request.headers.get("prefer"))
    if wait is None:
        return JSONResponse(run.prediction, status_code=201)
    await hold(request.receive, wait, run.done)
    return JSONResponse(with_data_urls(run.prediction, _file_lookup(run)), status_code=201)


def prefer_wait(header: str | None) -> float | None:
    """Seconds a `Prefer: wait` / `wait=N` header asks to hold the create (None: don't)."""
    for part in (header or "").replace(";", ",").split(","):
        token = part.strip().lower()
        if token == "wait":
            return MAX_WAIT
        if token.startswith("wait="):
            try:
                return min(max(int(token[5:]), 1), MAX_WAIT)
            except ValueError:
                return None
    return None


def _file_lookup(run: Run) -> Any:
    prefix = f"{run.base_url}/files/{run.prediction['id']}/"

    def lookup(url: str) -> tuple[bytes, str] | None:
        return run.files.get(url[len(prefix) :]) if url.startswith(prefix) else None

    return lookup


async def get_prediction(request: Request) -> Response:
    """GET /v1/predictions/{id}."""
    run = _sandbox(request).runs.get(request.path_params["id"])
    if run is None:
        return not_found("Prediction not found.")
    return JSONResponse(run.prediction)


async def cancel(request: Request) -> Response:
    """POST /v1/predictions/{id}/cancel: a running prediction becomes `canceled`."""
    run = _sandbox(request).runs.get(request.path_params["id"])
    if run is None:
        return not_found("Prediction not found.")
    cancel_prediction(run)
    return JSONResponse(run.prediction)


async def list_predictions(request: Request) -> Response:
    """GET /v1/predictions: newest first, PAGE_SIZE a page, `next` an absolute URL."""
    predictions = list(_sandbox(request).predictions.values())
    end = len(predictions)
    cursor = request.query_params.get("cursor")
    if cursor is not None:
        decoded = _decode_cursor(cursor)
        if decoded is None:
            return problem(400, "The cursor is not valid.", "Invalid cursor")
        end = min(decoded, end)
    start = max(0, end - PAGE_SIZE)
    results = predictions[start:end][::-1]
    if not LIST_CARRIES_WEBHOOK:
        results = [_without_webhook(prediction) for prediction in results]
    next_url = None
    if start > 0:
        next_url = str(request.url.include_query_params(cursor=_encode_cursor(start)))
    return JSONResponse({"next": next_url, "previous": None, "results": results})


def _without_webhook(prediction: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prediction.items() if k not in ("webhook", "webhook_events_filter")}


def _encode_cursor(end: int) -> str:
    return base64.urlsafe_b64encode(f"before:{end}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, number = text.partition(":")
    if prefix != "before" or not number.isdigit():
        return None
    return int(number)


async def _json_body(request: Request) -> dict[str, Any] | Response | Any:
    raw = await request.body()
    try:
        body = json.loads(raw, parse_constant=_reject_constant) if raw.strip() else {}
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be echoed
    except (ValueError, UnicodeError):
        return problem(400, "The request body is not valid JSON.", "Invalid JSON")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body_errors(body: Any, *, allow_version: bool) -> list[dict[str, str]]:
    if not isinstance(body, dict):
        return [invalid_type("(root)", "object", body)]
    allowed = _BODY_FIELDS if allow_version else _BODY_FIELDS - {"version"}
    errors = [
        {
            "type": "additional_property_not_allowed",
            "field": "(root)",
            "description": f"Additional property {name} is not allowed",
        }
        for name in body
        if name not in allowed
    ]
    webhook = body.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str):
            errors.append(invalid_type("webhook", "string", webhook))
        elif urlsplit(webhook).scheme not in ("http", "https") or not urlsplit(webhook).netloc:
            errors.append(
                {"type": "format", "field": "webhook", "description": "Does not match format 'uri'"}
            )
    errors.extend(_events_errors(body.get("webhook_events_filter")))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        errors.append(invalid_type("stream", "boolean", stream))
    return errors


def _events_errors(events: Any) -> list[dict[str, str]]:
    if events is None:
        return []
    if not isinstance(events, list):
        return [invalid_type("webhook_events_filter", "array", events)]
    allowed = ", ".join(f'"{e}"' for e in WEBHOOK_EVENTS)
    return [
        {
            "type": "enum",
            "field": f"webhook_events_filter.{i}",
            "description": f"webhook_events_filter.{i} must be one of the following: {allowed}",
        }
        for i, event in enumerate(events)
        if event not in WEBHOOK_EVENTS
    ]


routes = [
    Route("/v1/predictions", create_by_version, methods=["POST"]),
    Route("/v1/predictions", list_predictions, methods=["GET"]),
    Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
    Route("/v1/predictions/{id}/cancel", cancel, methods=["POST"]),
    Route("/v1/models/{owner}/{name}/predictions", create_by_model, methods=["POST"]),
    Route("/v1/deployments/{owner}/{name}/predictions", create_by_deployment, methods=["POST"]),
]
