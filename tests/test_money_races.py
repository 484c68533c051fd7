"""Money under races and lost answers: what a job holds is released once, whatever copy of the
job its finisher read, and a person whose create got no answer is told the truth about it.
On a real database (SQLite and PostgreSQL), and end to end against the sandbox on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.quotas.windows import day_window, month_window
from bot.sandbox import HttpFault
from storage.engine import create_engine
from storage.jobs import JobStore, user_subject
from storage.models import Job, JobStatus, utcnow
from storage.usage import Hold, HoldKind
from tests.harness import all_jobs, running_conjure, settle
from tests.sandbox_fixtures import lose_the_next_create

SUBJECT = user_subject("slack", "T1", "U1")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    engine = create_engine(database_url)
    yield JobStore(engine)
    await engine.dispose()


def queued_job(job_id: str, estimate: int = 3000) -> Job:
    now = utcnow()
    return Job(
        id=job_id,
        platform="slack",
        workspace="T1",
        channel="C1",
        user_id="U1",
        command="imagine",
        model="flux-schnell",
        model_ref="black-forest-labs/flux-schnell",
        prompt="a red fox",
        input={"prompt": "a red fox"},
        usage_period=day_window(now).key,
        estimated_micros=estimate,
        waiting_since=now,
        queue_ahead=0,
    )


def place() -> list[Hold]:
    """The place a queued job holds (bot.queue.queue_places, the user's part)."""
    return [Hold(HoldKind.IN_FLIGHT, "user", SUBJECT, "queue", 5)]


def holds() -> list[Hold]:
    """What the job holds once it leaves the queue: a day's job, its money, a slot."""
    now = utcnow()
    return [
        Hold(HoldKind.JOBS, "user", SUBJECT, day_window(now).key, 10),
        Hold(HoldKind.USD, "user", SUBJECT, month_window(now).key, 1_000_000),
        Hold(HoldKind.IN_FLIGHT, "user", SUBJECT, "live", 1),
    ]


async def test_a_cancel_that_read_the_job_in_the_queue_releases_what_it_holds_after_it_left(
    store: JobStore,
) -> None:
    """A person cancels a queued job just as a slot frees: the cancel read the job while it
    waited, and the job left the queue (reserving its day's job, money and slot) before the
    cancel's UPDATE. Releasing the holds of the copy read (its place in the queue, already
    given back) would leak the reservation: the slot stays taken, so with one job at a time
    the person could never run another."""
    job = queued_job("race-1")
    await store.reserve_and_insert(job, place())
    read_by_the_cancel = await store.get(job.id)
    assert read_by_the_cancel is not None

    assert await store.promote(read_by_the_cancel, holds()) is not None
    finished = await store.finish(
        read_by_the_cancel,
        JobStatus.CANCELED,
        actual_micros=0,
        give_back_job=True,
        unstarted_only=True,
    )
    assert finished is not None

    now = utcnow()
    live = await store.counter("user", SUBJECT, "live")
    queue = await store.counter("user", SUBJECT, "queue")
    day = await store.counter("user", SUBJECT, day_window(now).key)
    money = await store.counter("user", SUBJECT, month_window(now).key)
    assert live is not None and live.jobs == 0
    assert queue is not None and queue.jobs == 0
    assert day is not None and day.jobs == 0
    assert money is not None and (money.reserved_micros, money.spent_micros) == (0, 0)


@pytest.mark.parametrize("webhooks", [True, False])
async def test_a_create_answered_5xx_tells_the_person_what_happens_next(
    sandbox_server, sqlite_url: str, tmp_path: Path, webhooks: bool
) -> None:
    """Replicate answered the create 500 and its list shows no such prediction: the job is
    given up and nothing is tried again, so the person must not be told that Conjure is
    "checking before trying again" (they would wait for a retry that never comes). They are
    told to run it again, and, where a late webhook could still bring it, that its result
    would come here."""
    from bot.sandbox import HttpFault

    sandbox_server.sandbox.faults.http.append(
        HttpFault(status=500, method="POST", path_prefix="/v1/models/")
    )
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", webhooks=webhooks
    ) as conjure:
        outcome = await conjure.console.run_line("/imagine a kite", timeout=20)
        await settle(conjure, sandbox_server)
    assert not outcome.ok
    assert sandbox_server.sandbox.create_count == 0
    error = outcome.error or ""
    assert "trying again" not in error
    assert "run it again" in error
    assert ("posted here" in error) is webhooks


