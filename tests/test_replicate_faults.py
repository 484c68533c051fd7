"""Replicate misbehaving at the edges the client and the webhook endpoint must survive: logs that
are garbage or huge, the webhook secret endpoint stalling, through the real app on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from bot.replicate.client import ReplicateClient
from bot.replicate.progress import progress_from_logs
from bot.sandbox import HttpFault
from storage.models import JobStatus
from tests.garbage import WEBHOOK_PATH
from tests.harness import Conjure, all_jobs, database_not_answering, running_conjure
from tests.sandbox_fixtures import SandboxServer
from tests.tcp_relay import console_behind_a_relay
from tests.test_http_edge import _finished_prediction_without_its_webhooks, _signed_webhook

# ---- progress from logs ----------------------------------------------------------------------


def test_a_step_count_too_long_for_int_is_no_progress() -> None:
    """Python refuses to read an integer of more than 4,300 digits (a ValueError): a model that
    printed one after a bar made every `logs` webhook of its job a 500."""
    assert progress_from_logs("| " + "7" * 5000 + "/12 [00:01]\n") is None
    garbage = "|" + "9" * 5000 + "/" + "9" * 5000 + " ["
    assert progress_from_logs(" 40%|████  | 2/5 [00:01]\n" + garbage) == 40


def test_the_progress_of_huge_logs_is_read_from_their_end_only() -> None:
    """Every `logs` webhook carries all the logs so far (up to the 4 MiB a webhook may be), and
    each was split whole, line by line: ~180 ms of the event loop's CPU per webhook for 4 MiB
    without a bar in it, every 500 ms, for each such prediction."""
    chatter = "".join(f"step {i}: loss 0.{i % 97}\n" for i in range(200_000))
    with_bar = chatter + " 60%|██████    | 3/5 [00:01<00:01]\n" + "saving the image\n"
    started = time.perf_counter()
    for _ in range(10):
        assert progress_from_logs(chatter) is None
        assert progress_from_logs(with_bar) == 60
    assert (time.perf_counter() - started) / 20 < 0.01  # was ~100 ms; now well under 1 ms


# ---- through the webhook endpoint ------------------------------------------------------------


async def test_a_logs_webhook_with_a_garbage_step_count_is_answered_and_the_job_ends(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome, prediction = await _finished_prediction_without_its_webhooks(
            conjure, sandbox_server, "/imagine a fox --model sdxl"
        )
        path = prediction["webhook"].removeprefix(conjure.url)
        running = {
            **prediction,
            "status": "processing",
            "output": None,
            "metrics": {},
            "logs": "loading\n|" + "3" * 5000 + "/4 [00:00]\n",
        }
        body, headers = _signed_webhook(sandbox_server, running)
        response = await conjure.http.post(path, content=body, headers=headers)
        assert response.status_code == 200

        body, headers = _signed_webhook(sandbox_server, prediction)
        assert (await conjure.http.post(path, content=body, headers=headers)).status_code == 200
        assert (await outcome).ok
        await conjure.service.wait_idle()
        [job] = await all_jobs(conjure.runtime.store)
        assert job.job_status is JobStatus.SUCCEEDED


# ---- the webhook secret ----------------------------------------------------------------------


async def test_a_stalled_secret_endpoint_is_waited_for_once_not_once_per_queued_webhook(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """A fetch of the secret may take longer than the interval between two fetches (in
    production up to ~124 s: four attempts of 30 s and their backoff, against 60 s). The
    interval was counted from the start of the failed fetch, so each webhook queued behind it
    found the next fetch already due and made its own: every webhook waited for a fetch of its
    own, one after the other, instead of being answered 503 at once."""
    sandbox_server.sandbox.faults.http.append(
        HttpFault(delay=1, count=100, method="GET", path_prefix="/v1/webhooks")
    )
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_webhook_secret=None
    ) as conjure:
        impatient = ReplicateClient(
            sandbox_server.url, sandbox_server.token, timeout=0.4, max_attempts=1
        )
        conjure.runtime.replicate, patient = impatient, conjure.runtime.replicate
        secrets = conjure.runtime.webhook_secrets
        secrets.interval = 0.3  # shorter than one fetch, as 60 s is than ~124 s
        try:
            headers = {"webhook-id": "msg_x", "webhook-timestamp": "1", "webhook-signature": "v1,"}
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(conjure.http.post(WEBHOOK_PATH, content=b"{}", headers=headers) for _ in range(5))
            )
            elapsed = time.perf_counter() - started
        finally:
            conjure.runtime.replicate = patient
            await impatient.aclose()
        assert [r.status_code for r in responses] == [503] * 5
        assert secrets.fetches == 1
        assert elapsed < 1.5


async def _retried_and_delivered_once(
    conjure: Conjure, path: str, body: bytes, headers: dict, outcome: asyncio.Task[Any]
) -> None:
    """Replicate sends the refused webhook again: it is recorded, charged and delivered once."""
    retried = await conjure.http.post(path, content=body, headers=headers)
    assert retried.status_code == 200
    assert (await outcome).ok
    await conjure.service.wait_idle()
    [job] = await all_jobs(conjure.runtime.store)
    assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros
    assert len(list(conjure.console.output_dir.iterdir())) == 1  # delivered once


async def test_a_webhook_the_database_cannot_take_is_answered_503_in_one_line_then_recorded_once(
    sandbox_server: SandboxServer,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database does not answer (a PostgreSQL restart, a lock held past its timeout) as a
    terminal webhook arrives: Replicate is answered 503, so it sends the webhook again, and the
    log says so in one line, not as a crash with a traceback. Its retry is recorded and the
    result delivered once."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome, prediction = await _finished_prediction_without_its_webhooks(
            conjure, sandbox_server, "/imagine a fox"
        )
        path = prediction["webhook"].removeprefix(conjure.url)
        body, headers = _signed_webhook(sandbox_server, prediction)
        caplog.clear()
        with database_not_answering(conjure.runtime.engine):
            response = await conjure.http.post(path, content=body, headers=headers)
        assert response.status_code == 503
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        [said] = [r for r in caplog.records if "Replicate webhook for job" in r.getMessage()]
        assert said.levelno == logging.WARNING and said.exc_info is None

        await _retried_and_delivered_once(conjure, path, body, headers, outcome)


async def test_a_webhook_while_postgresql_refuses_connections_is_answered_503_then_recorded_once(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL restarting refuses connections for a moment: asyncpg raises an OSError there
    (ConnectionRefusedError), not an error SQLAlchemy wraps. The webhook that comes meanwhile
    is the same database that cannot take it: 503 and one line, not a 500 and a traceback."""
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (proxy, conjure):
        outcome, prediction = await _finished_prediction_without_its_webhooks(
            conjure, sandbox_server, "/imagine a fox"
        )
        path = prediction["webhook"].removeprefix(conjure.url)
        body, headers = _signed_webhook(sandbox_server, prediction)
        await conjure.runtime.engine.dispose()  # no connection left from before
        proxy.down()  # the server restarts: its port refuses
        caplog.clear()
        response = await conjure.http.post(path, content=body, headers=headers)
        assert response.status_code == 503
        said = [r for r in caplog.records if "Replicate webhook for job" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING]

        await proxy.up()  # back, on the same port
        await _retried_and_delivered_once(conjure, path, body, headers, outcome)


async def test_a_command_while_postgresql_refuses_connections_is_told_to_try_again(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same restart meets a command: the person is told the database cannot be reached and
    to try again (nothing started, nothing charged), as for any database that does not answer;
    once it is back, the next command runs."""
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (proxy, conjure):
        await conjure.runtime.engine.dispose()  # no connection left from before
        proxy.down()
        caplog.clear()
        refused = await conjure.console.run_line("/imagine a fox", timeout=20)
        await conjure.service.wait_idle()  # the alerts' sweep too: a line, not a crash
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert not refused.ok
        assert refused.error is not None
        assert "cannot reach its database" in refused.error
        assert sandbox_server.sandbox.create_count == 0

        await proxy.up()
        ran = await conjure.console.run_line("/imagine a fox", timeout=20)
        assert ran.ok
        assert len(await all_jobs(conjure.runtime.store)) == 1
