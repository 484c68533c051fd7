"""A small async client for the parts of Replicate's HTTP API that Conjure uses.

Retries are the point of having our own client. Reads (and cancel, which is safe to repeat) are
retried on 429, 5xx and network failures. A create is not idempotent, so it is retried only when
the answer proves nothing was created: a 429, or a connection that was never made. A create that
times out or gets a 5xx raises `PredictionOutcomeUnknown` at once; the caller then looks for the
prediction (`find_prediction_by_webhook`) before creating another.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from types import TracebackType
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from bot.http_transport import http_client
from bot.replicate.errors import (
    PredictionOutcomeUnknown,
    RateLimitedError,
    ReplicateConnectionError,
    ReplicateError,
    ReplicateUnavailableError,
    error_from_response,
)
from bot.replicate.stream import Event, read_events

__all__ = ["Prediction", "PredictionPage", "ReplicateClient", "UploadedFile"]

logger = logging.getLogger(__name__)

PredictionStatus = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
# Far beyond Replicate's 30-minute limit on a run; x any single-GPU price (A100: $0.0115/s)
# it stays below 2**31 micro-dollars, the integer columns money is kept in.
MAX_PREDICT_TIME = 24 * 3600.0
MAX_TOKEN_COUNT = 100_000_000  # far past any context window; $1,000 at $10 a million
TOKEN_COUNTS = ("input_token_count", "output_token_count")
WEBHOOK_EVENTS = frozenset({"start", "output", "logs", "completed"})
REPLICATE_HOSTS = (".replicate.com", ".replicate.net")  # where a stream may get the token

_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_VERSION = re.compile(r"^(?:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+:)?(?P<id>[0-9a-f]{64})$")
_PREDICTION_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
_PREDICTION_ID = re.compile(_PREDICTION_ID_PATTERN)

# Failures before the request left this machine: repeating them cannot create anything twice
# (bot.http_transport makes sure aiohttp's errors keep that meaning).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class Prediction(BaseModel):
    """A prediction as Replicate returns it; unknown fields are kept (`extra="allow"`).

    Replicate writes times with `Z` and up to 8 fractional digits; pydantic parses both, keeping
    microseconds (see the tests). What Conjure stores or computes with is checked strictly, so
    that a malformed prediction is refused here (a webhook answered 400) rather than failing
    halfway through an update: the id (a key, at most 64 characters), the status (one of
    Replicate's), `metrics.predict_time` (what the job is charged for: a finite number of
    seconds up to MAX_PREDICT_TIME, so the cost always fits its integer column), its token
    counts (whole numbers up to MAX_TOKEN_COUNT, for the same reason). `error` is stored as
    text, which PostgreSQL refuses with a NUL in it: a NUL is replaced, not refused.
    """

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, StringConstraints(pattern=_PREDICTION_ID_PATTERN, max_length=64)]
    status: PredictionStatus
    model: str | None = None
    version: str | None = None
    input: dict[str, Any] = {}
    output: Any = None
    logs: str | None = None
    error: Any = None
    metrics: dict[str, Any] | None = None
    urls: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    webhook: str | None = None

    @property
    def terminal(self) -> bool:
        """True once the prediction can no longer change (succeeded, failed, canceled, aborted)."""
        return self.status in TERMINAL_STATUSES

    @field_validator("input", mode="before")
    @classmethod
    def _input_removed(cls, value: Any) -> Any:
        """An hour after a prediction its data is removed: an `input` of null then is none,
        not a malformed prediction (refused, its job would never end)."""
        return {} if value is None else value

    @field_validator("metrics")
    @classmethod
    def _sane_predict_time(cls, metrics: dict[str, Any] | None) -> dict[str, Any] | None:
        seconds = (metrics or {}).get("predict_time")
        if seconds is None:
            return metrics
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_PREDICT_TIME
        ):
            raise ValueError(
                f"metrics.predict_time must be a number of seconds from 0 to {MAX_PREDICT_TIME:g}"
            )
        return metrics

    @field_validator("metrics")
    @classmethod
    def _sane_token_counts(cls, metrics: dict[str, Any] | None) -> dict[str, Any] | None:
        for name in TOKEN_COUNTS:
            count = (metrics or {}).get(name)
            if count is None:
                continue
            whole = isinstance(count, int) or (isinstance(count, float) and count.is_integer())
            if isinstance(count, bool) or not whole or not 0 <= count <= MAX_TOKEN_COUNT:
                raise ValueError(
                    f"metrics.{name} must be a whole number from 0 to {MAX_TOKEN_COUNT}"
                )
        return metrics

    @field_validator("error")
    @classmethod
    def _storable_error(cls, error: Any) -> Any:
        """A model's error is whatever it printed, NUL bytes included; refused, its job would
        never end (every webhook and read refused alike) and its reservation never be given
        back. Each NUL becomes U+FFFD, as in text decoded with errors="replace"."""
        if isinstance(error, str) and "\x00" in error:
            return error.replace("\x00", "\ufffd")
        return error


class UploadedFile(BaseModel):
    """A file made by `POST /v1/files`; `urls["get"]` is what a model input names.

    Only what Conjure uses is checked (an id to delete it by, and a `get` URL); the rest of
    Replicate's file object (etag, checksums, metadata, ...) is kept as it came.
    """

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    name: str | None = None
    content_type: str | None = None
    size: int | None = None
    urls: dict[str, Any]
    expires_at: datetime | None = None

    @field_validator("urls")
    @classmethod
    def _has_get_url(cls, urls: dict[str, Any]) -> dict[str, Any]:
        url = urls.get("get")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ValueError("urls.get must be an http(s) URL")
        return urls

    @property
    def url(self) -> str:
        """`urls.get`: the URL to pass as a model input."""
        return str(self.urls["get"])


@dataclass
class PredictionPage:
    """One page of `GET /v1/predictions`, newest first; `next` is an absolute URL or None."""

    results: list[Prediction]
    next: str | None


class ReplicateClient:
    """Replicate's HTTP API with retries that never create a prediction twice.

    `base_url` is given without `/v1`, as `REPLICATE_BASE_URL` is for Replicate's own client;
    `api_token` defaults to `REPLICATE_API_TOKEN`. Pass `http` to share a connection pool: it keeps
    its own timeouts (`timeout` is for the pool made here) and is left open by `aclose`.
    """

    def __init__(
        self,
        base_url: str = "https://api.replicate.com",
        api_token: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        max_backoff: float = 20.0,
        user_agent: str = "conjure/0.1",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._api = base_url.rstrip("/").removesuffix("/v1") + "/v1"
        self._origin = _origin(httpx.URL(self._api))
        self._token = api_token if api_token is not None else os.environ.get("REPLICATE_API_TOKEN")
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._backoff = wait_random_exponential(multiplier=0.5, max=max_backoff)
        self._user_agent = user_agent
        self._owns_http = http is None
        self._http = http if http is not None else http_client(timeout=timeout)

    def __repr__(self) -> str:
        return f"ReplicateClient(base_url={self._api.removesuffix('/v1')!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool, unless the caller passed its own."""
        if self._owns_http:
            await self._http.aclose()

    # -- predictions ------------------------------------------------------------------------

    async def create_prediction(
        self,
        *,
        input: dict[str, Any],
        model: str | None = None,
        version: str | None = None,
        deployment: str | None = None,
        webhook: str | None = None,
        webhook_events_filter: list[str] | None = None,
        wait: int | None = None,
        cancel_after: float | None = None,
    ) -> Prediction:
        """Start a prediction on exactly one of `model`, `version` or `deployment`.

        `wait` (1-60 s) asks Replicate to hold the answer until the prediction is done or that
        time passes (`Prefer: wait=N`); the read timeout is lengthened to match.
        `cancel_after` (seconds from the create) is the deadline at which Replicate stops the
        prediction (`Cancel-After`): `aborted` if it has not started, not billed; `canceled` if
        it is running, billed for what ran. It is what bounds the cost of a by-the-second run.
        Raises `PredictionOutcomeUnknown` when the create may or may not have happened.
        """
        path, body = _create_route(model, version, deployment)
        body["input"] = input
        if webhook is not None:
            body["webhook"] = webhook
        if webhook_events_filter is not None:
            unknown = set(webhook_events_filter) - WEBHOOK_EVENTS
            if unknown:
                raise ValueError(f"unknown webhook events {sorted(unknown)}; use {WEBHOOK_EVENTS}")
            body["webhook_events_filter"] = list(webhook_events_filter)
        headers: dict[str, str] = {}
        if wait is not None:
            if not 1 <= wait <= 60:
                raise ValueError("wait must be between 1 and 60 seconds")
            headers["Prefer"] = f"wait={wait}"
        if cancel_after is not None:
            headers["Cancel-After"] = go_duration(cancel_after)
        response = await self._request(
            "POST",
            path,
            json=body,
            headers=headers,
            extra_wait=wait or 0,
            create=True,
            webhook=webhook,
        )
        try:
            return Prediction.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise PredictionOutcomeUnknown(
                f"POST {path} -> {response.status_code} with an unreadable prediction",
                status=response.status_code,
                webhook=webhook,
            ) from exc

    async def get_prediction(self, prediction_id: str) -> Prediction:
        """The prediction's current state (a poller's fallback when webhooks do not come)."""
        response = await self._request("GET", f"/predictions/{_checked_id(prediction_id)}")
        return _prediction(response)

    async def cancel_prediction(self, prediction_id: str) -> Prediction:
        """Ask Replicate to stop the prediction; repeating it is harmless, so it is retried."""
        path = f"/predictions/{_checked_id(prediction_id)}/cancel"
        return _prediction(await self._request("POST", path))

    async def list_predictions(self, url: str | None = None) -> PredictionPage:
        """One page of recent predictions; pass the previous page's `next` to go on.

        `next` is followed as given, but only on Replicate's own origin: the token goes with it.
        """
        if url is not None and _origin(httpx.URL(url)) != self._origin:
            raise ValueError("refusing to send the API token to a page URL on another host")
        response = await self._request("GET", url or "/predictions")
        body = _json(response)
        results = [p for item in body.get("results") or [] if (p := _listed(item)) is not None]
        return PredictionPage(results=results, next=body.get("next") or None)

    async def find_prediction_by_webhook(
        self,
        webhook: str,
        max_pages: int = 3,
        *,
        since: datetime | None = None,
        max_reads: int = 20,
    ) -> Prediction | None:
        """The newest recent prediction carrying this webhook URL, or None.

        After `PredictionOutcomeUnknown`: Conjure's webhook URL names the job, so it tells whether
        the uncertain create happened. Only the first `max_pages` pages (newest first) are read,
        and none of what was created before `since`. A list entry without its `webhook` (the
        list may leave it out; a prediction read by id carries it) is read by id, at most
        `max_reads` of them, newest first.
        """
        url: str | None = None
        reads = 0
        for _ in range(max_pages):
            page = await self.list_predictions(url)
            for prediction in page.results:
                if since is not None and _before(prediction.created_at, since):
                    return None  # newest first: everything further on is older still
                if prediction.webhook == webhook:
                    return prediction
                if prediction.webhook is None and reads < max_reads:
                    reads += 1
                    full = await self.get_prediction(prediction.id)
                    if full.webhook == webhook:
                        return full
            if page.next is None:
                break
            url = page.next
        return None

    async def default_webhook_secret(self) -> str:
        """The account's webhook signing secret (`whsec_...`); keep it out of logs."""
        key = _json(await self._request("GET", "/webhooks/default/secret")).get("key")
        if not isinstance(key, str) or not key:
            raise ReplicateError("GET /v1/webhooks/default/secret answered without a key")
        return key

    # -- models -----------------------------------------------------------------------------

    async def get_model(self, model: str) -> dict[str, Any]:
        """`GET /v1/models/{owner}/{name}`: the model, its `latest_version.openapi_schema`."""
        return _json(await self._request("GET", f"/models/{_checked_name(model)}"))

    async def get_version(self, model: str, version_id: str) -> dict[str, Any]:
        """`GET /v1/models/{owner}/{name}/versions/{id}`: a pinned version and its schema."""
        if not re.fullmatch(r"[0-9a-f]{64}", version_id):
            raise ValueError(f"not a version id: {version_id!r}")
        path = f"/models/{_checked_name(model)}/versions/{version_id}"
        return _json(await self._request("GET", path))

    async def get_deployment(self, deployment: str) -> dict[str, Any]:
        """`GET /v1/deployments/{owner}/{name}`: its `current_release` (model and version)."""
        return _json(await self._request("GET", f"/deployments/{_checked_name(deployment)}"))

    # -- files ------------------------------------------------------------------------------

    async def upload_file(
        self,
        content: bytes,
        *,
        filename: str,
        content_type: str,
        metadata: dict[str, Any] | None = None,
    ) -> UploadedFile:
        """Upload `content` through the Files API (`POST /v1/files`, multipart).

        Retried like a read (429, 5xx, no answer): unlike a prediction, an upload repeated after
        a lost answer costs nothing but a spare file, which Replicate deletes when it expires.
        """
        form = {"metadata": json.dumps(metadata)} if metadata else None
        response = await self._request(
            "POST",
            "/files",
            files={"content": (filename, content, content_type)},
            data=form,
        )
        try:
            return UploadedFile.model_validate(_json(response))
        except ValidationError:
            raise ReplicateUnavailableError(
                f"POST /v1/files -> {response.status_code} with a file Conjure cannot read"
            ) from None

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file once no prediction needs it (a second delete is a 404)."""
        await self._request("DELETE", f"/files/{quote(file_id, safe='')}")

    # -- transport --------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        json: dict[str, Any] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        extra_wait: float = 0,
        create: bool = False,
        webhook: str | None = None,
    ) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self._api + path_or_url
        request = self._http.build_request(
            method,
            url,
            json=json,
            files=files,
            data=data,
            headers={**self._headers(), **(headers or {})},
            **({"timeout": self._timeout_plus(extra_wait)} if extra_wait else {}),
        )
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=_log_retry,
            reraise=True,
        )
        return await retrying(self._send, request, create=create, webhook=webhook)

    async def _send(
        self, request: httpx.Request, *, create: bool, webhook: str | None
    ) -> httpx.Response:
        """One attempt, with every failure turned into the `ReplicateError` that says what to do."""
        where = f"{request.method} {request.url.path}"
        try:
            response = await self._http.send(request)
        except _NOT_SENT as exc:
            raise ReplicateConnectionError(
                f"{where}: could not connect ({_describe(exc)})"
            ) from exc
        except httpx.TransportError as exc:
            if create:
                raise PredictionOutcomeUnknown(
                    f"{where}: no answer ({_describe(exc)}); the prediction may exist",
                    webhook=webhook,
                ) from exc
            raise ReplicateUnavailableError(f"{where}: no answer ({_describe(exc)})") from exc
        if response.is_success:
            return response
        error = error_from_response(response, redact=[self._token] if self._token else [])
        if create and response.status_code >= 500:
            raise PredictionOutcomeUnknown(
                f"{error}; the prediction may exist",
                status=error.status,
                title=error.title,
                detail=error.detail,
                retry_after=error.retry_after,
                webhook=webhook,
            ) from error
        raise error

    def stream(self, url: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The server-sent events of a prediction's `urls.stream` (see bot.replicate.stream).
        The token goes only to this client's API origin or Replicate's own hosts: a stream URL
        is a capability URL, and a prediction from elsewhere must not learn the token."""
        target = httpx.URL(url)
        ours = _origin(target) == self._origin or (
            target.scheme == "https" and target.host.endswith(REPLICATE_HOSTS)
        )
        headers = self._headers() if ours else {"User-Agent": self._user_agent}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return read_events(self._http, url, headers)

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _timeout_plus(self, seconds: float) -> httpx.Timeout:
        """The client's timeouts with `seconds` more to read (for `Prefer: wait`)."""
        base = self._http.timeout
        read = base.read if base.read is not None else self._timeout
        return httpx.Timeout(
            connect=base.connect, read=read + seconds, write=base.write, pool=base.pool
        )

    def _stop(self, state: RetryCallState) -> bool:
        """Stop after `max_attempts`, or at once if Replicate asks for more than `max_backoff`."""
        if state.attempt_number >= self._max_attempts:
            return True
        retry_after = _retry_after(state)
        return retry_after is not None and retry_after > self._max_backoff

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, but never sooner than `Retry-After`."""
        backoff = self._backoff(state)
        retry_after = _retry_after(state)
        return backoff if retry_after is None else max(retry_after, backoff)


def _create_route(
    model: str | None, version: str | None, deployment: str | None
) -> tuple[str, dict[str, Any]]:
    """The path and body (without input) for the one target given."""
    if sum(target is not None for target in (model, version, deployment)) != 1:
        raise ValueError("give exactly one of model, version or deployment")
    if model is not None:
        if not _NAME.match(model):
            raise ValueError(f"model must be 'owner/name', got {model!r}")
        return f"/models/{model}/predictions", {}
    if deployment is not None:
        if not _NAME.match(deployment):
            raise ValueError(f"deployment must be 'owner/name', got {deployment!r}")
        return f"/deployments/{deployment}/predictions", {}
    assert version is not None
    match = _VERSION.match(version)
    if not match:
        raise ValueError(f"version must be a 64-hex id or 'owner/name:<id>', got {version!r}")
    return "/predictions", {"version": match["id"]}


def go_duration(seconds: float) -> str:
    """Seconds in Go's duration syntax, as `Cancel-After` takes them: `90s`, `1.5s`.

    Whole milliseconds, rounded down: a deadline must never pass the cost ceiling it stands for.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a deadline must be a positive number of seconds, not {seconds!r}")
    millis = int((Decimal(str(seconds)) * 1000).to_integral_value(rounding=ROUND_FLOOR))
    if millis < 1:
        raise ValueError(f"a deadline must be at least a millisecond, not {seconds!r} s")
    whole, fraction = divmod(millis, 1000)
    return f"{whole}s" if not fraction else f"{whole}.{fraction:03d}".rstrip("0") + "s"