async def test_a_late_result_after_a_lost_create_is_what_the_person_was_told_to_expect(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The create's answer was lost and the lookup failed: the person is told that if it did
    start, its result comes here; then it does (tests/test_quotas.py checks the charge)."""
    from tests.sandbox_fixtures import impatient_replicate

    lose_the_next_create(sandbox_server)
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        async with impatient_replicate(conjure.service, sandbox_server):
            outcome = await conjure.console.run_line("/imagine a ghost")
            await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)
    assert not outcome.ok
    assert "trying again" not in (outcome.error or "")
    assert "posted here" in (outcome.error or "")
    assert job.status == JobStatus.SUCCEEDED


async def test_an_error_page_echoing_the_request_never_puts_part_of_the_token_in_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy in front of Replicate answers 502 with a plain-text page that echoes the request
    headers. Only the first 200 characters of such a page are kept; cut there before the token
    was blanked out, the token's first part stayed in the error (and the retry log lines)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from bot.replicate.client import ReplicateClient
    from bot.replicate.errors import ReplicateUnavailableError
    from bot.serving import serve_app

    token = "r8_" + "Z3cr3tT0k3n" * 4  # 47 characters

    async def echo(request: Request) -> PlainTextResponse:
        padding = "x" * (200 - len("Bad gateway; you sent Authorization: Bearer ") - 20)
        page = f"Bad gateway{padding}; you sent Authorization: {request.headers['authorization']}"
        return PlainTextResponse(page, status_code=502)

    app = Starlette(routes=[Route("/v1/predictions/{id}", echo)])
    async with serve_app(app) as url:
        async with ReplicateClient(url, token, max_attempts=2, max_backoff=0.05) as client:
            with pytest.raises(ReplicateUnavailableError) as caught:
                await client.get_prediction("abc")
    error = caught.value
    shown = [str(error), repr(error), error.detail or "", error.user_message, caplog.text]
    for text in shown:
        assert token[:12] not in text


async def test_an_update_read_before_its_job_was_given_up_leaves_the_late_result_chargeable(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """A create's answer was lost and the job given up (nothing charged, the person told).
    A webhook handler had read the job just before, while it still ran with no prediction
    known, and applies the prediction's `start` with that copy (apply_prediction allows an
    older copy). Recording the prediction id on the given-up job unconditionally made it look
    like a job that had its prediction all along: the terminal webhook then changed nothing,
    so the run Replicate billed was neither charged nor delivered."""
    from bot.replicate.client import Prediction
    from tests.sandbox_fixtures import impatient_replicate

    lose_the_next_create(sandbox_server)
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        store = conjure.runtime.store
        async with impatient_replicate(conjure.service, sandbox_server):
            outcome = await conjure.console.run_line("/imagine a ghost")
            [given_up] = await all_jobs(store)
            assert not outcome.ok and given_up.job_status is JobStatus.FAILED
            read_while_running = given_up.model_copy(
                update={"status": JobStatus.STARTING, "status_rank": 0, "completed_at": None}
            )
            [running] = list(sandbox_server.sandbox.predictions.values())
            assert running["status"] in ("starting", "processing")
            start = Prediction.model_validate({**running, "status": "starting"})
            await conjure.service.apply_prediction(given_up.id, start, job=read_while_running)
            await settle(conjure, sandbox_server)
        await _succeeded_and_charged(store, given_up.id, 3000)


async def _succeeded_and_charged(store: JobStore, job_id: str, micros: int) -> None:
    """The job succeeded and was charged `micros`, once: what the person's month shows."""
    job = await store.get(job_id)
    assert job is not None
    assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros == micros
    money = await store.counter(
        "user", user_subject("console", "local", "you"), month_window(utcnow()).key
    )
    assert money is not None and money.spent_micros == micros


