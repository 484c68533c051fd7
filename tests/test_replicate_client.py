"""The Replicate client against the sandbox on loopback: routes, errors, and safe retries."""

from __future__ import annotations

import base64
import io
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.http_transport import http_client
from bot.replicate import files
from bot.replicate.client import Prediction, ReplicateClient
from bot.replicate.errors import (
    AuthenticationError,
    InsufficientCreditError,
    InvalidInputError,
    ModelNotFoundError,
    PredictionOutcomeUnknown,
    RateLimitedError,
    ReplicateConnectionError,
    ReplicateError,
    ReplicateUnavailableError,
    parse_retry_after,
)
from bot.sandbox import api_predictions, uploads
from bot.sandbox.faults import HttpFault

FLUX = "black-forest-labs/flux-schnell"
SDXL_ID = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL = f"stability-ai/sdxl:{SDXL_ID}"
DEPLOYMENT = "conjure/flux"
PROMPT = {"prompt": "a red fox in the snow"}


class RequestLog:
    """Counts the requests an httpx client really sends (an httpx event hook, not a mock)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)


@pytest.fixture
def sandbox(sandbox_server: Any) -> Any:
    sandbox_server.sandbox.faults.reset()
    return sandbox_server.sandbox


@pytest.fixture
def log() -> RequestLog:
    return RequestLog()


@pytest.fixture
async def client(sandbox_server: Any, log: RequestLog) -> AsyncIterator[ReplicateClient]:
    http = http_client(5.0, event_hooks={"request": [log]})
    async with (
        http,
        ReplicateClient(
            sandbox_server.url, sandbox_server.token, http=http, max_backoff=0.2
        ) as client,
    ):
        yield client


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused before anything is sent."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- creates ----------------------------------------------------------------------------------


async def test_create_on_an_official_model(
    client: ReplicateClient, sandbox_server: Any, sandbox: Any, log: RequestLog
):
    prediction = await client.create_prediction(model=FLUX, input=PROMPT)
    assert prediction.id in sandbox.predictions
    assert prediction.model == FLUX
    assert prediction.input == PROMPT
    assert sandbox.create_count == 1
    assert log.requests[0].url.path == f"/v1/models/{FLUX}/predictions"
    assert log.requests[0].headers["authorization"] == f"Bearer {sandbox_server.token}"


@pytest.mark.parametrize("version", [SDXL, SDXL_ID])
async def test_create_on_a_version(
    client: ReplicateClient, sandbox: Any, log: RequestLog, version: str
):
    prediction = await client.create_prediction(version=version, input=PROMPT)
    assert prediction.version == SDXL_ID
    assert prediction.model == "stability-ai/sdxl"
    assert sandbox.create_count == 1
    assert log.requests[0].url.path == "/v1/predictions"


async def test_create_on_a_deployment(client: ReplicateClient, sandbox: Any, log: RequestLog):
    prediction = await client.create_prediction(deployment=DEPLOYMENT, input=PROMPT)
    assert prediction.id in sandbox.predictions
    assert sandbox.create_count == 1
    assert log.requests[0].url.path == f"/v1/deployments/{DEPLOYMENT}/predictions"


async def test_create_carries_webhook_and_filter(client: ReplicateClient, sandbox: Any):
    webhook = "http://127.0.0.1:9/webhooks/replicate?job=42"
    prediction = await client.create_prediction(
        model=FLUX, input=PROMPT, webhook=webhook, webhook_events_filter=["start", "completed"]
    )
    assert prediction.webhook == webhook
    stored = sandbox.predictions[prediction.id]
    assert stored["webhook"] == webhook
    assert stored.get("webhook_events_filter", ["start", "completed"]) == ["start", "completed"]


async def test_create_with_prefer_wait(client: ReplicateClient, log: RequestLog):
    prediction = await client.create_prediction(model=FLUX, input=PROMPT, wait=10)
    assert log.requests[0].headers["prefer"] == "wait=10"
    assert prediction.status == "succeeded"
    assert all(url.startswith("data:") for url in prediction.output)


async def test_prefer_wait_lengthens_the_read_timeout(
    sandbox_server: Any, sandbox: Any, log: RequestLog
):
    sandbox.faults.slow_start = 0.5  # longer than the client's 0.3 s timeout
    http = http_client(0.3, event_hooks={"request": [log]})
    async with http, ReplicateClient(sandbox_server.url, sandbox_server.token, http=http) as client:
        prediction = await client.create_prediction(model=FLUX, input=PROMPT, wait=5)
    assert prediction.status == "succeeded"
    assert len(log.requests) == 1


async def test_create_needs_exactly_one_target(client: ReplicateClient, log: RequestLog):
    with pytest.raises(ValueError, match="exactly one"):
        await client.create_prediction(input=PROMPT)
    with pytest.raises(ValueError, match="exactly one"):
        await client.create_prediction(model=FLUX, deployment=DEPLOYMENT, input=PROMPT)
    with pytest.raises(ValueError, match="version"):
        await client.create_prediction(version="stability-ai/sdxl:latest", input=PROMPT)
    with pytest.raises(ValueError, match="model"):
        await client.create_prediction(model="flux-schnell", input=PROMPT)
    with pytest.raises(ValueError, match="wait"):
        await client.create_prediction(model=FLUX, input=PROMPT, wait=61)
    with pytest.raises(ValueError, match="webhook events"):
        await client.create_prediction(model=FLUX, input=PROMPT, webhook_events_filter=["done"])
    assert log.requests == []


# -- reads ------------------------------------------------------------------------------------


async def test_get_and_cancel(client: ReplicateClient, sandbox: Any):
    sandbox.faults.slow_start = 5.0  # keep it `starting` until canceled
    created = await client.create_prediction(model=FLUX, input=PROMPT)
    fetched = await client.get_prediction(created.id)
    assert (fetched.id, fetched.status) == (created.id, "starting")
    assert fetched.created_at is not None and fetched.created_at.utcoffset() == timedelta(0)
    assert not fetched.terminal
    canceled = await client.cancel_prediction(created.id)
    assert (canceled.id, canceled.status) == (created.id, "canceled")
    assert canceled.terminal
    assert (await client.get_prediction(created.id)).status == "canceled"


async def test_get_unknown_prediction_is_not_found(client: ReplicateClient, log: RequestLog):
    with pytest.raises(ModelNotFoundError) as excinfo:
        await client.get_prediction("doesnotexist0000000000000a")
    assert excinfo.value.status == 404
    assert len(log.requests) == 1  # a 4xx other than 429 is never retried


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Three predictions a list page instead of 100 (the sandbox's knob for tests)."""
    monkeypatch.setattr(api_predictions, "PAGE_SIZE", 3)
    return 3


