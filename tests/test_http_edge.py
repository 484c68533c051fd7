"""The public endpoints under junk and attack, through the real app on loopback.

Bodies are bounded before they are read; Slack's signature is checked before anything parses a
body; signed but malformed requests are 400, never 500; nothing a request carries reaches a log;
a signed webhook only ever changes its own job; the webhook secret is fetched at a bounded rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from slack_bolt.async_app import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.lifecycle import make_app
from adapters.slack.verify import MAX_BODY as SLACK_MAX_BODY
from bot import http_limits
from bot.app import WEBHOOK_MAX_BODY
from bot.config import Settings
from bot.replicate.client import ReplicateClient
from bot.replicate.errors import ReplicateUnavailableError
from bot.replicate.webhook_secret import WebhookSecrets, WebhookSecretUnavailable
from bot.sandbox import HttpFault
from bot.sandbox.config import generate_webhook_secret
from bot.sandbox.predictions import TERMINAL
from bot.sandbox.webhooks import encode_body, signed_headers
from storage.models import Delivery, Job, JobStatus
from tests.fakes.slack_api import TEAM_ID
from tests.garbage import FORGED, MARKER, SLACK_PATH, WEBHOOK_PATH, Garbage
from tests.harness import Conjure, all_jobs, running_conjure, settle
from tests.sandbox_fixtures import SandboxServer, impatient_replicate, lose_the_next_create
from tests.slack_harness import SIGNING_SECRET, running_slack_conjure

MiB = 1024 * 1024


# ---- bodies over the cap ----------------------------------------------------------------


async def _raw_exchange(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send `head` (and `body`) on a fresh connection; what the server answers until it closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


def _json_post_head(path: str, length: int) -> bytes:
    """The head of a JSON POST to `path` that declares a body of `length` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: conjure\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_declared_body_over_the_cap_is_answered_before_it_is_sent(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """A Content-Length of 300 MiB: 413 at once, and the connection closed, with not one byte of
    the body sent (the server cannot have waited for it)."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        for path in (SLACK_PATH, WEBHOOK_PATH):
            head = _json_post_head(path, 300 * MiB)
            answer = await _raw_exchange(slack.url, head)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
            assert b"connection: close" in answer.lower()


async def test_a_streamed_body_over_the_cap_is_refused_without_being_read(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """Chunked, so no length is declared: counted as it streams, refused just past the cap. A
    300 MiB body from a generator is never read: the sender could push only a few MiB (what the
    sockets buffer) before the connection was closed, and the server's memory hardly moved."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        for path, cap in ((SLACK_PATH, SLACK_MAX_BODY), (WEBHOOK_PATH, WEBHOOK_MAX_BODY)):
            head = (
                f"POST {path} HTTP/1.1\r\nhost: conjure\r\ntransfer-encoding: chunked\r\n\r\n"
            ).encode()
            chunk = b"%x\r\n" % (cap + 1) + b"x" * (cap + 1) + b"\r\n"
            answer = await _raw_exchange(slack.url, head, chunk)
            assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]

            sent = 0

            async def three_hundred_mib() -> AsyncIterator[bytes]:
                nonlocal sent
                piece = b"y" * (64 * 1024)
                while sent < 300 * MiB:
                    sent += len(piece)
                    yield piece

            before = _rss_mib()
            try:
                response = await slack.http.post(path, content=three_hundred_mib())
            except httpx.TransportError:
                pass  # closed mid-send: the 413 was written, but a client still writing may
                # see the reset first (the price of not reading the rest)
            else:
                assert response.status_code == 413
            assert sent < 32 * MiB
            assert _rss_mib() - before < 20


