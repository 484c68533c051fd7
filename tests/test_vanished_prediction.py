"""A prediction Replicate no longer knows is given up on, not polled forever.

After a restart against another Replicate account (or once its data is gone), reading a job's
prediction answers 404 every time. The job is failed after a bounded number of reads: the person
is told, nothing is charged, the day's job is given back and the in-flight hold released.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.adapter import CommandRequest
from bot.jobs import GONE_AFTER, PREDICTION_GONE
from bot.quotas.windows import day_window
from bot.replicate.client import Prediction
from storage.jobs import user_subject
from storage.models import JobStatus, Reservation, utcnow
from tests.harness import running_conjure

UNKNOWN = "q" * 26  # a well-formed prediction id the sandbox never made


async def test_a_prediction_replicate_cannot_find_is_given_up_and_its_hold_released(
    sandbox_server, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000  # the job hears nothing by itself
    async with running_conjure(
        sandbox_server, database_url, tmp_path / "out", conjure_poll_interval=0.01
    ) as conjure:
        service, store = conjure.service, conjure.runtime.store
        reads: list[str] = []
        get_prediction = service.replicate.get_prediction

        async def counted(prediction_id: str) -> Prediction:
            reads.append(prediction_id)
            return await get_prediction(prediction_id)

        monkeypatch.setattr(service.replicate, "get_prediction", counted)
        request = CommandRequest(
            platform="console",
            workspace="local",
            channel="terminal",
            user_id="you",
            command="imagine",
            text="a red fox",
        )
        reply = await conjure.runtime.commands.handle(request)
        assert reply.job is not None
        job_id = reply.job.id
        # As after a restart with another account's token: the stored id is unknown there.
        await store.update_fields(job_id, prediction_id=UNKNOWN)
        subject = user_subject("console", "local", "you")
        live = await store.counter("user", subject, "live")
        assert live is not None and live.jobs == 1  # in flight

        await service.recover()  # polls every unfinished job
        await service.wait_idle(timeout=10)

        assert reads == [UNKNOWN] * GONE_AFTER  # a bounded number of reads, then no more
        assert service._polling == set()
        assert f"error: {PREDICTION_GONE}" in conjure.output.getvalue()
        job = await store.get(job_id)
        assert job is not None and job.job_status is JobStatus.FAILED
        assert job.actual_micros == 0 and job.reservation == Reservation.RELEASED
        live = await store.counter("user", subject, "live")
        assert live is not None and live.jobs == 0  # the hold is released
        today = await store.counter("user", subject, day_window(utcnow()).key)
        assert today is not None and today.jobs == 0 and today.spent_micros == 0