async def test_list_follows_absolute_next(
    client: ReplicateClient, sandbox_server: Any, small_pages: int
):
    created = [await client.create_prediction(model=FLUX, input=PROMPT) for _ in range(7)]
    pages = [await client.list_predictions()]
    while pages[-1].next is not None:
        next_url = pages[-1].next
        assert next_url.startswith(sandbox_server.url + "/v1/predictions?")
        pages.append(await client.list_predictions(next_url))
    assert [len(page.results) for page in pages] == [3, 3, 1]
    seen = [p.id for page in pages for p in page.results]
    assert seen == [p.id for p in reversed(created)]  # newest first, each once


async def test_find_by_webhook_reads_at_most_max_pages(client: ReplicateClient, small_pages: int):
    webhook = "http://127.0.0.1:9/webhooks/replicate?job=old"
    target = await client.create_prediction(model=FLUX, input=PROMPT, webhook=webhook)
    for _ in range(6):
        await client.create_prediction(model=FLUX, input=PROMPT)
    assert await client.find_prediction_by_webhook(webhook, max_pages=2) is None
    found = await client.find_prediction_by_webhook(webhook, max_pages=3)
    assert found is not None and found.id == target.id


async def test_find_by_webhook_reads_entries_the_list_leaves_it_out_of(
    client: ReplicateClient, log: RequestLog, monkeypatch: pytest.MonkeyPatch
):
    """Where list entries carry no `webhook`, each recent one is read by id (newest first)."""
    monkeypatch.setattr(api_predictions, "LIST_CARRIES_WEBHOOK", False)
    webhook = "http://127.0.0.1:9/webhooks/replicate?job=listless"
    target = await client.create_prediction(model=FLUX, input=PROMPT, webhook=webhook)
    for _ in range(3):
        await client.create_prediction(model=FLUX, input=PROMPT)
    listed = await client.list_predictions()
    assert all(p.webhook is None for p in listed.results)
    log.requests.clear()
    found = await client.find_prediction_by_webhook(webhook)
    assert found is not None and found.id == target.id and found.webhook == webhook
    reads = [r for r in log.requests if r.method == "GET" and "/v1/predictions/" in r.url.path]
    assert len(reads) == 4  # the three newer ones, then the target
    log.requests.clear()
    assert await client.find_prediction_by_webhook(webhook, max_reads=2) is None
    assert len([r for r in log.requests if "/v1/predictions/" in r.url.path]) == 2


