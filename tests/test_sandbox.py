"""The Replicate sandbox, exercised over real loopback HTTP (and with Replicate's own client)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError, ReplicateError
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret
from standardwebhooks import Webhook

from bot.sandbox import (
    HttpFault,
    SandboxConfig,
    api_predictions,
    create_sandbox_app,
    run_sandbox,
)
from bot.sandbox.deadlines import BadDuration, parse_duration
from bot.sandbox.predictions import tqdm_line
from bot.sandbox.render import render_image
from bot.sandbox.webhooks import THROTTLE_SECONDS, PredictionWebhooks
from bot.serving import serve_app
from tests.sandbox_fixtures import SandboxServer, WebhookReceiver

FLUX = "/v1/models/black-forest-labs/flux-schnell/predictions"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
WHISPER_VERSION = "8099696689d249cf8b122d833c36ac3f75505c666a395ca40ef26f68e7d3d16e"
TOKEN = SandboxConfig().api_token
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{2,8}Z$")


# A fresh connection per request: bot.serving's listening socket is created without
# IPPROTO_TCP, so asyncio leaves Nagle on and every keep-alive request waits ~40 ms for an ACK.
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)


def api(server: SandboxServer, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client for the sandbox, authenticated with its token."""
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.AsyncClient(base_url=server.url, headers=headers, limits=NO_KEEPALIVE, **kwargs)


def anonymous(server: SandboxServer) -> httpx.AsyncClient:
    """An httpx client for the sandbox without credentials."""
    return httpx.AsyncClient(base_url=server.url, limits=NO_KEEPALIVE)


@contextlib.asynccontextmanager
async def official_client(server: SandboxServer, **options: Any) -> AsyncIterator[replicate.Client]:
    """Replicate's own client pointed at the sandbox, its connections closed afterwards;
    `options` go to its httpx clients (e.g. `headers`)."""
    client = replicate.Client(api_token=server.token, base_url=server.url, **options)
    try:
        yield client
    finally:  # the client has no close(); its httpx clients are created lazily
        if (async_http := getattr(client, "_Client__async_client", None)) is not None:
            await async_http.aclose()
        if (sync_http := getattr(client, "_Client__client", None)) is not None:
            sync_http.close()


def decode_data_url(url: str) -> tuple[str, bytes]:
    header, _, data = url.partition(",")
    assert header.startswith("data:") and header.endswith(";base64")
    return header[5:-7], base64.b64decode(data)


# --- Replicate's official client -----------------------------------------------------------


async def test_official_client_runs_flux_and_gets_a_real_image(sandbox_server: SandboxServer):
    async with official_client(sandbox_server) as client:
        output = await client.async_run("black-forest-labs/flux-schnell", input={"prompt": "a fox"})
        assert len(output) == 1
        image = Image.open(io.BytesIO(await output[0].aread()))
    image.load()
    assert image.format == "WEBP"
    side = sandbox_server.sandbox.config.image_side
    assert image.size == (side, side)


async def test_official_sync_client_by_version_and_for_llama(sandbox_server: SandboxServer):
    async with official_client(sandbox_server) as client:
        output = await asyncio.to_thread(
            client.run,
            f"stability-ai/sdxl:{SDXL_VERSION}",
            input={"prompt": "a castle", "width": 768, "height": 512, "num_outputs": 2},
        )
        images = [Image.open(io.BytesIO(item.read())) for item in output]
        tokens = await asyncio.to_thread(
            client.run, "meta/meta-llama-3-8b-instruct", input={"prompt": "why is the sky blue"}
        )
    assert [i.format for i in images] == ["PNG", "PNG"]
    side = sandbox_server.sandbox.config.image_side  # 768 x 512 shrunk to fit
    assert images[0].size == (side, round(side * 512 / 768))
    assert "why is the sky blue" in "".join(tokens)


async def test_official_client_sees_failures_and_errors(sandbox_server: SandboxServer):
    async with official_client(sandbox_server) as client:
        with pytest.raises(ModelError):
            await client.async_run(
                "black-forest-labs/flux-schnell", input={"prompt": "FAIL_ME now"}
            )
        with pytest.raises(ReplicateError) as info:
            await client.async_run("black-forest-labs/flux-schnell", input={})
        model = await client.models.async_get("black-forest-labs/flux-schnell")
        page = await client.predictions.async_list()
    assert info.value.status == 422
    assert info.value.title == "Input validation failed"
    assert model.latest_version is not None
    schemas = model.latest_version.openapi_schema["components"]["schemas"]
    assert "prompt" in schemas["Input"]["properties"]
    assert [p.status for p in page.results] == ["failed"]


# --- Webhooks --------------------------------------------------------------------------------