async def test_a_body_held_short_of_its_end_is_answered_408_and_let_go(
    sandbox_server: SandboxServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client declares 1 MiB, sends all but its last byte and holds the connection: the part
    read was kept (up to the route's cap) for as long as it liked, so a few hundred such
    connections took the server's memory. The body must now come whole within its deadline:
    408, and the connection closed."""
    monkeypatch.setattr(http_limits, "BODY_DEADLINE", 0.5)
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        for path in (SLACK_PATH, WEBHOOK_PATH):
            head = _json_post_head(path, MiB)
            answer = await _raw_exchange(slack.url, head, b"x" * (MiB - 1))
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b"connection: close" in answer.lower()


async def test_a_body_at_the_cap_is_read(sandbox_server: SandboxServer, sqlite_url: str) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        response = await slack.http.post(SLACK_PATH, content=b"x" * SLACK_MAX_BODY)
        assert response.status_code == 401  # read, and then refused as unsigned
        response = await slack.http.post(WEBHOOK_PATH, content=b"x" * WEBHOOK_MAX_BODY)
        assert response.status_code == 401


async def test_a_request_head_over_its_cap_is_refused_before_it_is_buffered(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """uvicorn's httptools protocol would buffer any header whole (a 64 MiB one grew the server
    by 84 MiB). Past 64 KiB of request line and headers, still unfinished, the answer is 431
    and the connection is closed; a header of 32 KiB still reaches the app."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        for padding in (b"x-padding: " + b"h" * 100_000, b"x-a: b"):
            query = b"?" + b"q" * 100_000 if padding == b"x-a: b" else b""
            head = b"POST " + SLACK_PATH.encode() + query + b" HTTP/1.1\r\nhost: x\r\n" + padding
            answer = await _raw_exchange(slack.url, head)  # never finished: no blank line
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        head = b"POST /slack/events HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        head += b"x-padding: " + b"h" * 32 * 1024 + b"\r\ncontent-length: 0\r\n\r\n"
        assert (await _raw_exchange(slack.url, head)).startswith(b"HTTP/1.1 401 ")


# ---- Slack: verified before it is parsed, and never logged ---------------------------------


def _command_body(text: str = "a fox") -> str:
    return urlencode(
        {
            "token": "legacy-verification-token-" + MARKER,
            "team_id": TEAM_ID,
            "channel_id": "C0GENERAL",
            "user_id": "U0ADA",
            "user_name": "ada",
            "command": "/imagine",
            "text": text,
            "response_url": "https://hooks.slack.invalid/commands/" + MARKER,
            "trigger_id": "1.2.3",
        }
    )


def _slack_signed(body: bytes, *, age: int = 0, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Slack's headers for `body` (signed over its bytes, as Slack does), `age` seconds old."""
    stamp = int(time.time()) - age
    base = f"v0:{stamp}:".encode() + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": str(stamp), "x-slack-signature": signature}


FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}


def slack_refusals() -> list[tuple[str, dict[str, str], bytes, int]]:
    """(case, headers, body, status): each was once a 500 with a traceback, or logged its body."""
    command = _command_body().encode()
    not_utf8 = b"text=\xff\xfe" + MARKER.encode()
    unsigned = [
        ("unsigned", FORM, command, 401),
        (
            "signed with another secret",
            {**FORM, **_slack_signed(command, secret="x")},
            command,
            401,
        ),
        ("genuine, 10 minutes old", {**FORM, **_slack_signed(command, age=600)}, command, 401),
        (
            "a timestamp that is not an integer",
            {**FORM, "x-slack-request-timestamp": "1e9", "x-slack-signature": "v0=" + "0" * 64},
            command,
            401,
        ),
        ("a body that is not UTF-8, signed", {**FORM, **_slack_signed(not_utf8)}, not_utf8, 401),
        ("a line break to forge a log line", FORM, _command_body(FORGED).encode(), 401),
    ]
    malformed = {
        "a JSON content type, not JSON": (JSON, "{" + MARKER),
        "JSON 50,000 deep": (JSON, "[" * 50_000),
        "JSON 100 deep": (JSON, '{"a":' * 100 + "1" + "}" * 100),
        "a JSON list": (JSON, "[1, 2]"),
        "payload= that is not JSON": (FORM, urlencode({"payload": "{" + MARKER})),
        "payload= that is a list": (FORM, urlencode({"payload": "[1]"})),
        "payload= with ids of the wrong type": (
            FORM,
            urlencode({"payload": '{"authorizations": "' + MARKER + '"}'}),
        ),
    }
    signed = [
        (f"signed, {case}", {**kind, **_slack_signed(body.encode())}, body.encode(), 400)
        for case, (kind, body) in malformed.items()
    ]
    return unsigned + signed


def assert_no_request_text_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No record quotes a request (the marker every test body carries, or a secret), and none
    holds a line break (which would let a request forge a line)."""
    for record in caplog.records:
        message = record.getMessage()
        assert MARKER not in message, message[:200]
        assert "\n" not in message and "\r" not in message, message[:200]
        for secret in secrets:
            assert secret not in message


async def test_slack_requests_are_verified_before_they_are_parsed_and_never_logged(
    sandbox_server: SandboxServer, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        for case, headers, body, status in slack_refusals():
            response = await slack.http.post(SLACK_PATH, content=body, headers=headers)
            assert response.status_code == status, case
            assert MARKER not in response.text
        assert slack.fake.calls_to("chat.postMessage") == []
        assert sandbox_server.sandbox.create_count == 0
        # And a genuine command still runs.
        result = await slack.slash("/imagine", "a fox")
        assert result.response.status_code == 200
        await slack.settle(sandbox_server)
        assert sandbox_server.sandbox.create_count == 1
    assert_no_request_text_logged(caplog, "legacy-verification-token", "hooks.slack.invalid")


class _NoListener:
    def register(self, app: Any) -> None:
        pass


async def test_bolt_itself_logs_no_request_body(caplog: pytest.LogCaptureFixture) -> None:
    """Behind the gate bolt only sees verified requests; should one still fail bolt's own check
    (its clock a moment later than the gate's), bolt would log its whole body at INFO: the
    legacy token, the response_url, a forged line. Its loggers drop that."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        slack_bot_token="xoxb-test",
        slack_signing_secret=SIGNING_SECRET,
    )
    app = make_app(settings, AsyncWebClient(token="xoxb-test"), _NoListener())  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG)
    stale = _slack_signed(_command_body(FORGED).encode(), age=600)
    request = AsyncBoltRequest(body=_command_body(FORGED), headers=stale)
    assert (await app.async_dispatch(request)).status == 401
    assert_no_request_text_logged(caplog, "legacy-verification-token", "hooks.slack.invalid")