async def test_find_by_webhook_stops_at_predictions_older_than_the_job(
    client: ReplicateClient, log: RequestLog
):
    webhook = "http://127.0.0.1:9/webhooks/replicate?job=old-one"
    await client.create_prediction(model=FLUX, input=PROMPT, webhook=webhook)
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert await client.find_prediction_by_webhook(webhook, since=later) is None
    assert await client.find_prediction_by_webhook(webhook, since=later - timedelta(minutes=5))


async def test_list_refuses_to_send_the_token_elsewhere(client: ReplicateClient, log: RequestLog):
    with pytest.raises(ValueError, match="another host"):
        await client.list_predictions("https://example.com/v1/predictions?cursor=abc")
    assert log.requests == []


async def test_default_webhook_secret(client: ReplicateClient, sandbox_server: Any):
    assert await client.default_webhook_secret() == sandbox_server.webhook_secret


# -- error mapping ----------------------------------------------------------------------------


async def test_wrong_token_is_an_authentication_error_that_never_shows_the_token(
    sandbox_server: Any,
):
    token = "r8_wrongtokenthatmustnotleak"
    async with ReplicateClient(sandbox_server.url, token, max_backoff=0.2) as client:
        with pytest.raises(AuthenticationError) as excinfo:
            await client.create_prediction(model=FLUX, input=PROMPT)
        assert token not in repr(client)
        assert token not in str(client)
    error = excinfo.value
    assert error.status == 401
    assert error.user_message == (
        "Conjure's Replicate API token was rejected; ask an admin to check REPLICATE_API_TOKEN."
    )
    for text in (str(error), repr(error), error.user_message, str(error.__cause__)):
        assert token not in text
    assert sandbox_server.sandbox.create_count == 0


async def test_out_of_credit(client: ReplicateClient, sandbox: Any, log: RequestLog):
    sandbox.faults.http.append(HttpFault(status=402, method="POST"))
    with pytest.raises(InsufficientCreditError) as excinfo:
        await client.create_prediction(model=FLUX, input=PROMPT)
    assert excinfo.value.status == 402
    assert "credit" in excinfo.value.user_message
    assert len(log.requests) == 1
    assert sandbox.create_count == 0


async def test_unknown_model(client: ReplicateClient, sandbox: Any):
    with pytest.raises(ModelNotFoundError) as excinfo:
        await client.create_prediction(model="nobody/no-such-model", input=PROMPT)
    assert excinfo.value.status == 404
    assert sandbox.create_count == 0


async def test_missing_prompt_names_the_field(client: ReplicateClient, sandbox: Any):
    with pytest.raises(InvalidInputError) as excinfo:
        await client.create_prediction(model=FLUX, input={})
    error = excinfo.value
    assert error.status == 422
    assert error.invalid_fields
    assert "prompt is required" in error.user_message
    assert sandbox.create_count == 0