async def test_without_webhooks_a_run_canceled_during_its_create_is_charged_what_it_ran(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Polling only: the prediction of a job canceled while its create was on its way is
    stopped, and read to its end so that what it ran is charged, as its webhook would have
    it charged (nothing read it before: billed by Replicate, never charged here)."""
    faults = sandbox_server.sandbox.faults
    faults.http.append(HttpFault(delay=0.5, method="POST", path_prefix="/v1/models/"))
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", webhooks=False
    ) as conjure:
        running = asyncio.create_task(conjure.console.run_line("/imagine a fox --model sdxl"))
        while not conjure.console._jobs:
            await asyncio.sleep(0.01)
        [job_id] = conjure.console._jobs
        job = await conjure.runtime.store.get(job_id)
        assert job is not None and await conjure.service.cancel(job)
        assert (await running).error == "The job was canceled."
        [prediction] = sandbox_server.sandbox.predictions.values()
        while prediction["status"] != "canceled" or conjure.service._polling:
            await asyncio.sleep(0.02)
        await settle(conjure, sandbox_server)
        done = await conjure.runtime.store.get(job_id)
    assert done.job_status is JobStatus.CANCELED and done.prediction_id == prediction["id"]
    seconds = prediction["metrics"]["predict_time"]
    assert done.actual_micros == pytest.approx(seconds * 2300, abs=1)


async def test_a_lost_create_found_after_its_job_was_given_up_leaves_the_result_chargeable(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The sweeper read a job whose create answer was lost while it still ran, and found its
    prediction at Replicate after the job had been given up. Recording the prediction on the
    given-up job unconditionally made it look like a job that had it all along, so its result,
    billed by Replicate, was neither charged nor delivered; now it is, once."""
    from tests.sandbox_fixtures import impatient_replicate

    lose_the_next_create(sandbox_server)
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        store = conjure.runtime.store
        async with impatient_replicate(conjure.service, sandbox_server):
            outcome = await conjure.console.run_line("/imagine a ghost")
            [given_up] = await all_jobs(store)
            assert not outcome.ok and given_up.job_status is JobStatus.FAILED
            read_while_running = given_up.model_copy(
                update={"status": JobStatus.STARTING, "status_rank": 0, "completed_at": None}
            )
            [running] = list(sandbox_server.sandbox.predictions.values())
            assert running["status"] in ("starting", "processing")
            sandbox_server.sandbox.faults.http.clear()  # the list can be read again
            await conjure.service._resume_unstarted(read_while_running)
            assert (await store.get(given_up.id)).prediction_id is None  # type: ignore[union-attr]
            await settle(conjure, sandbox_server)
        await _succeeded_and_charged(store, given_up.id, 3000)


async def test_a_delivery_step_recorded_from_an_older_copy_keeps_what_others_recorded(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """A stream's relay records its message from the copy of the job it started with; the
    delivery, meanwhile, recorded its files. Writing the relay's whole destination back erased
    the files' record, and a retry would share them again: each step adds only its own keys."""
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        assert (await conjure.console.run_line("/imagine a fox")).ok
        [job] = await all_jobs(conjure.runtime.store)
        relays_copy = await conjure.runtime.store.get(job.id)
        deliverys_copy = await conjure.runtime.store.get(job.id)
        assert relays_copy is not None and deliverys_copy is not None
        await conjure.service._checkpoint(deliverys_copy)({"slack_files": ["F1", "F2"]})
        await conjure.service._checkpoint(relays_copy)({"answer_ts": "2.0"})
        stored = await conjure.runtime.store.get(job.id)
    assert stored is not None
    assert stored.destination == {
        **job.destination,
        "slack_files": ["F1", "F2"],
        "answer_ts": "2.0",
    }
