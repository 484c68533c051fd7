"""A command acknowledged is never lost to a crash before its prediction is created.

The job is recorded before the platform is told the command was taken; an instance that dies
after that, before its create, leaves a queued job with no prediction, which another instance's
sweeper starts once it has been untouched for START_TAKEOVER. Whoever starts a job claims it
first (JobStore.touch_unstarted), so a slow instance and a takeover never both create it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.adapter import CommandRequest
from bot.jobs import START_TAKEOVER
from bot.replicate.errors import PredictionOutcomeUnknown
from storage.engine import write
from storage.models import Delivery, Job, JobStatus, utcnow
from tests.harness import Conjure, all_jobs, running_conjure, settle


def _request(key: str) -> CommandRequest:
    return CommandRequest(
        platform="console",
        workspace="local",
        channel="terminal",
        user_id="you",
        command="imagine",
        text="a red fox",
        request_key=key,
    )


async def _age(conjure: Conjure) -> None:
    """Make every job look untouched for longer than START_TAKEOVER."""
    past = utcnow() - START_TAKEOVER * 2
    async with write(conjure.runtime.store.engine) as conn:
        await conn.execute(update(Job).values(updated_at=past))


def _hold_announcements(conjure: Conjure) -> asyncio.Event:
    """The console's post_status waits for the returned event (an instance stuck, or dying,
    between recording a job and creating its prediction)."""
    release = asyncio.Event()
    post_status = conjure.console.post_status

    async def held(job: Job) -> dict[str, Any]:
        await release.wait()
        return await post_status(job)

    conjure.console.post_status = held  # type: ignore[method-assign]
    return release


async def _recorded(conjure: Conjure) -> None:
    while await conjure.runtime.store.count() == 0:
        await asyncio.sleep(0.01)


async def test_a_command_is_acknowledged_only_once_its_job_is_recorded(
    sandbox_server: Any, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        recorded_at_ack: list[bool] = []

        async def acknowledge() -> None:
            recorded_at_ack.append(await conjure.runtime.store.has_request("console:one"))

        reply = await conjure.runtime.commands.handle(_request("console:one"), acknowledge)
        await settle(conjure, sandbox_server)
    assert reply.job is not None
    assert recorded_at_ack == [True]


async def test_a_failed_acknowledgement_gives_the_job_back(
    sandbox_server: Any, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:

        async def acknowledge() -> None:
            raise RuntimeError("the interaction expired")

        reply = await conjure.runtime.commands.handle(_request("console:late"), acknowledge)
        await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert reply.job is None and reply.refused
    assert job.job_status is JobStatus.FAILED and job.reservation == "released"
    assert sandbox_server.sandbox.create_count == 0


async def test_a_slow_acknowledgement_keeps_its_job_claimed_from_other_instances(
    sandbox_server: Any, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform slow to answer the acknowledgement (Discord's deferral, held) past
    START_TAKEOVER: the job is kept claimed meanwhile, so no sweeper starts it, only for the
    failed acknowledgement to fail it at $0 while its prediction runs unpaid."""
    async with (
        running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure,
        running_conjure(sandbox_server, database_url, tmp_path / "other") as other,
    ):
        monkeypatch.setattr("bot.jobs.START_TAKEOVER", timedelta(seconds=1))

        async def acknowledge() -> None:
            await asyncio.sleep(1.5)  # past START_TAKEOVER
            await other.service.sweep_unstarted()
            await other.service.wait_idle()
            raise RuntimeError("the interaction expired")

        reply = await conjure.runtime.commands.handle(_request("console:slow"), acknowledge)
        await settle(conjure, sandbox_server)
        await settle(other, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert reply.job is None and reply.refused
    assert job.job_status is JobStatus.FAILED and job.reservation == "released"
    assert sandbox_server.sandbox.create_count == 0


async def test_an_acknowledgement_failing_after_a_takeover_leaves_the_started_job_to_run(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    """Should another instance have started the job all the same (its claim lost with the
    database, say), the failed acknowledgement does not fail a job whose prediction runs:
    it is delivered once and charged once."""
    async with (
        running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure,
        running_conjure(sandbox_server, database_url, tmp_path / "other") as other,
    ):

        async def acknowledge() -> None:
            await _age(conjure)  # its claim looks abandoned: another instance takes it over
            await other.service.sweep_unstarted()
            while not await _started(conjure):
                await asyncio.sleep(0.01)
            raise RuntimeError("the interaction expired")

        await conjure.runtime.commands.handle(_request("console:taken"), acknowledge)
        await settle(other, sandbox_server)
        await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert sandbox_server.sandbox.create_count == 1
    assert job.job_status is JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED
    assert job.reservation == "settled" and job.actual_micros == 3000
    assert _files(tmp_path / "out", tmp_path / "other") == 1


async def test_a_job_whose_instance_died_before_its_create_is_started_by_the_sweeper(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        release = _hold_announcements(conjure)
        dying = asyncio.create_task(conjure.runtime.commands.handle(_request("console:k")))
        await _recorded(conjure)
        dying.cancel()  # the instance is gone: recorded, acknowledged, never created
        release.set()
        service = conjure.service
        await service.sweep_unstarted()
        await service.recover()
        await service.wait_idle()
        assert sandbox_server.sandbox.create_count == 0  # too young: may still be starting

        await _age(conjure)
        await service.sweep_unstarted()
        await service.wait_idle()
        await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert sandbox_server.sandbox.create_count == 1
    assert job.job_status is JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED
    assert job.reservation == "settled" and job.actual_micros == 3000
    assert len(list((tmp_path / "out").iterdir())) == 1


async def test_an_instance_that_lost_its_job_to_a_takeover_does_not_create_it_again(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    async with (
        running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure,
        running_conjure(sandbox_server, database_url, tmp_path / "other") as other,
    ):
        release = _hold_announcements(conjure)
        slow = asyncio.create_task(conjure.runtime.commands.handle(_request("console:s")))
        await _recorded(conjure)
        await _age(conjure)  # stuck past START_TAKEOVER: another instance takes it over
        await other.service.sweep_unstarted()
        while sandbox_server.sandbox.create_count == 0:
            await asyncio.sleep(0.01)
        release.set()  # the slow instance comes back and finds its job taken
        await slow
        await settle(other, sandbox_server)
        await settle(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert sandbox_server.sandbox.create_count == 1
    assert job.job_status is JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED
    assert _files(tmp_path / "out", tmp_path / "other") == 1


async def _started(conjure: Conjure) -> bool:
    """Whether the one job has its prediction recorded."""
    [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    return job.prediction_id is not None


def _files(*folders: Path) -> int:
    """How many files the console adapters saved, across instances."""
    return sum(len(list(folder.iterdir())) for folder in folders if folder.exists())


async def test_a_job_waiting_its_turn_to_start_here_is_not_taken_over_by_this_sweeper(
    sandbox_server: Any,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a burst, recorded jobs wait their turn to start (a few at a time); one that waits
    past START_TAKEOVER is not abandoned, so this instance's sweeper leaves it alone (it used
    to search Replicate for it and start it, only to find it started meanwhile)."""
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        release = _hold_announcements(conjure)
        waiting = asyncio.create_task(conjure.runtime.commands.handle(_request("console:w")))
        await _recorded(conjure)
        monkeypatch.setattr("bot.jobs.START_TAKEOVER", timedelta(milliseconds=50))
        await asyncio.sleep(0.1)  # untouched for longer than START_TAKEOVER, still waiting here
        await conjure.service.sweep_unstarted()
        await conjure.service.recover()
        await _still_waiting_then_started_here(conjure, release, waiting, sandbox_server, caplog)


async def test_without_webhooks_an_abandoned_job_is_not_started_again(
    sandbox_server: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """Polling only: a create that reached Replicate could not be found by its webhook URL, so
    starting the job again could run it twice; it waits to be given back instead."""
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", webhooks=False
    ) as conjure:
        _hold_announcements(conjure)
        dying = asyncio.create_task(conjure.runtime.commands.handle(_request("console:p")))
        await _recorded(conjure)
        dying.cancel()
        await _age(conjure)
        await conjure.service.sweep_unstarted()
        await conjure.service.wait_idle()
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert sandbox_server.sandbox.create_count == 0
    assert job.job_status is JobStatus.QUEUED


async def test_a_job_waiting_long_for_its_start_stays_claimed_from_other_instances(
    sandbox_server: Any,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that waits here for its turn longer than START_TAKEOVER (a burst, a busy worker)
    is touched meanwhile (bot.start_claims), so another instance's sweeper does not take it for
    abandoned: it used to search Replicate for it and start it there instead."""
    async with (
        running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure,
        running_conjure(sandbox_server, database_url, tmp_path / "other") as other,
    ):
        monkeypatch.setattr("bot.jobs.START_TAKEOVER", timedelta(seconds=1))
        release = _hold_announcements(conjure)
        waiting = asyncio.create_task(conjure.runtime.commands.handle(_request("console:w2")))
        await _recorded(conjure)
        await asyncio.sleep(1.5)  # past START_TAKEOVER, still waiting for its turn here
        await other.service.sweep_unstarted()
        await other.service.wait_idle()
        await _still_waiting_then_started_here(conjure, release, waiting, sandbox_server, caplog)
        await settle(other, sandbox_server)
    assert _files(tmp_path / "out") == 1 and _files(tmp_path / "other") == 0


async def _still_waiting_then_started_here(
    conjure: Conjure,
    release: asyncio.Event,
    waiting: asyncio.Task[Any],
    sandbox_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing took the held job over; once let go, it is created once and delivered."""
    assert sandbox_server.sandbox.create_count == 0
    assert "never started" not in caplog.text
    release.set()
    await waiting
    await settle(conjure, sandbox_server)
    [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]
    assert sandbox_server.sandbox.create_count == 1
    assert job.job_status is JobStatus.SUCCEEDED and job.delivery == Delivery.DELIVERED


async def test_a_job_another_instance_is_starting_is_not_given_up_by_a_new_leaders_recovery(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """A new leader's recovery (its predecessor died, or a worker started) meets a job that
    waited long (a queue, a burst) and that a live instance is starting at that moment: it is
    left to that instance, run, delivered and charged once. It was given back as "restarted
    before it could start" while the live instance's prediction ran: billed by Replicate,
    charged nothing, its result never shown."""
    async with (
        running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure,
        running_conjure(sandbox_server, sqlite_url, tmp_path / "other") as leader,
    ):
        release = _hold_announcements(conjure)
        starting = asyncio.create_task(conjure.runtime.commands.handle(_request("console:q")))
        await _recorded(conjure)
        async with write(conjure.runtime.store.engine) as conn:  # it waited three minutes
            await conn.execute(update(Job).values(created_at=utcnow() - timedelta(minutes=3)))
        find = leader.service.replicate.find_prediction_by_webhook

        async def find_then_it_starts(webhook: str, *args: Any, **kwargs: Any) -> Any:
            found = await find(webhook, *args, **kwargs)  # read before the create lands
            release.set()  # meanwhile the live instance creates and records its prediction
            while (await all_jobs(conjure.runtime.store))[0].prediction_id is None:
                await asyncio.sleep(0.01)
            return found

        leader.service.replicate.find_prediction_by_webhook = find_then_it_starts  # type: ignore[method-assign]
        await leader.service.recover()
        await starting
        await settle(conjure, sandbox_server)
        await settle(leader, sandbox_server)

        [job] = await all_jobs(conjure.runtime.store)
        assert sandbox_server.sandbox.create_count == 1
        assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros
        assert job.delivery == Delivery.DELIVERED


async def test_a_lost_creates_prediction_recorded_by_its_webhook_during_the_search_runs(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """A create's answer is lost (a 502) and, while Replicate's list is searched for it, its
    `start` webhook records the prediction on the job; the search misses it (a busy account's
    first pages). The job runs on, delivered and charged once: it was failed at $0 while the
    run went on, billed by Replicate, its result never shown."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        service = conjure.service
        create = service.replicate.create_prediction
        made: list[Any] = []

        async def answer_lost(**kwargs: Any) -> Any:
            made.append(await create(**kwargs))  # it reached Replicate, and its answer is lost
            raise PredictionOutcomeUnknown(
                "POST /predictions -> 502", status=502, webhook=kwargs.get("webhook")
            )

        async def missed_while_its_webhook_lands(*_: Any, **__: Any) -> Any:
            [job] = await all_jobs(service.store)
            assert await service.store.attach_prediction(job.id, made[0].id)
            return None  # not in the pages read

        service.replicate.create_prediction = answer_lost  # type: ignore[method-assign]
        service.replicate.find_prediction_by_webhook = missed_while_its_webhook_lands  # type: ignore[method-assign]
        await conjure.runtime.commands.handle(_request("console:lost"))
        await settle(conjure, sandbox_server)

        [job] = await all_jobs(service.store)
        assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros
        assert job.delivery == Delivery.DELIVERED
        assert len(list((tmp_path / "out").iterdir())) == 1
