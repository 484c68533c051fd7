"""Cancel when something on the way fails or takes long: what the person is told, and what they
are charged, is what Replicate ran. Through the real app, the sandbox on loopback (its faults)
and a real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.sandbox.faults import HttpFault
from storage.models import Delivery, JobStatus
from tests.harness import running_conjure, settle


async def test_a_job_canceled_during_its_create_is_stopped_even_when_replicate_refuses_at_first(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The owner cancels while the create is on its way; when it answers, Replicate refuses the
    cancel with 503s for as long as the client retries. The person was told "canceled": the
    run must not go on to a result (delivered, and charged in full) they asked to stop."""
    faults = sandbox_server.sandbox.faults
    faults.http.append(HttpFault(delay=0.5, method="POST", path_prefix="/v1/models/"))
    faults.http.append(
        HttpFault(
            status=503, count=4, method="POST", path_prefix="/v1/predictions/", retry_after=0.01
        )
    )
    faults.slow_start = 10.0  # still starting when the cancel finally reaches it
    faults.drop_webhooks = 1
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        running = asyncio.create_task(conjure.console.run_line("/imagine a slow start"))
        while not conjure.console._jobs:
            await asyncio.sleep(0.01)
        [job_id] = conjure.console._jobs
        job = await conjure.runtime.store.get(job_id)
        assert job is not None and job.prediction_id is None
        assert await conjure.service.cancel(job)
        assert (await running).error == "The job was canceled."

        await settle(conjure, sandbox_server)
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "canceled"
        done = await conjure.runtime.store.get(job_id)
        assert done is not None and done.job_status is JobStatus.CANCELED
        assert done.actual_micros == 0 and done.output is None
        assert done.delivery == Delivery.DELIVERED
        assert "here is your image" not in conjure.output.getvalue()