# ---- fuzz: junk from anyone, and signed junk -------------------------------------------------


async def test_garbage_to_either_endpoint_never_gets_a_5xx_nor_reaches_the_log(
    sandbox_server: SandboxServer, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    garbage = Garbage(
        20261101, slack_secret=SIGNING_SECRET, webhook_secret=sandbox_server.webhook_secret
    )
    statuses: dict[str, list[int]] = {}
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        for path in (SLACK_PATH, WEBHOOK_PATH):
            for request in garbage.requests(150, path):
                try:
                    response = await slack.http.post(
                        request.path, content=request.body, headers=request.headers
                    )
                except httpx.TransportError:
                    # Only a head over its cap is answered by closing the connection (the 431
                    # may be lost to the reset while the client still writes).
                    assert "huge header" in request.kind
                    continue
                statuses.setdefault(request.kind, []).append(response.status_code)
        failures = {kind: codes for kind, codes in statuses.items() if max(codes) >= 500}
        assert failures == {}
        # Signed: read, then refused as malformed (400), not UTF-8 (401), without a listener
        # (bolt's 404), or answered; a few carry a header over the server's limit.
        signed = [code for kind, codes in statuses.items() if "signed" in kind for code in codes]
        assert len(signed) > 50 and set(signed) <= {200, 400, 401, 404, 431}
        assert sandbox_server.sandbox.create_count == 0
    assert_no_request_text_logged(caplog)


# ---- signed webhooks with malformed fields ----------------------------------------------


async def _finished_prediction_without_its_webhooks(
    conjure: Conjure, sandbox: SandboxServer, line: str
) -> tuple[asyncio.Task[Any], dict[str, Any]]:
    """Start `line` with every webhook dropped; its prediction once the sandbox has finished."""
    sandbox.sandbox.faults.drop_webhooks = 10**6
    outcome = asyncio.create_task(conjure.console.run_line(line, timeout=20))
    for _ in range(500):
        done = [p for p in sandbox.sandbox.predictions.values() if p["status"] in TERMINAL]
        if done:
            return outcome, dict(done[0])
        await asyncio.sleep(0.01)
    raise AssertionError("the prediction did not finish")


def _signed_webhook(sandbox: SandboxServer, prediction: dict[str, Any]) -> tuple[bytes, dict]:
    body = encode_body(prediction)
    headers = signed_headers(
        sandbox.webhook_secret, f"msg_{time.time_ns()}", int(time.time()), body
    )
    return body, headers


MALFORMED: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "predict_time a string": lambda p: {**p, "metrics": {"predict_time": "8.5"}},
    "predict_time true": lambda p: {**p, "metrics": {"predict_time": True}},
    "predict_time a list": lambda p: {**p, "metrics": {"predict_time": [8.5]}},
    "predict_time 1e20": lambda p: {**p, "metrics": {"predict_time": 1e20}},
    "predict_time negative": lambda p: {**p, "metrics": {"predict_time": -1}},
    "metrics a string": lambda p: {**p, "metrics": "fast"},
    "an unknown status": lambda p: {**p, "status": "exploded"},
    "logs a number": lambda p: {**p, "logs": 7},
}