# -- retries ----------------------------------------------------------------------------------


async def test_429_on_get_is_retried_after_retry_after(
    sandbox_server: Any, sandbox: Any, log: RequestLog
):
    http = http_client(5.0, event_hooks={"request": [log]})
    async with (
        http,
        ReplicateClient(
            sandbox_server.url, sandbox_server.token, http=http, max_backoff=2.0
        ) as client,
    ):
        created = await client.create_prediction(model=FLUX, input=PROMPT)
        sandbox.faults.http.append(HttpFault(status=429, method="GET", retry_after=0.4))
        started = time.monotonic()
        fetched = await client.get_prediction(created.id)
        elapsed = time.monotonic() - started
    assert fetched.id == created.id
    assert elapsed >= 0.4
    assert [r.method for r in log.requests] == ["POST", "GET", "GET"]


async def test_retry_after_longer_than_max_backoff_is_not_waited_for(
    client: ReplicateClient, sandbox: Any, log: RequestLog
):
    sandbox.faults.http.append(HttpFault(status=429, retry_after=30))
    with pytest.raises(RateLimitedError) as excinfo:
        await client.get_prediction("doesnotexist0000000000000a")
    assert excinfo.value.retry_after == 30
    assert "30 seconds" in excinfo.value.user_message
    assert len(log.requests) == 1


async def test_429_on_create_is_retried_and_creates_exactly_one(
    client: ReplicateClient, sandbox: Any, log: RequestLog
):
    sandbox.faults.http.append(HttpFault(status=429, count=2, method="POST"))
    prediction = await client.create_prediction(model=FLUX, input=PROMPT)
    assert sandbox.create_count == 1
    assert list(sandbox.predictions) == [prediction.id]
    assert len(log.requests) == 3


async def test_429_on_create_gives_up_after_max_attempts(
    client: ReplicateClient, sandbox: Any, log: RequestLog
):
    sandbox.faults.http.append(HttpFault(status=429, count=10, method="POST"))
    with pytest.raises(RateLimitedError):
        await client.create_prediction(model=FLUX, input=PROMPT)
    assert len(log.requests) == 4
    assert sandbox.create_count == 0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_on_get_is_retried(
    client: ReplicateClient, sandbox: Any, log: RequestLog, status: int
):
    created = await client.create_prediction(model=FLUX, input=PROMPT)
    sandbox.faults.http.append(HttpFault(status=status, count=2, method="GET"))
    assert (await client.get_prediction(created.id)).id == created.id
    assert [r.method for r in log.requests] == ["POST", "GET", "GET", "GET"]


async def test_5xx_on_get_gives_up_as_unavailable(client: ReplicateClient, sandbox: Any):
    sandbox.faults.http.append(HttpFault(status=503, count=10, method="GET"))
    with pytest.raises(ReplicateUnavailableError) as excinfo:
        await client.default_webhook_secret()
    assert excinfo.value.status == 503


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_on_create_is_an_unknown_outcome_never_retried(
    client: ReplicateClient, sandbox: Any, log: RequestLog, status: int
):
    sandbox.faults.http.append(HttpFault(status=status, method="POST"))
    webhook = "http://127.0.0.1:9/webhooks/replicate?job=7"
    with pytest.raises(PredictionOutcomeUnknown) as excinfo:
        await client.create_prediction(model=FLUX, input=PROMPT, webhook=webhook)
    assert excinfo.value.status == status
    assert excinfo.value.webhook == webhook
    assert len(log.requests) == 1  # a retry would have succeeded and created one
    assert sandbox.create_count == 0