def _checked_id(prediction_id: str) -> str:
    if not _PREDICTION_ID.match(prediction_id):
        raise ValueError(f"not a prediction id: {prediction_id!r}")
    return prediction_id


def _checked_name(name: str) -> str:
    """`owner/name`, checked so that it cannot reach another path."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"not an owner/name: {name!r}")
    return name


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise ReplicateUnavailableError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code} with a body that is not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise ReplicateUnavailableError(f"{response.request.url.path}: expected a JSON object")
    return body


def _prediction(response: httpx.Response) -> Prediction:
    try:
        return Prediction.model_validate(_json(response))
    except ValidationError:
        raise ReplicateUnavailableError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code} with a prediction Conjure cannot read"
        ) from None


def _listed(item: Any) -> Prediction | None:
    """One entry of a list page, or None when it is not a prediction Conjure can read (one odd
    entry must not hide the others from a lost create's lookup)."""
    try:
        return Prediction.model_validate(item)
    except ValidationError:
        logger.warning("skipped an unreadable entry in the list of predictions")
        return None


def _retryable(exc: BaseException) -> bool:
    # PredictionOutcomeUnknown is deliberately not here: it is not a ReplicateUnavailableError.
    return isinstance(exc, RateLimitedError | ReplicateUnavailableError | ReplicateConnectionError)


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    return exc.retry_after if isinstance(exc, ReplicateError) else None


def _describe(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    logger.warning(
        "Replicate attempt %d failed (%s); retrying in %.2fs", state.attempt_number, exc, delay
    )


def _before(moment: datetime | None, since: datetime) -> bool:
    """`moment < since`, reading a time without a zone as UTC (Replicate writes `Z`)."""
    if moment is None:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment < since