async def test_signed_webhooks_with_malformed_fields_are_400_and_leave_the_job_as_it_was(
    sandbox_server: SandboxServer, database_url: str, tmp_path: Path
) -> None:
    """Each would once have been a 500 (a TypeError in pricing, an integer column overflowing on
    PostgreSQL) and left the job stuck; now 400 before anything changes, and the genuine webhook
    still finishes the job. sdxl is priced by the second, so predict_time is what it costs."""
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        outcome, prediction = await _finished_prediction_without_its_webhooks(
            conjure, sandbox_server, "/imagine a fox --model sdxl"
        )
        path = prediction["webhook"].removeprefix(conjure.url)
        for case, malform in MALFORMED.items():
            body, headers = _signed_webhook(sandbox_server, malform(prediction))
            response = await conjure.http.post(path, content=body, headers=headers)
            assert response.status_code == 400, case
        [job] = await conjure.runtime.store.unfinished()
        assert job.actual_micros is None and job.delivery == Delivery.NONE

        body, headers = _signed_webhook(sandbox_server, prediction)
        assert (await conjure.http.post(path, content=body, headers=headers)).status_code == 200
        assert (await outcome).ok
        await conjure.service.wait_idle()
        done = await conjure.runtime.store.get(job.id)
        assert done is not None and done.status == JobStatus.SUCCEEDED
        seconds = prediction["metrics"]["predict_time"]
        assert done.actual_micros == pytest.approx(seconds * 2300, abs=1)


async def test_a_failed_prediction_whose_error_holds_a_nul_still_ends_its_job(
    sandbox_server: SandboxServer, database_url: str, tmp_path: Path
) -> None:
    """A model's error is whatever it printed. One with a NUL in it was refused as malformed
    (PostgreSQL stores no NUL in text), by the webhook and by every read alike: the job never
    ended and its reservation was never given back. The NUL is replaced instead."""
    sandbox_server.sandbox.faults.fail_next = 1
    sandbox_server.sandbox.faults.fail_error = "CUDA error\x00: out of memory"
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a fox", timeout=20)
        await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)
    assert not outcome.ok
    assert job.job_status is JobStatus.FAILED and job.error == "CUDA error\ufffd: out of memory"
    assert job.reservation == "released" and job.delivery == Delivery.DELIVERED


async def test_a_canceled_prediction_without_predict_time_is_charged_the_time_it_ran(
    sandbox_server: SandboxServer, database_url: str, tmp_path: Path
) -> None:
    """A cancel's answer may come without `metrics.predict_time`, and was then charged nothing
    (no sign of having run) though Replicate bills the time a canceled run ran. Its start and
    end say how long that was: sdxl, by the second, is charged for them."""
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        outcome, prediction = await _finished_prediction_without_its_webhooks(
            conjure, sandbox_server, "/imagine a fox --model sdxl"
        )
        path = prediction["webhook"].removeprefix(conjure.url)
        canceled = {**prediction, "status": "canceled", "output": None, "metrics": {}}
        body, headers = _signed_webhook(sandbox_server, canceled)
        assert (await conjure.http.post(path, content=body, headers=headers)).status_code == 200
        assert not (await outcome).ok
        await conjure.service.wait_idle()
        [job] = await all_jobs(conjure.runtime.store)
    started = datetime.fromisoformat(prediction["started_at"])
    seconds = (datetime.fromisoformat(prediction["completed_at"]) - started).total_seconds()
    assert seconds > 0 and job.job_status is JobStatus.CANCELED
    assert job.actual_micros == pytest.approx(seconds * 2300, abs=1)


