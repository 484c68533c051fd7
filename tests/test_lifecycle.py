"""The whole job lifecycle through the real ASGI app, with the sandbox sending signed webhooks."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import event

from bot.quotas.windows import day_window
from bot.sandbox import HttpFault
from storage.engine import statement_engines
from storage.jobs import user_subject
from storage.models import Delivery, JobStatus, utcnow
from tests.harness import running_conjure, settle
from tests.sandbox_fixtures import impatient_replicate


async def test_imagine_succeeds_and_the_image_is_delivered(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line(
            "/imagine a red fox in the snow --ar 16:9 --seed 7", timeout=20
        )
        await settle(conjure, sandbox_server)

        assert outcome.ok, outcome.error
        [saved] = outcome.files
        image = Image.open(saved)
        assert image.width > image.height  # 16:9 reached the model
        job = (await conjure.runtime.store.unfinished()) or None
        assert job is None
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["input"]["aspect_ratio"] == "16:9"
        assert prediction["input"]["seed"] == 7
        [url] = prediction["output"]
        async with httpx.AsyncClient() as http:
            assert saved.read_bytes() == (await http.get(url)).content

        stored = await conjure.runtime.store.find_by_prediction(prediction["id"])
        assert stored is not None
        assert stored.status == JobStatus.SUCCEEDED
        assert stored.delivery == Delivery.DELIVERED
        assert stored.actual_micros == 3000  # one flux-schnell image at $0.003
        events = [d.event for d in sandbox_server.sandbox.webhook_deliveries]
        assert events[0] == "start" and events[-1] == "completed"
        text = conjure.output.getvalue()
        assert "a red fox in the snow" in text and "done" in text and "$0.003" in text


async def test_failed_prediction_is_reported_and_gives_the_job_back(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a cat", timeout=20)
        await settle(conjure, sandbox_server)
        assert not outcome.ok
        assert outcome.error is not None and "safety checker flagged" in outcome.error
        assert not (tmp_path / "out").exists()
        counter = await conjure.runtime.store.counter(
            "user", user_subject("console", "local", "you"), day_window(utcnow()).key
        )
        assert counter is not None and counter.jobs == 0


async def test_duplicate_and_out_of_order_webhooks_deliver_exactly_once(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine two owls", timeout=20)
        await settle(conjure, sandbox_server)
        assert outcome.ok

        # Replay every webhook the sandbox sent, newest first and twice over: a late `start`
        # or `processing` after `succeeded`, and the terminal one again.
        deliveries = list(reversed(sandbox_server.sandbox.webhook_deliveries)) * 2
        for delivery in deliveries:
            path = delivery.url.removeprefix(conjure.url)
            response = await conjure.http.post(
                path, content=delivery.body, headers=delivery.headers
            )
            assert response.status_code == 200
        await conjure.service.wait_idle()

        assert len(list((tmp_path / "out").iterdir())) == 1
        assert conjure.output.getvalue().count("saved ") == 1
        [prediction_id] = sandbox_server.sandbox.predictions
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.status == JobStatus.SUCCEEDED
        assert job.delivery_attempts == 1


async def test_polling_mode_without_a_public_url(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", webhooks=False
    ) as conjure:
        outcome = await conjure.console.run_line("/imagine a lighthouse --n 2", timeout=20)
        await settle(conjure, sandbox_server)
        assert outcome.ok and len(outcome.files) == 2
        assert sandbox_server.sandbox.webhook_deliveries == []
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction.get("webhook") is None


async def test_webhook_signature_is_required(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        await conjure.console.run_line("/imagine a boat", timeout=20)
        await settle(conjure, sandbox_server)
        real = sandbox_server.sandbox.webhook_deliveries[-1]
        path = real.url.removeprefix(conjure.url)

        missing = {k: v for k, v in real.headers.items() if k != "webhook-signature"}
        assert (
            await conjure.http.post(path, content=real.body, headers=missing)
        ).status_code == 401
        tampered = real.body.replace(b"succeeded", b"failed")
        response = await conjure.http.post(path, content=tampered, headers=real.headers)
        assert response.status_code == 401

        # A correctly signed webhook for a job this instance never made: 200, and nothing happens.
        from standardwebhooks import Webhook

        unknown_body = b'{"id": "unknownpredictionidxx", "status": "succeeded", "input": {}}'
        headers = _signed(Webhook(sandbox_server.webhook_secret), unknown_body)
        response = await conjure.http.post(
            "/webhooks/replicate?job=nosuchjob", content=unknown_body, headers=headers
        )
        assert response.status_code == 200 and response.json()["job"] is None


def _signed(webhook, body: bytes) -> dict[str, str]:
    import time
    from datetime import UTC, datetime

    msg_id = f"msg_{int(time.time() * 1000)}"
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": webhook.sign(msg_id, now, body.decode()),
        "content-type": "application/json",
    }


async def test_replicate_error_on_create_is_shown_and_nothing_is_charged(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.http.append(HttpFault(status=402, method="POST"))
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a tree", timeout=20)
        await conjure.service.wait_idle()
        assert not outcome.ok and outcome.error is not None
        assert "credit" in outcome.error.lower()
        assert sandbox_server.sandbox.create_count == 0
        counter = await conjure.runtime.store.counter(
            "user", user_subject("console", "local", "you"), day_window(utcnow()).key
        )
        assert counter is not None and counter.jobs == 0 and counter.spent_micros == 0


async def test_daily_job_limit_refuses_and_creates_nothing(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_jobs_per_day=1
    ) as conjure:
        first = await conjure.console.run_line("/imagine one", timeout=20)
        second = await conjure.console.run_line("/imagine two", timeout=20)
        await settle(conjure, sandbox_server)
        assert first.ok
        assert not second.ok and second.error is not None
        assert "all 1 of your jobs for today" in second.error and "00:00 UTC" in second.error
        assert sandbox_server.sandbox.create_count == 1
        assert await conjure.runtime.store.count() == 1


async def test_bad_command_line_gets_the_usage_and_creates_nothing(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        for line in ("/imagine", "/imagine a fox --ar 7:5", "/imagine fox --bogus 1"):
            outcome = await conjure.console.run_line(line)
            assert not outcome.ok and outcome.error is not None
            assert "Usage: /imagine" in outcome.error
        assert sandbox_server.sandbox.create_count == 0
        assert await conjure.runtime.store.count() == 0


async def test_lost_create_answer_is_recovered_by_webhook_url(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """A create whose answer never came is found again, not created twice."""
    sandbox_server.sandbox.faults.http.append(HttpFault(method="POST", delay=2.0))
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        async with impatient_replicate(
            conjure.service, sandbox_server, timeout=0.5, max_attempts=None
        ):
            outcome = await conjure.console.run_line("/imagine a kite", timeout=20)
            await settle(conjure, sandbox_server)
        assert outcome.ok, outcome.error
        assert sandbox_server.sandbox.create_count == 1
        assert len(outcome.files) == 1


@pytest.mark.parametrize("list_carries_webhook", [True, False])
async def test_lost_create_answer_is_found_in_the_list_with_or_without_its_webhook(
    sandbox_server, sqlite_url: str, tmp_path: Path, monkeypatch, list_carries_webhook: bool
) -> None:
    """No webhook named the prediction (`start` was lost too), so only the list can tell that
    the create happened: whether its entries carry `webhook` or must be read one by one."""
    from bot.sandbox import api_predictions

    monkeypatch.setattr(api_predictions, "LIST_CARRIES_WEBHOOK", list_carries_webhook)
    faults = sandbox_server.sandbox.faults
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        for n in range(3):  # older predictions of the same account, with other webhooks
            await conjure.service.replicate.create_prediction(
                model="black-forest-labs/flux-schnell",
                input={"prompt": f"other {n}"},
                webhook=f"{conjure.url}/elsewhere/{n}",
                webhook_events_filter=["completed"],
            )
        await sandbox_server.sandbox.wait_idle()
        faults.drop_webhooks = 1  # our job's `start` webhook, which would name the prediction
        faults.slow_start = 1.0  # and no `logs` webhook names it before the lookup
        faults.http.append(HttpFault(method="POST", path_prefix="/v1/models/", delay=1.0))
        async with impatient_replicate(
            conjure.service, sandbox_server, timeout=0.5, max_attempts=None
        ):
            outcome = await conjure.console.run_line("/imagine a kite", timeout=20)
            await settle(conjure, sandbox_server)
        assert outcome.ok, outcome.error
        assert sandbox_server.sandbox.create_count == 4  # the three others and ours, once
        assert len(outcome.files) == 1


async def test_unicode_prompt_reaches_the_model_and_the_image(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line('/imagine "狐 in the snow 🦊" --n 1', timeout=20)
        await settle(conjure, sandbox_server)
        assert outcome.ok
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["input"]["prompt"] == "狐 in the snow 🦊"
        Image.open(io.BytesIO(outcome.files[0].read_bytes())).verify()


@pytest.mark.parametrize("webhooks", [True, False])
async def test_recovery_after_restart_delivers_what_was_pending(
    sandbox_server, sqlite_url: str, tmp_path: Path, webhooks: bool
) -> None:
    """A job that finished while Conjure was down is picked up again on start."""
    sandbox_server.sandbox.faults.drop_webhooks = 100  # the first instance hears nothing
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", webhooks=webhooks
    ) as first:
        first.service.start_polling = lambda *_: None  # type: ignore[method-assign]
        task = asyncio.create_task(first.console.run_line("/imagine a comet", timeout=2))
        while not sandbox_server.sandbox.predictions:
            await asyncio.sleep(0.01)
        await sandbox_server.sandbox.wait_idle()
        task.cancel()
    sandbox_server.sandbox.faults.reset()
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as second:
        await second.service.wait_idle()
        assert len(list((tmp_path / "out").iterdir())) == 1
        [prediction_id] = sandbox_server.sandbox.predictions
        job = await second.runtime.store.find_by_prediction(prediction_id)
        assert job is not None and job.delivery == Delivery.DELIVERED


async def test_conjure_usage_help_and_models(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_jobs_per_day=3
    ) as conjure:
        await conjure.console.run_line("/imagine a hat", timeout=20)
        await settle(conjure, sandbox_server)
        usage = await conjure.console.run_line("/conjure usage")
        assert usage.text is not None
        assert "Jobs today: 1 of 3; 2 left" in usage.text and "$0.003" in usage.text
        models = await conjure.console.run_line("/conjure models")
        assert models.text is not None and "flux-schnell" in models.text
        assert "$0.003 per output" in models.text
        helped = await conjure.console.run_line("/conjure")
        assert helped.text is not None and "/imagine <prompt>" in helped.text


async def test_health_and_metrics_endpoints(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        sent: list[str] = []
        for engine in statement_engines(conjure.runtime.engine):
            event.listen(engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        health = await conjure.http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["adapters"] == ["console"]
        # Probed every few seconds: one row read, not a count of every job ever run.
        [probe] = sent
        assert "count(" not in probe.lower() and "LIMIT" in probe
        await conjure.console.run_line("/imagine a bell", timeout=20)
        await settle(conjure, sandbox_server)
        metrics = (await conjure.http.get("/metrics")).text
        assert 'conjure_replicate_webhooks_total{outcome="applied"}' in metrics


async def test_sweeper_recovers_a_job_whose_webhooks_never_came(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    from datetime import timedelta

    sandbox_server.sandbox.faults.drop_webhooks = 100
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        task = asyncio.create_task(conjure.console.run_line("/imagine a lost letter", timeout=20))
        while not sandbox_server.sandbox.predictions:
            await asyncio.sleep(0.01)
        await sandbox_server.sandbox.wait_idle()
        assert await conjure.runtime.store.unfinished(silent_for=timedelta(minutes=5)) == []
        await conjure.service.recover(silent_for=timedelta(0))  # what the sweeper runs
        outcome = await task
        assert outcome.ok and len(outcome.files) == 1


async def test_a_burst_of_finished_jobs_is_delivered_a_bounded_number_at_a_time(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Every result arrives, but no more than DELIVERIES_AT_ONCE are downloaded and posted at
    once (each holds its files in memory)."""
    from bot.jobs import DELIVERIES_AT_ONCE

    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        console = conjure.console
        posting = 0
        most = 0
        post_result = console.post_result

        async def slow_post_result(job, result) -> None:  # type: ignore[no-untyped-def]
            nonlocal posting, most
            posting += 1
            most = max(most, posting)
            try:
                await asyncio.sleep(0.3)
                await post_result(job, result)
            finally:
                posting -= 1

        console.post_result = slow_post_result  # type: ignore[method-assign]
        count = DELIVERIES_AT_ONCE * 3
        outcomes = await asyncio.gather(
            *(console.run_line(f"/imagine fox number {n}", timeout=60) for n in range(count))
        )
        await settle(conjure, sandbox_server)

    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    assert len({path for outcome in outcomes for path in outcome.files}) == count
    assert 1 < most <= DELIVERIES_AT_ONCE, most


async def test_a_result_for_a_platform_this_instance_does_not_serve_waits_for_one_that_does(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Several instances may serve different platforms: the one that gets the webhook records
    the result but leaves its delivery pending, and an instance with that platform delivers."""
    from bot.adapter import CommandRequest

    sandbox_server.sandbox.faults.slow_start = 0.5  # the result comes after the hand-over
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        service = conjure.service
        request = CommandRequest("console", "local", "terminal", "you", "imagine", "a fox")
        job = (await conjure.runtime.commands.handle(request)).job
        assert job is not None
        console = service.adapters["console"]
        service.remove_adapter("console")  # now an instance without the console
        await settle(conjure, sandbox_server)
        stored = await conjure.runtime.store.get(job.id)
        assert stored is not None and stored.status == JobStatus.SUCCEEDED
        assert stored.delivery == Delivery.PENDING
        assert not (tmp_path / "out").exists()

        service.add_adapter(console)  # the instance that serves it
        await service.recover()
        await settle(conjure, sandbox_server)
        stored = await conjure.runtime.store.get(job.id)
        assert stored is not None and stored.delivery == Delivery.DELIVERED
        assert len(list((tmp_path / "out").iterdir())) == 1