async def test_create_timeout_is_an_unknown_outcome_then_found_by_webhook(
    sandbox_server: Any, sandbox: Any, log: RequestLog
):
    webhook = "http://127.0.0.1:9/webhooks/replicate?job=timeout"
    http = http_client(0.3, event_hooks={"request": [log]})
    async with (
        http,
        ReplicateClient(
            sandbox_server.url, sandbox_server.token, http=http, max_backoff=0.2
        ) as client,
    ):
        other = await client.create_prediction(model=FLUX, input=PROMPT, webhook=webhook + "x")
        sandbox.faults.http.append(HttpFault(delay=1.0, method="POST"))
        with pytest.raises(PredictionOutcomeUnknown) as excinfo:
            await client.create_prediction(model=FLUX, input=PROMPT, webhook=webhook)
        assert [r.method for r in log.requests] == ["POST", "POST"]
        assert sandbox.create_count == 2  # it was created: only the answer was lost

        found = await client.find_prediction_by_webhook(excinfo.value.webhook or "")
        assert found is not None and found.id != other.id
        assert found.id in sandbox.predictions
        assert sandbox.predictions[found.id]["webhook"] == webhook
        assert await client.find_prediction_by_webhook(webhook + "-never-sent") is None


async def test_refused_connection_on_create_is_retried_then_raised(log: RequestLog):
    http = http_client(2.0, event_hooks={"request": [log]})
    async with (
        http,
        ReplicateClient(
            closed_port_url(), "r8_secret_token_value", http=http, max_backoff=0.05
        ) as client,
    ):
        with pytest.raises(ReplicateConnectionError) as excinfo:
            await client.create_prediction(model=FLUX, input=PROMPT)
    assert len(log.requests) == 4
    assert "r8_secret_token_value" not in str(excinfo.value)
    assert "r8_secret_token_value" not in repr(excinfo.value)
    assert excinfo.value.user_message.startswith("Conjure could not reach Replicate")


# -- pieces -----------------------------------------------------------------------------------


def test_repr_never_shows_the_token():
    client = ReplicateClient("http://127.0.0.1:1", "r8_do_not_print_me")
    assert "r8_do_not_print_me" not in repr(client)
    assert repr(client) == "ReplicateClient(base_url='http://127.0.0.1:1')"


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("2023-08-16T18:57:08.36078514Z", 360785),
        ("2023-08-16T18:57:15.32Z", 320000),
        ("2023-08-16T18:57:15Z", 0),
    ],
)
def test_prediction_times_with_z_and_up_to_8_fraction_digits(text: str, micros: int):
    prediction = Prediction.model_validate({"id": "x", "status": "starting", "created_at": text})
    assert prediction.created_at is not None
    assert prediction.created_at.microsecond == micros
    assert prediction.created_at.utcoffset() == timedelta(0)


def test_prediction_keeps_unknown_fields_and_knows_terminal_states():
    prediction = Prediction.model_validate(
        {"id": "x", "status": "aborted", "data_removed": True, "deadline": None}
    )
    assert prediction.terminal
    assert prediction.model_extra == {"data_removed": True, "deadline": None}
    assert not Prediction(id="y", status="processing").terminal


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (parse_retry_after(later) or 0) <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier) == 0.0


# -- image inputs and the Files API ---------------------------------------------------------


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG that does not compress (random pixels), so its byte size follows its pixel size."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_a_small_image_is_sent_inline_as_a_data_url(client: ReplicateClient, log: RequestLog):
    at_limit = b"\x89PNG" + b"x" * (files.DATA_URL_MAX_BYTES - 4)
    url = await files.image_input(client, at_limit, "image/png; charset=binary", "fox.png")
    assert url == "data:image/png;base64," + base64.b64encode(at_limit).decode()
    assert log.requests == []