async def test_a_prediction_whose_data_was_removed_still_ends_its_job(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """An hour after a prediction Replicate removes its data: a late webhook (or read) may carry
    `input: null`. Refused as malformed, the job would never end; it ends, as Replicate says."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome, prediction = await _finished_prediction_without_its_webhooks(
            conjure, sandbox_server, "/imagine a fox --model sdxl"
        )
        path = prediction["webhook"].removeprefix(conjure.url)
        removed = {**prediction, "input": None, "data_removed": True}
        body, headers = _signed_webhook(sandbox_server, removed)
        assert (await conjure.http.post(path, content=body, headers=headers)).status_code == 200
        assert (await outcome).ok
        await conjure.service.wait_idle()
        [job] = await all_jobs(conjure.runtime.store)
    assert job.job_status is JobStatus.SUCCEEDED


async def test_a_signed_webhook_whose_predict_time_is_nan_is_400(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """JSON has no NaN, but Python's parser reads one; it must not reach the cost."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        prediction = {"id": "p" * 26, "status": "succeeded", "metrics": {"predict_time": 1.5}}
        body = json.dumps(prediction).replace("1.5", "NaN").encode()
        headers = signed_headers(sandbox_server.webhook_secret, "msg_nan", int(time.time()), body)
        response = await conjure.http.post(WEBHOOK_PATH, content=body, headers=headers)
        assert response.status_code == 400


# ---- a webhook is only ever its own job's --------------------------------------------------


async def _captured_webhook(conjure: Conjure, sandbox: SandboxServer) -> tuple[bytes, dict]:
    """Job A, run to its end; its terminal webhook as sent (signed, fresh enough to replay)."""
    outcome = await conjure.console.run_line("/imagine job A", timeout=20)
    await settle(conjure, sandbox)
    assert outcome.ok
    last = [d for d in sandbox.sandbox.webhook_deliveries if d.event == "completed"][-1]
    return last.body, last.headers


async def _the_unfinished_job(conjure: Conjure) -> Job:
    for _ in range(500):
        unfinished = await conjure.runtime.store.unfinished()
        if unfinished:
            return unfinished[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no job is waiting")


async def _only_job_except(conjure: Conjure, other: str) -> Job:
    jobs = await all_jobs(conjure.runtime.store)
    [job] = [j for j in jobs if j.id != other]
    return job


async def test_a_webhook_replayed_to_a_job_waiting_for_its_create_changes_nothing(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """The signature covers the body, not `?job=`. Job A's webhook, sent again with the id of
    job B while B waits for its create answer, once made B adopt A's prediction: A's image was
    delivered to B's requester and charged to them, and B's own result was never delivered."""
    out = tmp_path / "out"
    async with running_conjure(sandbox_server, sqlite_url, out) as conjure:
        body, headers = await _captured_webhook(conjure, sandbox_server)
        [job_a] = await all_jobs(conjure.runtime.store)
        [file_a] = list(out.iterdir())

        faults = sandbox_server.sandbox.faults
        faults.drop_webhooks = 1  # B's `start`, which would name B's own prediction
        faults.slow_start = 0.3  # and no `logs` webhook names it meanwhile
        faults.http.append(HttpFault(method="POST", path_prefix="/v1/models/", delay=0.3))
        outcome_b = asyncio.create_task(conjure.console.run_line("/imagine job B", timeout=20))
        job_b = await _the_unfinished_job(conjure)
        assert job_b.prediction_id is None  # waiting for its create answer

        replay = await conjure.http.post(
            f"{WEBHOOK_PATH}?job={job_b.id}", content=body, headers=headers
        )
        assert replay.status_code == 200 and replay.json()["job"] is None
        untouched = await conjure.runtime.store.get(job_b.id)
        assert untouched is not None and untouched.prediction_id is None
        assert not untouched.job_status.terminal and untouched.actual_micros is None

        assert (await outcome_b).ok
        await settle(conjure, sandbox_server)
        done_b = await conjure.runtime.store.get(job_b.id)
        assert done_b is not None and done_b.prediction_id not in (None, job_a.prediction_id)
        assert done_b.status == JobStatus.SUCCEEDED and done_b.actual_micros == 3000
        [file_b] = [f for f in out.iterdir() if f != file_a]
        assert file_b.read_bytes() == await _output_bytes(sandbox_server, done_b.prediction_id)
        again_a = await conjure.runtime.store.get(job_a.id)  # A untouched as well
        assert again_a is not None and _state(again_a) == _state(job_a)


async def test_a_webhook_replayed_to_a_given_up_job_changes_nothing(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """Job B was given up after its create answer was lost. Job A's webhook sent with B's id
    once charged B's requester for A's run and delivered A's image to them; B's own late result
    then went nowhere. Now B stays as it was until its own prediction's webhook comes."""
    out = tmp_path / "out"
    async with running_conjure(sandbox_server, sqlite_url, out) as conjure:
        body, headers = await _captured_webhook(conjure, sandbox_server)
        [job_a] = await all_jobs(conjure.runtime.store)
        [file_a] = list(out.iterdir())

        _lose_the_next_create_briefly(sandbox_server)
        async with impatient_replicate(conjure.service, sandbox_server, timeout=0.1):
            outcome_b = await conjure.console.run_line("/imagine job B", timeout=20)
            assert not outcome_b.ok  # given up: the person was told
            job_b = await _only_job_except(conjure, job_a.id)
            assert job_b.status == JobStatus.FAILED and job_b.prediction_id is None

            replay = await conjure.http.post(
                f"{WEBHOOK_PATH}?job={job_b.id}", content=body, headers=headers
            )
            assert replay.status_code == 200 and replay.json()["job"] is None
            still_b = await conjure.runtime.store.get(job_b.id)
            assert still_b is not None and _state(still_b) == _state(job_b)
            await settle(conjure, sandbox_server)

        late_b = await conjure.runtime.store.get(job_b.id)
        assert late_b is not None and late_b.prediction_id not in (None, job_a.prediction_id)
        assert late_b.status == JobStatus.SUCCEEDED and late_b.actual_micros == 3000
        [file_b] = [f for f in out.iterdir() if f != file_a]
        assert file_b.read_bytes() == await _output_bytes(sandbox_server, late_b.prediction_id)


def _lose_the_next_create_briefly(server: SandboxServer) -> None:
    """tests.sandbox_fixtures.lose_the_next_create, at a third of its delays (the job is given
    up after 0.1 s; its prediction starts after 0.3 s)."""
    lose_the_next_create(server)
    faults = server.sandbox.faults
    faults.slow_start = 0.3
    for fault in faults.http:
        fault.delay = min(fault.delay, 0.3)


def _state(job: Job) -> tuple[Any, ...]:
    """What a foreign webhook could have changed."""
    return (job.status, job.prediction_id, job.actual_micros, job.output, job.delivery)


async def _output_bytes(sandbox: SandboxServer, prediction_id: str | None) -> bytes:
    assert prediction_id is not None
    [url] = sandbox.sandbox.predictions[prediction_id]["output"]
    async with httpx.AsyncClient() as http:
        return (await http.get(url)).content


async def test_lost_create_recovery_adopts_only_a_prediction_with_its_own_webhook(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """The lookup after a lost create is by webhook URL; a list whose entries say otherwise
    (here: Replicate answering with some other prediction) is not adopted."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        service = conjure.service
        other = await service.replicate.create_prediction(
            model="black-forest-labs/flux-schnell",
            input={"prompt": "someone else's"},
            webhook=f"{conjure.url}/elsewhere",
        )

        async def finds_the_wrong_one(webhook: str, **_: Any) -> Any:
            return other

        service.replicate.find_prediction_by_webhook = finds_the_wrong_one  # type: ignore[method-assign]
        job = Job(
            id="lostcreatejob0000001",
            platform="console",
            workspace="local",
            channel="terminal",
            user_id="you",
            command="imagine",
            model="flux-schnell",
            model_ref="black-forest-labs/flux-schnell",
            prompt="x",
            usage_period="day:x",
        )
        assert await service._find_lost_prediction(job, service.webhook_url(job.id)) is None
        assert service.belongs(job, other) is False
        ours = other.model_copy(update={"webhook": service.webhook_url(job.id)})
        assert service.belongs(job, ours) is True


# ---- the webhook secret -----------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Replicate:
    """A stand-in for `default_webhook_secret`: answers `secret`, or fails while it is None."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.calls = 0

    async def fetch(self) -> str:
        self.calls += 1
        await asyncio.sleep(0)
        if self.secret is None:
            raise ReplicateUnavailableError("GET /v1/webhooks/default/secret -> 503")
        return self.secret


async def test_a_configured_secret_is_never_fetched() -> None:
    replicate = _Replicate(generate_webhook_secret())
    secrets = WebhookSecrets(replicate.fetch, configured=generate_webhook_secret())
    assert await secrets.verifier() is await secrets.verifier()
    assert await secrets.refreshed() is None
    assert replicate.calls == 0


async def test_the_secret_is_fetched_once_however_many_webhooks_want_it() -> None:
    replicate = _Replicate(generate_webhook_secret())
    secrets = WebhookSecrets(replicate.fetch)
    verifiers = await asyncio.gather(*(secrets.verifier() for _ in range(20)))
    assert len({id(v) for v in verifiers}) == 1 and replicate.calls == 1


async def test_while_the_secret_cannot_be_had_it_is_tried_at_most_once_a_minute() -> None:
    clock, replicate = _Clock(), _Replicate(None)
    secrets = WebhookSecrets(replicate.fetch, clock=clock)
    for _ in range(50):
        with pytest.raises(WebhookSecretUnavailable):
            await secrets.verifier()
        assert await secrets.refreshed() is None
    assert replicate.calls == 1
    clock.now += 59
    with pytest.raises(WebhookSecretUnavailable):
        await secrets.verifier()
    assert replicate.calls == 1
    replicate.secret = generate_webhook_secret()
    clock.now += 1
    assert await secrets.verifier() is not None
    assert replicate.calls == 2


async def test_a_rotated_secret_is_fetched_again_at_most_once_a_minute() -> None:
    clock, replicate = _Clock(), _Replicate(generate_webhook_secret())
    secrets = WebhookSecrets(replicate.fetch, clock=clock)
    first = await secrets.verifier()
    assert await secrets.refreshed() is None  # a bad signature right after: not refetched
    assert replicate.calls == 1
    clock.now += 60
    assert await secrets.refreshed() is None  # refetched, but unchanged: nothing new to try
    assert replicate.calls == 2
    replicate.secret = generate_webhook_secret()
    clock.now += 30
    assert await secrets.refreshed() is None and replicate.calls == 2
    clock.now += 30
    rotated = await secrets.refreshed()
    assert rotated is not None and rotated is not first
    assert await secrets.verifier() is rotated and replicate.calls == 3


async def test_a_rotated_secret_works_without_a_restart(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_webhook_secret=None
    ) as conjure:
        secrets = conjure.runtime.webhook_secrets
        assert (await conjure.console.run_line("/imagine one", timeout=20)).ok
        assert secrets.fetches == 1
        sandbox_server.sandbox.config.webhook_secret = generate_webhook_secret()
        secrets.interval = 0.1
        await asyncio.sleep(0.1)
        assert (await conjure.console.run_line("/imagine two", timeout=20)).ok
        await settle(conjure, sandbox_server)
        assert secrets.fetches == 2  # once for the rotation, not once per webhook


async def test_junk_webhooks_cause_no_calls_to_replicate_while_the_secret_cannot_be_had(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.http.append(
        HttpFault(status=500, count=1000, method="GET", path_prefix="/v1/webhooks")
    )
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_webhook_secret=None
    ) as conjure:
        impatient = ReplicateClient(sandbox_server.url, sandbox_server.token, max_attempts=1)
        conjure.runtime.replicate, patient = impatient, conjure.runtime.replicate
        try:
            headers = {"webhook-id": "msg_x", "webhook-timestamp": "1", "webhook-signature": "v1,"}
            for _ in range(50):
                response = await conjure.http.post(WEBHOOK_PATH, content=b"{}", headers=headers)
                assert response.status_code == 503
        finally:
            conjure.runtime.replicate = patient
            await impatient.aclose()
        [fault] = sandbox_server.sandbox.faults.http
        assert 1000 - fault.count == 1


async def test_a_request_of_100_kib_read_whole_at_once_reaches_the_app(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """A head and its whole body can arrive in one read (a 100 KiB webhook, say, once the loop
    was busy): that read completes the head, so none of it counts towards the head's cap."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as slack:
        body = b"x" * 100 * 1024
        head = (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        answer = await _raw_exchange(slack.url, head, body)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:80]  # read, refused as unsigned