async def test_webhooks_are_signed_for_replicate_and_standard_webhooks(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    async with official_client(sandbox_server) as client:
        fetched = await client.webhooks.default.async_secret()
    assert fetched.key == sandbox_server.webhook_secret
    secret = WebhookSigningSecret(key=sandbox_server.webhook_secret)
    async with api(sandbox_server) as http:
        hook = f"{webhook_receiver.url}/hooks/job-1"
        created = (await http.post(FLUX, json={"input": {"prompt": "x"}, "webhook": hook})).json()
    await sandbox_server.sandbox.wait_idle()
    received = webhook_receiver.received
    assert received and {r.path for r in received} == {"/hooks/job-1"}
    for item in received:
        replicate.webhooks.validate(headers=item.headers, body=item.body.decode(), secret=secret)
        request = httpx.Request("POST", hook, headers=item.headers, content=item.body)
        replicate.webhooks.validate(request=request, secret=secret, tolerance=300)
        payload = Webhook(sandbox_server.webhook_secret).verify(item.body, item.headers)
        assert payload["id"] == created["id"]
        assert payload["webhook"] == hook
    statuses = [json.loads(r.body)["status"] for r in received]
    assert statuses[0] == "starting" and statuses[-1] == "succeeded"
    assert len({r.headers["webhook-id"] for r in received}) == len(received)
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(
            headers=received[0].headers, body=received[0].body.decode() + " ", secret=secret
        )


async def test_webhook_events_filter_is_respected(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    hook = f"{webhook_receiver.url}/h"
    async with api(sandbox_server) as http:
        only_done = {
            "input": {"prompt": "x"},
            "webhook": hook,
            "webhook_events_filter": ["completed"],
        }
        sandbox.faults.drop_webhooks = 1  # one lost attempt: retried, still one webhook queued
        first = (await http.post(FLUX, json=only_done)).json()
        await sandbox.wait_idle()
        assert first["webhook_events_filter"] == ["completed"]
        assert [d.event for d in sandbox.webhook_deliveries] == ["completed", "completed"]
        async with anonymous(sandbox_server) as guest:
            stats = (await guest.get("/_sandbox/stats")).json()
        assert stats["webhooks_queued"] == 1 and stats["webhook_deliveries"] == 2
        llama = "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
        filtered = {"input": {"prompt": "x"}, "webhook": hook, "webhook_events_filter": ["output"]}
        await http.post(llama, json=filtered)
        await sandbox.wait_idle()
    later = {d.event for d in sandbox.webhook_deliveries[2:]}
    assert later == {"output"}
    assert len(webhook_receiver.received) == len(sandbox.webhook_deliveries) - 1  # one dropped
    assert sandbox.webhooks_queued == len(sandbox.webhook_deliveries) - 1


async def test_default_filter_sends_start_logs_output_completed_in_order(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    began = asyncio.get_running_loop().time()
    async with api(sandbox_server) as http:
        body = {
            "input": {"prompt": "x", "num_inference_steps": 28},
            "webhook": webhook_receiver.url,
        }
        created = await http.post("/v1/models/black-forest-labs/flux-dev/predictions", json=body)
    assert created.json()["webhook_events_filter"] == ["start", "output", "logs", "completed"]
    await sandbox.wait_idle()
    took = asyncio.get_running_loop().time() - began
    events = [d.event for d in sandbox.webhook_deliveries]
    assert events[0] == "start" and events[-1] == "completed"
    assert {"logs", "output"} <= set(events)
    # Throttled (at most one per interval of the run's time, however slow the machine), yet
    # at least one: the 29 lines (the seed, then 28 steps) are never all sent when the run is
    # quicker than 29 intervals. (On a machine slower than that, each line may be sent.)
    interval = THROTTLE_SECONDS * sandbox.config.speed
    [prediction] = sandbox.predictions.values()
    lines = len(prediction["logs"].splitlines())
    assert lines == 29, prediction["logs"]
    # Each started interval may send one, and the run's end flushes the last lines.
    assert 1 <= events.count("logs") <= min(lines, math.ceil(took / interval) + 2)
    order = {"starting": 0, "processing": 1, "succeeded": 2}
    ranks = [order[d.status] for d in sandbox.webhook_deliveries]
    assert ranks == sorted(ranks) and 1 in ranks


async def test_a_late_throttle_timer_never_sends_within_the_interval(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    """A change held back by the throttle waits on a timer. On a busy loop that timer can run
    late, after a later change was already sent at once: it must not send again within the
    interval (seen as 17 logs webhooks in 0.13 s at an interval of 0.01 s), nor lose the
    latest change."""
    sandbox = sandbox_server.sandbox
    interval = THROTTLE_SECONDS * sandbox.config.speed
    prediction: dict[str, Any] = {"id": "p1", "status": "processing", "logs": ""}
    hooks = PredictionWebhooks(sandbox, prediction, f"{webhook_receiver.url}/h", ["logs"])

    def log(line: str) -> None:
        prediction["logs"] += line + "\n"
        hooks.changed("logs")

    log("one")  # sent at once
    log("two")  # held back: a timer for the end of the interval
    time.sleep(interval * 1.5)  # noqa: ASYNC251 - the loop busy past that end: the timer is late
    log("three")  # the interval is over: sent at once, before the late timer runs
    await asyncio.sleep(interval * 3)  # the timer's turn comes, and passes
    log("four")  # too soon after "three": held back
    await sandbox.wait_idle()
    await asyncio.sleep(interval * 3)
    await sandbox.wait_idle()

    sent = [json.loads(d.body)["logs"] for d in sandbox.webhook_deliveries]
    assert sent == ["one\n", "one\ntwo\nthree\n", "one\ntwo\nthree\nfour\n"]


async def test_dropped_terminal_webhook_is_retried_with_the_same_id(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    sandbox.faults.drop_webhooks = 1
    body = {"input": {"prompt": "x"}, "webhook": webhook_receiver.url}
    body["webhook_events_filter"] = ["completed"]
    async with api(sandbox_server) as http:
        await http.post(FLUX, json=body)
    await sandbox.wait_idle()
    first, second = sandbox.webhook_deliveries
    assert (first.dropped, first.attempt, first.response_status) == (True, 1, None)
    assert (second.dropped, second.attempt, second.response_status) == (False, 2, 200)
    assert first.webhook_id == second.webhook_id
    assert len(webhook_receiver.received) == 1
    assert webhook_receiver.received[0].headers["webhook-id"] == first.webhook_id


async def test_only_the_terminal_webhook_is_retried_and_redirects_are_not_followed(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    webhook_receiver.statuses = [500, 307, 502]  # start fails; completed fails twice
    body = {"input": {"prompt": "x"}, "webhook": webhook_receiver.url}
    body["webhook_events_filter"] = ["start", "completed"]
    async with api(sandbox_server) as http:
        await http.post(FLUX, json=body)
    await sandbox.wait_idle()
    seen = [(d.event, d.attempt, d.response_status) for d in sandbox.webhook_deliveries]
    assert seen == [
        ("start", 1, 500),
        ("completed", 1, 307),
        ("completed", 2, 502),
        ("completed", 3, 200),
    ]


async def test_unreachable_webhook_gives_up_after_five_attempts(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.config.speed = 0.002  # backoff 4+8+16+32 s, scaled
    body = {"input": {"prompt": "x"}, "webhook": "http://127.0.0.1:9/gone"}
    body["webhook_events_filter"] = ["completed"]
    async with api(sandbox_server) as http:
        await http.post(FLUX, json=body)
    await sandbox.wait_idle()
    attempts = sandbox.webhook_deliveries
    assert [d.attempt for d in attempts] == [1, 2, 3, 4, 5]
    assert all(d.error and d.response_status is None for d in attempts)


# --- Prediction lifecycle ----------------------------------------------------------------------


async def test_status_progression_logs_and_prediction_shape(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.faults.slow_start = 0.3
    async with api(sandbox_server) as http:
        body = {"input": {"prompt": "a cat", "seed": 7}}
        created = (await http.post(FLUX, json=body)).json()
        assert re.fullmatch(r"[a-z0-9]{26}", created["id"])
        assert created["status"] == "starting"
        assert created["started_at"] is None and created["output"] is None
        assert TIME.match(created["created_at"])
        base = f"{sandbox_server.url}/v1/predictions/{created['id']}"
        assert created["urls"]["get"] == base and created["urls"]["cancel"] == f"{base}/cancel"
        assert created["urls"]["web"].startswith(sandbox_server.url)
        assert (created["version"], created["source"], created["data_removed"]) == (
            "hidden",
            "api",
            False,
        )
        assert created["webhook"] is None and created["input"] == {"prompt": "a cat", "seed": 7}
        assert (await http.get(base)).json()["status"] == "starting"
        await sandbox.wait_idle()
        done = (await http.get(base)).json()
    assert done["status"] == "succeeded" and done["error"] is None
    lines = done["logs"].splitlines()
    assert lines[0] == "Using seed: 7"
    assert re.fullmatch(r"  25%\|██▌       \| 1/4 \[\d\d:\d\d<\d\d:\d\d, .*it/s\]", lines[1])
    assert lines[-1].startswith(" 100%|██████████| 4/4 [")
    assert TIME.match(done["started_at"]) and TIME.match(done["completed_at"])
    assert done["created_at"] < done["started_at"] <= done["completed_at"]
    metrics = done["metrics"]
    assert 0 < metrics["predict_time"] <= metrics["total_time"]
    assert metrics["total_time"] >= 0.3
    assert done["output"] == [f"{sandbox_server.url}/files/{done['id']}/out-0.webp"]


def test_tqdm_line_matches_tqdm():
    assert tqdm_line(1, 4, 0.25) == "  25%|██▌       | 1/4 [00:00<00:00,  4.00it/s]"


async def test_prefer_wait_inlines_files_as_data_urls(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        body = {"input": {"prompt": "two", "num_outputs": 2, "output_format": "png"}}
        answer = await http.post(FLUX, json=body, headers={"Prefer": "wait"})
        assert answer.status_code == 201
        waited = answer.json()
        assert waited["status"] == "succeeded"
        decoded = [decode_data_url(url) for url in waited["output"]]
        assert [mime for mime, _ in decoded] == ["image/png", "image/png"]
        assert decoded[0][1] != decoded[1][1]  # the index is drawn, so outputs differ
        later = (await http.get(waited["urls"]["get"])).json()
    assert later["output"][1] == f"{sandbox_server.url}/files/{waited['id']}/out-1.png"
    async with anonymous(sandbox_server) as guest:
        file = await guest.get(later["output"][1])
    assert file.status_code == 200 and file.headers["content-type"] == "image/png"
    assert file.content == decoded[1][1]


async def test_prefer_wait_n_gives_up_after_n_seconds(sandbox_server: SandboxServer):
    sandbox_server.sandbox.faults.slow_start = 1.5
    async with api(sandbox_server) as http:
        started = time.monotonic()
        answer = await http.post(
            FLUX, json={"input": {"prompt": "x"}}, headers={"Prefer": "wait=1"}
        )
        elapsed = time.monotonic() - started
        assert answer.status_code == 201 and answer.json()["status"] == "starting"
        assert 0.9 <= elapsed < 1.4
        await http.post(answer.json()["urls"]["cancel"])


async def test_cancel_moves_to_canceled_and_sends_completed(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    sandbox.faults.slow_start = 5
    async with api(sandbox_server) as http:
        body = {"input": {"prompt": "x"}, "webhook": webhook_receiver.url}
        created = (await http.post(FLUX, json=body)).json()
        canceled = await http.post(created["urls"]["cancel"])
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        assert TIME.match(canceled.json()["completed_at"])
        assert "predict_time" in canceled.json()["metrics"]
        await sandbox.wait_idle(timeout=2)
        assert (await http.get(created["urls"]["get"])).json()["status"] == "canceled"
        again = await http.post(created["urls"]["cancel"])
        assert again.json()["completed_at"] == canceled.json()["completed_at"]
        assert (await http.post("/v1/predictions/nope/cancel")).status_code == 404
    await sandbox.wait_idle(timeout=2)
    events = [(d.event, d.status) for d in sandbox.webhook_deliveries]
    assert events[0] == ("start", "starting") and events[-1] == ("completed", "canceled")
    assert ("logs", "canceled") in events  # every prediction gets a logs webhook


async def test_list_is_newest_first_with_absolute_next(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(api_predictions, "PAGE_SIZE", 3)
    llama = "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    async with api(sandbox_server) as http:
        ids = [
            (await http.post(llama, json={"input": {"prompt": str(i)}})).json()["id"]
            for i in range(7)
        ]
        seen: list[str] = []
        url: str | None = "/v1/predictions"
        pages = 0
        while url is not None:
            page = (await http.get(url)).json()
            assert page["previous"] is None
            seen += [p["id"] for p in page["results"]]
            url = page["next"]
            pages += 1
            if url is not None:
                assert url.startswith(f"{sandbox_server.url}/v1/predictions?cursor=")
        assert (await http.get("/v1/predictions?cursor=%%%")).status_code == 400
    assert pages == 3 and seen == ids[::-1]
    async with official_client(sandbox_server) as client:
        first = await client.predictions.async_list()
        second = await client.predictions.async_list(first.next)
    assert [p.id for p in first.results + second.results] == ids[::-1][:6]
    await sandbox_server.sandbox.wait_idle()


# --- Errors ----------------------------------------------------------------------------------


async def test_missing_or_wrong_token_is_401(sandbox_server: SandboxServer):
    expected = {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }
    async with anonymous(sandbox_server) as guest:
        wrong = ({}, {"Authorization": "Bearer r8_wrong"}, {"Authorization": f"Token {TOKEN}"})
        for headers in wrong:
            answer = await guest.get("/v1/account", headers=headers)
            assert answer.status_code == 401
            assert answer.json() == expected
            assert answer.headers["content-type"] == "application/problem+json"
        assert (await guest.post(FLUX, json={"input": {"prompt": "x"}})).status_code == 401
        assert (await guest.get("/_sandbox/stats")).json()["create_count"] == 0


async def test_unknown_things_are_404(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        attempts = [
            http.get("/v1/models/nobody/nothing"),
            http.get("/v1/predictions/aaaaaaaaaaaaaaaaaaaaaaaaaa"),
            http.post("/v1/predictions", json={"version": "0" * 64, "input": {"prompt": "x"}}),
            http.post("/v1/predictions", json={"version": f"stability-ai/sdxl:{'1' * 64}"}),
            http.post("/v1/predictions", json={"version": "stability-ai/sdxl", "input": {}}),
            http.post("/v1/models/stability-ai/sdxl/predictions", json={"input": {"prompt": "x"}}),
            http.post("/v1/deployments/conjure/nope/predictions", json={"input": {}}),
            http.get("/v1/no/such/route"),
        ]
        for answer in await asyncio.gather(*attempts):
            assert answer.status_code == 404, answer.request.url
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["status"] == 404 and answer.json()["detail"]
    assert sandbox_server.sandbox.create_count == 0


async def test_invalid_input_is_422_in_replicates_shape(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        missing = await http.post(FLUX, json={"input": {}})
        assert missing.status_code == 422
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json() == {
            "title": "Input validation failed",
            "detail": "- input: prompt is required\n",
            "status": 422,
            "invalid_fields": [
                {"type": "required", "field": "input", "description": "prompt is required"}
            ],
        }

        async def fields(body: dict[str, Any], path: str = FLUX) -> list[tuple[str, str]]:
            answer = await http.post(path, json=body)
            assert answer.status_code == 422
            return [(f["type"], f["field"]) for f in answer.json()["invalid_fields"]]

        bad = {"prompt": "x", "num_outputs": "2", "output_quality": 101, "aspect_ratio": "2:1"}
        assert await fields({"input": bad}) == [
            ("enum", "input.aspect_ratio"),
            ("invalid_type", "input.num_outputs"),
            ("number_lte", "input.output_quality"),
        ]
        assert await fields({"input": {"prompt": "x", "num_inference_steps": 0}}) == [
            ("number_gte", "input.num_inference_steps")
        ]
        assert await fields({"input": {"prompt": 3}}) == [("invalid_type", "input.prompt")]
        assert await fields({"input": {"prompt": "x"}, "version": "x"}) == [
            ("additional_property_not_allowed", "(root)")
        ]
        assert await fields({"input": {"prompt": "x"}, "webhook_events_filter": ["done"]}) == [
            ("enum", "webhook_events_filter.0")
        ]
        assert await fields({"input": {"prompt": "x"}, "webhook": "ftp://x"}) == [
            ("format", "webhook")
        ]
        assert await fields({"input": {"prompt": "x"}}, "/v1/predictions") == [
            ("required", "(root)")
        ]
        for raw in (b"{", b'{"input": {"prompt": NaN}}', b'{"input": {"prompt": "\\ud83d"}}'):
            answer = await http.post(FLUX, content=raw)
            assert answer.status_code == 400 and answer.json()["title"] == "Invalid JSON"
        enum = await http.post(FLUX, json={"input": {"prompt": "x", "megapixels": "2"}})
        assert enum.json()["detail"] == (
            '- input.megapixels: input.megapixels must be one of the following: "1", "0.25"\n'
        )
    assert sandbox_server.sandbox.create_count == 0


# --- Faults ----------------------------------------------------------------------------------


async def test_throttling_fault_answers_429_with_retry_after(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.faults.http = [
        HttpFault(status=429, count=2, method="POST", path_prefix="/v1/models/", retry_after=2)
    ]
    async with api(sandbox_server) as http:
        assert (await http.get("/v1/account")).status_code == 200  # other routes unaffected
        for _ in range(2):
            throttled = await http.post(FLUX, json={"input": {"prompt": "x"}})
            assert throttled.status_code == 429
            assert throttled.headers["retry-after"] == "2"
            assert throttled.json() == {
                "detail": "Request was throttled. Your rate limit resets in ~30s.",
                "status": 429,
            }
        assert sandbox.create_count == 0
        assert (await http.post(FLUX, json={"input": {"prompt": "x"}})).status_code == 201
    assert sandbox.faults.http == []
    await sandbox.wait_idle()


async def test_server_error_and_credit_faults(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.faults.http = [
        HttpFault(status=500, method="GET", path_prefix="/v1/predictions"),
        HttpFault(status=402),
        HttpFault(status=503),
    ]
    async with api(sandbox_server) as http:
        created = await http.post(FLUX, json={"input": {"prompt": "x"}})
        assert created.status_code == 402
        assert created.json()["title"] == "Insufficient credit"
        assert (await http.post(FLUX, json={"input": {"prompt": "x"}})).status_code == 503
        ok = (await http.post(FLUX, json={"input": {"prompt": "x"}})).json()
        broken = await http.get(ok["urls"]["get"])
        assert broken.status_code == 500
        assert broken.headers["content-type"] == "application/problem+json"
        assert set(broken.json()) == {"title", "detail", "status"}
        assert (await http.get(ok["urls"]["get"])).status_code == 200
    assert sandbox.create_count == 1
    await sandbox.wait_idle()


async def test_fail_next_and_fail_me_end_failed(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.faults.fail_next = 1
    async with api(sandbox_server) as http:
        ids = [
            (await http.post(FLUX, json={"input": {"prompt": prompt}})).json()["id"]
            for prompt in ("first", "second", "please FAIL_ME")
        ]
        await sandbox.wait_idle()
        done = [(await http.get(f"/v1/predictions/{i}")).json() for i in ids]
    assert [p["status"] for p in done] == ["failed", "succeeded", "failed"]
    assert done[0]["error"] == sandbox.faults.fail_error and done[0]["output"] is None
    assert done[2]["error"] and "metrics" in done[2]


async def test_slow_start_keeps_a_prediction_starting(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.faults.slow_start = 0.3
    async with api(sandbox_server) as http:
        created = (await http.post(FLUX, json={"input": {"prompt": "x"}})).json()
        await asyncio.sleep(0.15)
        assert (await http.get(created["urls"]["get"])).json()["status"] == "starting"
        await sandbox.wait_idle()
        done = (await http.get(created["urls"]["get"])).json()
    assert done["status"] == "succeeded"
    assert done["metrics"]["total_time"] - done["metrics"]["predict_time"] >= 0.3


async def test_run_seconds_makes_every_run_take_that_long(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.config.speed = 0  # no model time of its own: all of it is the fault's
    sandbox.faults.run_seconds = 0.4
    async with api(sandbox_server) as http:
        created = (await http.post(FLUX, json={"input": {"prompt": "x"}})).json()
        await sandbox.wait_idle()
        done = (await http.get(created["urls"]["get"])).json()
        sandbox.faults.run_seconds = 0
        quick = (await http.post(FLUX, json={"input": {"prompt": "y"}})).json()
        await sandbox.wait_idle()
        quick = (await http.get(quick["urls"]["get"])).json()
    assert done["status"] == "succeeded"
    assert done["metrics"]["predict_time"] >= 0.4  # at least; a loaded machine adds to it
    assert quick["metrics"]["predict_time"] < 0.4


def drawing_takes(
    monkeypatch: pytest.MonkeyPatch, seconds: float, threads: list[str] | None = None
) -> None:
    """Make the sandbox's drawing of an image take `seconds` longer, noting each one's thread."""
    from bot.sandbox import runner

    drawn = runner.image_outputs

    def slower(*args: Any) -> Any:
        if threads is not None:
            threads.append(threading.current_thread().name)
        time.sleep(seconds)
        return drawn(*args)

    monkeypatch.setattr(runner, "image_outputs", slower)


async def test_an_image_is_drawn_during_its_run_not_after_it(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
):
    """A "1 s" run whose drawing takes 0.8 s still ends at about 1 s (it took 1.8 s when the
    drawing came after the steps); a run canceled meanwhile shows no output."""
    drawing_takes(monkeypatch, 0.8)
    sandbox = sandbox_server.sandbox
    sandbox.config.speed = 0
    sandbox.faults.run_seconds = 1.0
    async with api(sandbox_server) as http:
        started = time.monotonic()
        created = (await http.post(FLUX, json={"input": {"prompt": "x"}})).json()
        await sandbox.wait_idle()
        took = time.monotonic() - started
        done = (await http.get(created["urls"]["get"])).json()
        canceled = (await http.post(FLUX, json={"input": {"prompt": "y"}})).json()
        await asyncio.sleep(0.3)
        await http.post(canceled["urls"]["cancel"])
        await sandbox.wait_idle()
        canceled = (await http.get(canceled["urls"]["get"])).json()
    assert done["status"] == "succeeded" and done["output"]
    assert 1.0 <= took < 1.6
    assert canceled["status"] == "canceled" and not canceled["output"]


async def test_images_are_drawn_on_two_threads_of_their_own(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
):
    """Eight runs at once are drawn two at a time on the sandbox's drawing threads, not on
    asyncio's default pool, whose six threads took the GIL from the sandbox's event loop."""
    from bot.sandbox import runner

    threads: list[str] = []
    drawing_takes(monkeypatch, 0.05, threads)
    sandbox = sandbox_server.sandbox
    sandbox.config.speed = 0
    async with api(sandbox_server) as http:
        created = await asyncio.gather(
            *(http.post(FLUX, json={"input": {"prompt": f"image {n}"}}) for n in range(8))
        )
        await sandbox.wait_idle()
        done = [(await http.get(c.json()["urls"]["get"])).json() for c in created]
    assert [d["status"] for d in done] == ["succeeded"] * 8 and all(d["output"] for d in done)
    assert len(threads) == 8 and len(set(threads)) <= runner.DRAWING_THREADS == 2
    assert all(name.startswith("sandbox-drawing") for name in threads)


async def test_delay_fault_loses_the_answer_but_creates(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    sandbox.config.speed = 0.002  # the unreachable webhook's retries, scaled
    sandbox.faults.http = [HttpFault(delay=2.0, method="POST", path_prefix="/v1/models/")]
    hook = "http://127.0.0.1:9/hooks/job-42"
    async with api(sandbox_server, timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(FLUX, json={"input": {"prompt": "x"}, "webhook": hook})
        assert sandbox.create_count == 1
        recent = (await http.get("/v1/predictions")).json()["results"]
        assert [p["webhook"] for p in recent] == [hook]
        sandbox.faults.http = [HttpFault(status=503, delay=0.25)]
        started = time.monotonic()
        slow = await http.get("/v1/account", timeout=2)
        assert slow.status_code == 503 and time.monotonic() - started >= 0.25
    sandbox.faults.reset()
    await sandbox.wait_idle()


async def test_file_faults_apply_to_output_files_only_when_named(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    async with api(sandbox_server) as http, anonymous(sandbox_server) as guest:
        created = (await http.post(FLUX, json={"input": {"prompt": "x"}})).json()
        await sandbox.wait_idle()
        done = (await http.get(created["urls"]["get"])).json()
        path = httpx.URL(done["output"][0]).path
        sandbox.faults.http = [HttpFault(status=503)]  # no prefix: /v1 only
        assert (await guest.get(path)).status_code == 200
        assert sandbox.faults.http == [HttpFault(status=503)]
        sandbox.faults.http = [
            HttpFault(status=429, count=2, path_prefix="/files/", retry_after=1),
            HttpFault(delay=0.2, path_prefix="/files/"),
        ]
        throttled = await guest.get(path)
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
        assert (await guest.get(path)).status_code == 429
        started = time.monotonic()
        held = await guest.get(path)
        assert held.status_code == 200 and time.monotonic() - started >= 0.2
        assert sandbox.faults.http == []
    sandbox.faults.reset()


async def test_faults_can_be_set_over_http(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    async with anonymous(sandbox_server) as guest:
        body = {"fail_next": 2, "http": [{"status": 429, "retry_after": 0.5}], "slow_start": 0.1}
        answer = await guest.post("/_sandbox/faults", json=body)
        assert answer.status_code == 200 and answer.json()["fail_next"] == 2
        assert sandbox.faults.http == [HttpFault(status=429, retry_after=0.5)]
        assert sandbox.faults.slow_start == 0.1
        await guest.post("/_sandbox/faults", json={"drop_webhooks": 3})
        assert sandbox.faults.fail_next == 2 and sandbox.faults.drop_webhooks == 3
        assert (await guest.post("/_sandbox/faults", json={"nope": 1})).status_code == 422
        bad_http = {"http": [{"status": "x"}]}
        assert (await guest.post("/_sandbox/faults", json=bad_http)).status_code == 422
        async with api(sandbox_server) as http:
            throttled = await http.get("/v1/account")
            assert throttled.status_code == 429 and throttled.headers["retry-after"] == "0.5"
        assert (await guest.delete("/_sandbox/faults")).json()["fail_next"] == 0
        assert sandbox.faults.http == [] and sandbox.faults.drop_webhooks == 0
        stats = (await guest.get("/_sandbox/stats")).json()
    assert stats == {
        "create_count": 0,
        "predictions": 0,
        "webhook_deliveries": 0,
        "webhooks_queued": 0,
    }


# --- Routes and models -----------------------------------------------------------------------


async def test_version_and_deployment_routes(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        by_id = await http.post(
            "/v1/predictions", json={"version": SDXL_VERSION, "input": {"prompt": "x"}}
        )
        by_ref = await http.post(
            "/v1/predictions",
            json={"version": f"stability-ai/sdxl:{SDXL_VERSION}", "input": {"prompt": "x"}},
        )
        official = await http.post(
            "/v1/predictions",
            json={"version": "black-forest-labs/flux-schnell", "input": {"prompt": "x"}},
        )
        deployed = await http.post(
            "/v1/deployments/conjure/flux/predictions", json={"input": {"prompt": "x"}}
        )
        for answer in (by_id, by_ref, official, deployed):
            assert answer.status_code == 201
        assert by_id.json()["model"] == by_ref.json()["model"] == "stability-ai/sdxl"
        assert by_id.json()["version"] == SDXL_VERSION
        assert official.json()["version"] == "hidden"
        assert deployed.json()["model"] == "black-forest-labs/flux-schnell"
        other = await http.post(
            "/v1/deployments/acme/flux-dev/predictions", json={"input": {"prompt": "x"}}
        )
        assert other.json()["model"] == "black-forest-labs/flux-dev"
        deployment = (await http.get("/v1/deployments/conjure/flux")).json()
        assert deployment["current_release"]["model"] == "black-forest-labs/flux-schnell"
        await sandbox_server.sandbox.wait_idle()
        sdxl = (await http.get(by_id.json()["urls"]["get"])).json()
    assert sdxl["output"][0].endswith("/out-0.png")


async def test_catalog_account_and_secret(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        model = (await http.get("/v1/models/black-forest-labs/flux-schnell")).json()
        versions = (await http.get("/v1/models/stability-ai/sdxl/versions")).json()
        account = (await http.get("/v1/account")).json()
        secret = (await http.get("/v1/webhooks/default/secret")).json()
    assert model["is_official"] is True and model["owner"] == "black-forest-labs"
    schemas = model["latest_version"]["openapi_schema"]["components"]["schemas"]
    assert schemas["Input"]["required"] == ["prompt"]
    steps = schemas["Input"]["properties"]["num_inference_steps"]
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (1, 4, 4)
    ratio = schemas["Input"]["properties"]["aspect_ratio"]
    assert ratio["allOf"] == [{"$ref": "#/components/schemas/aspect_ratio"}]
    assert "9:21" in schemas["aspect_ratio"]["enum"]
    assert [v["id"] for v in versions["results"]] == [SDXL_VERSION]
    assert versions["next"] is None
    assert account["type"] in ("organization", "user") and account["username"]
    assert secret == {"key": sandbox_server.webhook_secret}


async def test_llama_tokens_join_into_an_answer_about_the_prompt(sandbox_server: SandboxServer):
    llama = "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    async with api(sandbox_server) as http:
        full = await http.post(
            llama, json={"input": {"prompt": "tell me a joke"}}, headers={"Prefer": "wait"}
        )
        short = await http.post(
            llama, json={"input": {"prompt": "x", "max_tokens": 3}}, headers={"Prefer": "wait"}
        )
    tokens = full.json()["output"]
    assert all(isinstance(t, str) for t in tokens) and len(tokens) > 5
    assert all(t.startswith(" ") for t in tokens[1:])
    assert "tell me a joke" in "".join(tokens)
    assert full.json()["metrics"]["output_token_count"] == len(tokens)
    assert len(short.json()["output"]) == 3


async def test_whisper_returns_a_transcript_object(sandbox_server: SandboxServer):
    audio = "https://example.com/voice.mp3"
    body = {"version": WHISPER_VERSION, "input": {"audio": audio, "transcription": "srt"}}
    async with api(sandbox_server) as http:
        created = (await http.post("/v1/predictions", json=body)).json()
        await sandbox_server.sandbox.wait_idle()
        output = (await http.get(created["urls"]["get"])).json()["output"]
        txt = await http.get(output["txt_file"])
        bad = await http.post(
            "/v1/predictions", json={"version": WHISPER_VERSION, "input": {"audio": "nope"}}
        )
    assert set(output) == {
        "transcription",
        "segments",
        "detected_language",
        "translation",
        "txt_file",
        "srt_file",
    }
    assert output["detected_language"] == "english" and output["translation"] is None
    assert "-->" in output["transcription"]
    assert txt.headers["content-type"].startswith("text/plain")
    assert txt.text == " ".join(s["text"].strip() for s in output["segments"])
    assert bad.json()["invalid_fields"][0]["type"] == "format"


def test_render_survives_any_text_and_every_format():
    prompts = ["😀👨‍👩‍👧 ünïcödé 世界 مرحبا", "\x00\ud83d\n\t", "", "w" * 400]
    for fmt, pil_name in (("webp", "WEBP"), ("jpg", "JPEG"), ("png", "PNG")):
        for prompt in prompts:
            data = render_image(prompt, seed=1, index=0, total=1, size=(256, 144), fmt=fmt)
            image = Image.open(io.BytesIO(data))
            assert (image.format, image.size) == (pil_name, (256, 144))
    other = render_image("a", seed=1, index=1, total=2, size=(64, 64), fmt="png")
    assert other != render_image("a", seed=1, index=0, total=2, size=(64, 64), fmt="png")


def test_render_shows_the_prompt_in_white_with_a_shadow_over_a_ramp():
    size = (400, 300)
    data = render_image("HELLO WORLD", seed=3, index=0, total=1, size=size, fmt="png")
    image = Image.open(io.BytesIO(data)).convert("RGB")
    blank = Image.open(
        io.BytesIO(render_image("", seed=3, index=0, total=1, size=size, fmt="png"))
    ).convert("RGB")
    # The background runs from a dark colour at the top to another at the bottom, in steps.
    top, bottom = image.getpixel((399, 0)), image.getpixel((399, 299))
    assert top != bottom and all(channel < 128 for channel in top)
    assert image.getpixel((399, 150)) == image.getpixel((300, 150))  # the same across a row
    # The prompt's first line is white, with a black shadow; the empty prompt's text differs.
    band = [image.getpixel((x, y)) for x in range(400) for y in range(20, 45)]
    assert any(min(pixel) >= 240 for pixel in band) and any(max(pixel) <= 15 for pixel in band)
    assert data != render_image("HELLO", seed=3, index=0, total=1, size=size, fmt="png")
    blank_band = [blank.getpixel((x, y)) for x in range(400) for y in range(20, 45)]
    assert blank_band != band


async def test_shutdown_cancels_background_work():
    app = create_sandbox_app(SandboxConfig(speed=1))
    sandbox = app.state.sandbox
    sandbox.faults.slow_start = 30
    started = time.monotonic()
    async with serve_app(app) as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            body = {"input": {"prompt": "x"}, "webhook": "http://127.0.0.1:9/x"}
            assert (await http.post(FLUX, json=body)).status_code == 201
        assert sandbox._tasks
    assert not sandbox._tasks
    assert time.monotonic() - started < 5


def test_the_demos_sandbox_draws_512_pixel_images_and_refuses_a_tiny_side() -> None:
    """The tests share a sandbox drawing small images (cheaper); the demo's draws them at 512."""
    assert SandboxConfig().image_side == 512
    with pytest.raises(ValueError, match="image_side must be >= 16"):
        SandboxConfig(image_side=8)


async def test_run_sandbox_serves_until_cancelled(capsys: pytest.CaptureFixture[str]):
    config = SandboxConfig(speed=0)
    task = asyncio.create_task(run_sandbox("127.0.0.1", 0, config))
    printed = ""
    for _ in range(200):
        printed += capsys.readouterr().out
        if printed:
            break
        await asyncio.sleep(0.01)
    match = re.fullmatch(
        r"Replicate sandbox on (http://127\.0\.0\.1:\d+) \(token (\S+), webhook secret (\S+)\)\n",
        printed,
    )
    assert match and match[2] == config.api_token and match[3] == config.webhook_secret
    headers = {"Authorization": f"Bearer {config.api_token}"}
    async with httpx.AsyncClient(base_url=match[1], headers=headers) as http:
        assert (
            await http.post(FLUX, json={"input": {"prompt": "x"}}, headers={"Prefer": "wait"})
        ).json()["status"] == "succeeded"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_burst_of_webhooks_is_sent_a_bounded_number_at_a_time(
    sandbox_server: SandboxServer,
) -> None:
    """Many predictions finishing together against a slow receiver: every completed webhook
    arrives, once, and never more than WEBHOOKS_AT_ONCE are open at a time."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bot.sandbox.state import WEBHOOKS_AT_ONCE

    open_now = 0
    most = 0
    completed: list[str] = []

    async def slow(request: Request) -> Response:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            await asyncio.sleep(0.5)
            payload = json.loads(await request.body())
            if payload["status"] == "succeeded":
                completed.append(payload["id"])
            return Response(status_code=200)
        finally:
            open_now -= 1

    receiver = Starlette(routes=[Route("/h", slow, methods=["POST"])])
    count = WEBHOOKS_AT_ONCE * 3
    async with serve_app(receiver) as url, api(sandbox_server, timeout=30) as http:
        only_done = {"input": {"prompt": "x"}, "webhook": f"{url}/h"}
        only_done["webhook_events_filter"] = ["completed"]
        created = await asyncio.gather(*(http.post(FLUX, json=only_done) for _ in range(count)))
        await sandbox_server.sandbox.wait_idle(timeout=30)
    assert sorted(completed) == sorted(r.json()["id"] for r in created)
    assert most <= WEBHOOKS_AT_ONCE, most


# --- Deadlines (Cancel-After) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5s", 1.5), ("500ms", 0.5), (".5s", 0.5),
     ("2h45m30.5s", 9930.5), ("250us", 0.00025), ("250µs", 0.00025)],
)  # fmt: skip
def test_cancel_after_takes_go_durations(text: str, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1.5", "5 m", "1d", "0", "0s", "-5s", "+5s", "s", "5x"])
def test_cancel_after_refuses_what_go_does_not_take_or_is_not_ahead(text: str):
    with pytest.raises(BadDuration):
        parse_duration(text)


def whisper_body(webhook: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"version": WHISPER_VERSION, "input": {"audio": "https://a.b/c.mp3"}}
    if webhook is not None:
        body["webhook"] = webhook
    return body


async def test_a_running_prediction_is_canceled_at_its_deadline_and_billed_what_ran(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    sandbox.faults.run_time_factor = 1000  # 8 steps of 2 s at speed 0.02: far past the deadline
    async with api(sandbox_server) as http:
        answer = await http.post(
            "/v1/predictions",
            json=whisper_body(webhook_receiver.url),
            headers={"Cancel-After": "1s"},  # room for a loaded machine to start it first
        )
        created = answer.json()
        assert answer.status_code == 201 and created["status"] == "starting"
        assert TIME.match(created["deadline"]) and created["deadline"] > created["created_at"]
        await sandbox.wait_idle(timeout=5)
        done = (await http.get(created["urls"]["get"])).json()
    assert done["status"] == "canceled" and done["output"] is None and done["error"] is None
    metrics = done["metrics"]
    assert 0 < metrics["predict_time"] < 1 <= metrics["total_time"] < 3
    events = [(d.event, d.status) for d in sandbox.webhook_deliveries]
    assert events[0] == ("start", "starting") and events[-1] == ("completed", "canceled")


async def test_a_prediction_still_starting_at_its_deadline_is_aborted_unbilled(
    sandbox_server: SandboxServer, webhook_receiver: WebhookReceiver
):
    sandbox = sandbox_server.sandbox
    sandbox.faults.slow_start = 5
    async with api(sandbox_server) as http:
        created = (
            await http.post(
                FLUX,
                json={"input": {"prompt": "x"}, "webhook": webhook_receiver.url},
                headers={"Cancel-After": "200ms"},
            )
        ).json()
        await sandbox.wait_idle(timeout=2)
        done = (await http.get(created["urls"]["get"])).json()
    assert done["status"] == "aborted" and done["started_at"] is None
    assert "predict_time" not in done["metrics"] and done["metrics"]["total_time"] >= 0.2
    events = [(d.event, d.status) for d in sandbox.webhook_deliveries]
    assert events[-1] == ("completed", "aborted")


async def test_a_prediction_done_before_its_deadline_is_not_touched(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        created = (
            await http.post("/v1/predictions", json=whisper_body(), headers={"Cancel-After": "1m"})
        ).json()
        await sandbox_server.sandbox.wait_idle()
        done = (await http.get(created["urls"]["get"])).json()
    assert done["status"] == "succeeded" and done["output"]["transcription"]
    assert done["deadline"] == created["deadline"]


async def test_a_malformed_cancel_after_is_a_422_and_creates_nothing(
    sandbox_server: SandboxServer,
):
    async with api(sandbox_server) as http:
        for value in ("5 minutes", "0s", "-1s", "90"):
            answer = await http.post(
                FLUX, json={"input": {"prompt": "x"}}, headers={"Cancel-After": value}
            )
            body = answer.json()
            assert answer.status_code == 422, value
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert body["title"] == "Input validation failed" and body["status"] == 422
            assert body["invalid_fields"][0]["field"] == "Cancel-After"
            assert "Cancel-After" in body["detail"]
    assert sandbox_server.sandbox.create_count == 0


async def test_official_client_sends_cancel_after_and_sees_the_deadline_end_the_run(
    sandbox_server: SandboxServer,
):
    """Replicate's client has no argument for Cancel-After, but takes headers for its requests."""
    sandbox_server.sandbox.faults.run_time_factor = 1000
    async with official_client(sandbox_server, headers={"Cancel-After": "0.25s"}) as client:
        client.poll_interval = 0.02
        prediction = await client.predictions.async_create(
            version=WHISPER_VERSION, input={"audio": "https://a.b/c.mp3"}
        )
        await prediction.async_wait()
        with pytest.raises(ReplicateError) as bad:
            async with official_client(sandbox_server, headers={"Cancel-After": "soon"}) as other:
                await other.predictions.async_create(version=WHISPER_VERSION, input={"audio": "x"})
    assert prediction.status == "canceled"
    assert prediction.metrics is not None and 0 < prediction.metrics["predict_time"] < 0.25
    assert bad.value.status == 422


async def test_run_time_factor_makes_runs_longer(sandbox_server: SandboxServer):
    sandbox = sandbox_server.sandbox
    async with api(sandbox_server) as http:
        usual = (await http.post("/v1/predictions", json=whisper_body())).json()
        await sandbox.wait_idle()
        sandbox.faults.run_time_factor = 10
        longer = (await http.post("/v1/predictions", json=whisper_body())).json()
        await sandbox.wait_idle()
        usual, longer = [
            (await http.get(p["urls"]["get"])).json()["metrics"]["predict_time"]
            for p in (usual, longer)
        ]
        faults = await http.post("/_sandbox/faults", json={"run_time_factor": -1})
    assert longer >= 8 * 0.1 * 0.02 * 10  # 8 steps of 0.1 s at speed 0.02, ten times as long
    assert usual < longer / 2
    assert faults.status_code == 422
    sandbox.faults.reset()
    assert sandbox.faults.run_time_factor == 1


# --- image inputs: flux-dev's image to image, and the real-esrgan upscaler ------------------

FLUX_DEV = "/v1/models/black-forest-labs/flux-dev/predictions"
ESRGAN_VERSION = "42fed1c4974146d4d2414e2be2c5277c7fcf05fcc3a73abf41610695738c1d7b"


def png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0-255) of two images at a's size."""
    first, second = a.convert("RGB").tobytes(), b.convert("RGB").resize(a.size).tobytes()
    return sum(abs(x - y) for x, y in zip(first, second, strict=True)) / len(first)


async def run_to_end(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a prediction and wait for it (Prefer: wait), then read it back with its URLs."""
    answer = await http.post(path, json=body, headers={"Prefer": "wait"})
    assert answer.status_code == 201, answer.text
    return (await http.get(answer.json()["urls"]["get"])).json()


async def fetch_image(http: httpx.AsyncClient, url: str) -> Image.Image:
    answer = await http.get(url)
    assert answer.status_code == 200
    image = Image.open(io.BytesIO(answer.content))
    image.load()
    return image


async def test_flux_dev_and_real_esrgan_publish_replicates_image_inputs(
    sandbox_server: SandboxServer,
):
    async with api(sandbox_server) as http:
        dev = (await http.get("/v1/models/black-forest-labs/flux-dev")).json()
        esrgan = (await http.get("/v1/models/nightmareai/real-esrgan")).json()
    inputs = dev["latest_version"]["openapi_schema"]["components"]["schemas"]["Input"]
    image, strength = inputs["properties"]["image"], inputs["properties"]["prompt_strength"]
    assert (image["type"], image["format"]) == ("string", "uri")
    assert (strength["type"], strength["default"], strength["minimum"], strength["maximum"]) == (
        "number",
        0.8,
        0,
        1,
    )
    assert inputs["required"] == ["prompt"]
    assert esrgan["is_official"] is False
    assert esrgan["latest_version"]["id"] == ESRGAN_VERSION
    schemas = esrgan["latest_version"]["openapi_schema"]["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert schemas["Input"]["required"] == ["image"]
    assert props["image"]["format"] == "uri"
    assert (props["scale"]["default"], props["scale"]["minimum"], props["scale"]["maximum"]) == (
        4,
        0,
        10,
    )
    assert (props["face_enhance"]["type"], props["face_enhance"]["default"]) == ("boolean", False)
    assert schemas["Output"] == {"type": "string", "title": "Output", "format": "uri"}


async def test_an_upscale_is_the_input_times_scale_and_shows_which_input(
    sandbox_server: SandboxServer,
):
    async with api(sandbox_server) as http:
        made = await run_to_end(
            http,
            FLUX,
            {"input": {"prompt": "two foxes", "num_outputs": 2, "output_format": "png"}},
        )
        first, second = made["output"]
        upscaled = []
        for url in (second, first):
            done = await run_to_end(
                http,
                "/v1/predictions",
                {"version": ESRGAN_VERSION, "input": {"image": url, "scale": 2}},
            )
            assert done["status"] == "succeeded", done["error"]
            assert isinstance(done["output"], str) and done["output"].endswith("/output.png")
            assert done["metrics"]["predict_time"] > 0  # billed by the second
            upscaled.append(await fetch_image(http, done["output"]))
        originals = [await fetch_image(http, url) for url in (second, first)]
    side = 2 * sandbox_server.sandbox.config.image_side
    assert [image.size for image in upscaled] == [(side, side), (side, side)]
    assert upscaled[0].format == "PNG"
    assert mean_difference(originals[0], upscaled[0]) < 3
    assert mean_difference(originals[0], upscaled[1]) > 3 * mean_difference(
        originals[0], upscaled[0]
    )


async def test_upscale_takes_data_urls_and_files_api_urls_and_caps_the_size(
    sandbox_server: SandboxServer,
):
    async with api(sandbox_server) as http:
        by_data = await run_to_end(
            http,
            "/v1/predictions",
            {"version": ESRGAN_VERSION, "input": {"image": data_url(png((100, 60), (200, 0, 0)))}},
        )
        upload = await http.post(
            "/v1/files", files={"content": ("big.png", png((800, 400), (0, 0, 200)), "image/png")}
        )
        by_file = await run_to_end(
            http,
            "/v1/deployments/conjure/real-esrgan/predictions",
            {"input": {"image": upload.json()["urls"]["get"], "scale": 10}},
        )
        small = await fetch_image(http, by_data["output"])
        capped = await fetch_image(http, by_file["output"])
    assert small.size == (400, 240)  # the default scale is 4
    assert small.getpixel((200, 120)) == (200, 0, 0)
    assert capped.size == (2048, 1024)  # 8000 x 4000 shrunk to 2048 on the long side
    assert capped.getpixel((1000, 500)) == (0, 0, 200)


async def test_a_variation_keeps_the_input_size_and_shows_it_by_prompt_strength(
    sandbox_server: SandboxServer,
):
    source = Image.new("RGB", (120, 80), (0, 160, 0))
    buffer = io.BytesIO()
    source.save(buffer, "PNG")
    body = {"prompt": "a fox", "image": data_url(buffer.getvalue()), "seed": 3}
    async with api(sandbox_server) as http:
        faint = await run_to_end(http, FLUX_DEV, {"input": {**body, "prompt_strength": 0.1}})
        strong = await run_to_end(http, FLUX_DEV, {"input": {**body, "prompt_strength": 1}})
        plain = await run_to_end(http, FLUX_DEV, {"input": {"prompt": "a fox", "seed": 3}})
        faint_image = await fetch_image(http, faint["output"][0])
        strong_image = await fetch_image(http, strong["output"][0])
        plain_image = await fetch_image(http, plain["output"][0])
    assert faint_image.size == strong_image.size == (120, 80)
    side = sandbox_server.sandbox.config.image_side
    assert plain_image.size == (side, side)
    assert mean_difference(source, faint_image) < mean_difference(source, strong_image)
    assert faint_image.format == "WEBP"


async def test_image_inputs_are_fetched_over_http(sandbox_server: SandboxServer):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    served = png((40, 30), (10, 20, 30))

    async def image(request: Any) -> Response:
        return Response(served, media_type="image/png")

    async def text(request: Any) -> Response:
        return Response(b"<html>not an image</html>", media_type="text/html")

    host = Starlette(routes=[Route("/fox.png", image), Route("/page.html", text)])
    async with serve_app(host) as url, api(sandbox_server) as http:
        good = await run_to_end(
            http,
            "/v1/predictions",
            {"version": ESRGAN_VERSION, "input": {"image": f"{url}/fox.png"}},
        )
        missing = await run_to_end(
            http,
            "/v1/predictions",
            {"version": ESRGAN_VERSION, "input": {"image": f"{url}/no.png"}},
        )
        html = await run_to_end(
            http,
            "/v1/predictions",
            {"version": ESRGAN_VERSION, "input": {"image": f"{url}/page.html"}},
        )
        fetched = await fetch_image(http, good["output"])
    assert fetched.size == (160, 120)
    assert missing["status"] == "failed" and missing["output"] is None
    assert missing["error"] == f"Failed to download {url}/no.png: HTTP 404"
    assert html["status"] == "failed" and html["error"].startswith("cannot identify image file")


async def test_unreadable_image_inputs_fail_the_prediction(sandbox_server: SandboxServer):
    url = sandbox_server.url
    cases = {
        data_url(b"not an image at all"): "cannot identify image file",
        "data:image/png;base64,%%%": "Invalid data URL: the data is not valid base64",
        f"{url}/files/nosuchprediction/out-0.png": "Failed to download",
        f"{url}/v1/files/nosuchfile": "Failed to download",
        "http://127.0.0.1:9/x.png": "Failed to download http://127.0.0.1:9/x.png: ConnectError",
        "ftp://example.com/x.png": "unsupported URL scheme",
    }
    async with api(sandbox_server) as http:
        for image, error in cases.items():
            done = await run_to_end(http, FLUX_DEV, {"input": {"prompt": "x", "image": image}})
            assert done["status"] == "failed", image
            assert error in done["error"], (image, done["error"])
            assert "metrics" in done and done["output"] is None


async def test_malformed_image_inputs_are_422_at_create(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        bad = await http.post(
            FLUX_DEV, json={"input": {"prompt": "x", "image": "fox.png", "prompt_strength": 1.5}}
        )
        wrong_type = await http.post(
            "/v1/predictions",
            json={"version": ESRGAN_VERSION, "input": {"image": 7, "face_enhance": "yes"}},
        )
        missing = await http.post("/v1/predictions", json={"version": ESRGAN_VERSION, "input": {}})
        broken = await http.post(FLUX_DEV, json={"input": {"prompt": "x", "image": "http://[x"}})
    assert bad.status_code == 422
    assert bad.json()["invalid_fields"] == [
        {"type": "format", "field": "input.image", "description": "Does not match format 'uri'"},
        {
            "type": "number_lte",
            "field": "input.prompt_strength",
            "description": "Must be less than or equal to 1",
        },
    ]
    assert [f["type"] for f in wrong_type.json()["invalid_fields"]] == [
        "invalid_type",
        "invalid_type",
    ]
    assert missing.json()["invalid_fields"] == [
        {"type": "required", "field": "input", "description": "image is required"}
    ]
    assert broken.status_code == 422
    assert sandbox_server.sandbox.create_count == 0


async def test_official_client_upscales_an_uploaded_file(sandbox_server: SandboxServer):
    async with official_client(sandbox_server) as client:
        file = await client.files.async_create(
            io.BytesIO(png((64, 32), (9, 9, 9))), filename="in.png"
        )
        output = await client.async_run(
            f"nightmareai/real-esrgan:{ESRGAN_VERSION}",
            input={"image": file.urls["get"], "scale": 2},
        )
        image = Image.open(io.BytesIO(await output.aread()))
    assert image.size == (128, 64)