async def test_a_large_image_is_uploaded_and_a_model_reads_it(
    client: ReplicateClient, sandbox: Any, log: RequestLog
):
    image = noisy_png((320, 300))
    assert len(image) > files.DATA_URL_MAX_BYTES
    url = await files.image_input(client, image, "image/png", "fox.png")
    [upload] = sandbox.uploads.newest_first()
    assert url == f"{str(log.requests[0].url).removesuffix('/v1/files')}/v1/files/{upload.id}"
    assert (upload.content, upload.content_type, upload.name) == (image, "image/png", "fox.png")
    version = (
        "nightmareai/real-esrgan:42fed1c4974146d4d2414e2be2c5277c7fcf05fcc3a73abf41610695738c1d7b"
    )
    done = await client.create_prediction(
        version=version, input={"image": url, "scale": 2}, wait=30
    )
    assert done.status == "succeeded", done.error
    assert isinstance(done.output, str) and done.output.startswith("data:image/png;base64,")
    upscaled = Image.open(io.BytesIO(base64.b64decode(done.output.partition(",")[2])))
    assert upscaled.size == (640, 600)


async def test_one_byte_over_the_inline_limit_is_uploaded(client: ReplicateClient, sandbox: Any):
    content = b"y" * (files.DATA_URL_MAX_BYTES + 1)
    url = await files.image_input(client, content, "image/webp", "v.webp")
    [upload] = sandbox.uploads.newest_first()
    assert url.endswith(f"/v1/files/{upload.id}") and upload.content == content


async def test_an_upload_is_retried_on_5xx_429_and_a_lost_answer(
    sandbox_server: Any, sandbox: Any, log: RequestLog
):
    http = http_client(0.5, event_hooks={"request": [log]})
    async with (
        http,
        ReplicateClient(
            sandbox_server.url, sandbox_server.token, http=http, max_backoff=0.2
        ) as client,
    ):
        sandbox.faults.http += [
            HttpFault(status=503, method="POST", path_prefix="/v1/files"),
            HttpFault(status=429, method="POST", path_prefix="/v1/files", retry_after=0.1),
        ]
        first = await client.upload_file(b"abc", filename="a.png", content_type="image/png")
        assert len(log.requests) == 3 and len(sandbox.uploads.newest_first()) == 1
        sandbox.faults.http.append(HttpFault(delay=1.0, method="POST", path_prefix="/v1/files"))
        second = await client.upload_file(b"def", filename="b.png", content_type="image/png")
    assert sandbox.uploads.get(first.id).content == b"abc"
    assert sandbox.uploads.get(second.id).content == b"def"
    # The lost answer's upload happened too: a spare file, harmless, gone when it expires.
    assert len(sandbox.uploads.newest_first()) == 3


async def test_upload_errors_are_the_clients_error_types(
    sandbox_server: Any, sandbox: Any, client: ReplicateClient, monkeypatch: pytest.MonkeyPatch
):
    async with ReplicateClient(sandbox_server.url, "r8_wrong", max_attempts=1) as stranger:
        with pytest.raises(AuthenticationError):
            await files.image_input(stranger, b"z" * 300_000, "image/png", "a.png")
    monkeypatch.setattr(uploads, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ReplicateError) as excinfo:
        await client.upload_file(b"z" * 2000, filename="a.png", content_type="image/png")
    assert excinfo.value.status == 413 and "maximum file size" in (excinfo.value.detail or "")
    assert sandbox.uploads.newest_first() == []


async def test_image_input_refuses_what_it_cannot_send(
    client: ReplicateClient, log: RequestLog, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(ValueError, match="needs content"):
        await files.image_input(client, b"", "image/png", "a.png")
    for bad in ("png", "image/", "image/png,evil", ""):
        with pytest.raises(ValueError, match="not a content type"):
            await files.image_input(client, b"x", bad, "a.png")
    monkeypatch.setattr(files, "MAX_UPLOAD_BYTES", 300_000)
    with pytest.raises(InvalidInputError) as excinfo:
        await files.image_input(client, b"x" * 300_001, "image/png", "a.png")
    assert "too large" in excinfo.value.user_message
    assert log.requests == []


async def test_delete_file(client: ReplicateClient, sandbox: Any):
    uploaded = await client.upload_file(b"abc", filename="a.txt", content_type="text/plain")
    await client.delete_file(uploaded.id)
    assert sandbox.uploads.get(uploaded.id) is None
    with pytest.raises(ModelNotFoundError):
        await client.delete_file(uploaded.id)
