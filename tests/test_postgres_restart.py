"""PostgreSQL restarting (down a second, then back on the same port) at each moment of a job's
life: through a relay in front of the server (tests.tcp_relay) that refuses connections and
cuts the open ones, as a restart or a failover does. Each test asserts what a person and an
operator meet: the result delivered once and charged once, nothing left stuck, and the outage
in the log as warnings, not errors with their tracebacks."""

from __future__ import annotations

import asyncio
import errno
import logging
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from adapters.discord import listener as discord_listener
from bot import jobs as jobs_module
from bot.adapter import JobResult
from bot.commands.handler import CONJURE_FAILED
from bot.jobs import DATABASE_UNANSWERED, RESTARTED_BEFORE_START, DeliveryPolicy
from bot.leadership import Leadership, PostgresLock
from bot.quotas.windows import month_window
from bot.sandbox import HttpFault
from storage.errors import is_outage
from storage.jobs import JobStore, user_subject
from storage.models import Delivery, Job, JobStatus, utcnow
from tests.discord_harness import GUILD_ID, USER_ID, running_discord_conjure
from tests.fakes.discord_api import EPHEMERAL
from tests.harness import Conjure, all_jobs, running_conjure
from tests.sandbox_fixtures import SandboxServer
from tests.slack_harness import running_slack_conjure
from tests.tcp_relay import PostgresRelay, console_behind_a_relay, relayed_postgres
from tests.test_delivery import assert_delivered_once_charged_once, only_job
from tests.test_queue import request, settle_all, submit

RESTART = 1.0  # seconds PostgreSQL is away


async def restart(relay: PostgresRelay, seconds: float = RESTART) -> None:
    """PostgreSQL restarts: its port refuses, open connections are cut, then it is back."""
    relay.down()
    await _back_after(relay, seconds)


async def _back_after(relay: PostgresRelay, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await relay.up()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def assert_charged_once(store: JobStore, platform: str, workspace: str, user: str) -> None:
    """The person's month charged exactly what their jobs cost, once, nothing left reserved."""
    jobs = [job for job in await all_jobs(store) if job.user_id == user]
    assert jobs and all(job.actual_micros for job in jobs)
    subject = user_subject(platform, workspace, user)
    counter = await store.counter("user", subject, month_window(utcnow()).key)
    assert counter is not None
    assert (counter.reserved_micros, counter.spent_micros) == (
        0,
        sum(job.actual_micros for job in jobs),
    )


async def assert_one_image_saved_and_charged_once(
    conjure: Conjure, caplog: pytest.LogCaptureFixture
) -> None:
    """The console's one job succeeded, its image saved once, charged once, and no error logged."""
    [job] = await all_jobs(conjure.runtime.store)
    assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros
    assert job.delivery == Delivery.DELIVERED
    assert len(list(conjure.console.output_dir.iterdir())) == 1
    await assert_charged_once(conjure.runtime.store, "console", "local", "you")
    assert errors(caplog) == []


def away_after_the_create(
    conjure: Conjure,
    relay: PostgresRelay,
    restarts: list[asyncio.Task[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL goes away for 1.5 s just as Replicate answers the (first) create; the task
    that brings it back goes into `restarts`."""
    replicate = conjure.runtime.replicate
    create = replicate.create_prediction

    async def create_then_restart(**kwargs: Any) -> Any:
        created = await create(**kwargs)
        relay.down()
        restarts.append(asyncio.create_task(_back_after(relay, 1.5)))
        return created

    monkeypatch.setattr(replicate, "create_prediction", create_then_restart)


async def test_a_polled_job_rides_out_a_restart_and_is_delivered_once(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No webhooks: Conjure reads the prediction every poll interval, and records each read.
    PostgreSQL restarts while it runs: the reads that meet it are skipped, the polling goes
    on, and the result is delivered and charged once, soon after, not when the sweeper finds
    the job silent minutes later."""
    sandbox_server.sandbox.faults.run_seconds = 2.0
    polled = console_behind_a_relay(sandbox_server, postgres_url, tmp_path, webhooks=False)
    async with polled as (relay, conjure):
        outcome = asyncio.create_task(conjure.console.run_line("/imagine a fox", timeout=20))
        while not conjure.service._polling:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await restart(relay)

        assert (await outcome).ok
        await conjure.service.wait_idle()
        await assert_one_image_saved_and_charged_once(conjure, caplog)


async def test_a_polled_job_whose_create_meets_a_long_restart_is_still_attached_and_delivered(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No webhooks, and PostgreSQL away just as Replicate answers the create, for longer than
    another instance would wait before taking a silent job over. Without webhooks nothing but
    this instance can tie that prediction to its job (no takeover, no search finds it), so it
    keeps trying to record it: the result is delivered and charged once. It gave up after the
    takeover's wait: the run was billed and its result never came."""
    monkeypatch.setattr(jobs_module, "START_TAKEOVER", timedelta(seconds=0.3))
    restarts: list[asyncio.Task[None]] = []
    polled = console_behind_a_relay(sandbox_server, postgres_url, tmp_path, webhooks=False)
    async with polled as (relay, conjure):
        away_after_the_create(conjure, relay, restarts, monkeypatch)
        outcome = await conjure.console.run_line("/imagine a fox", timeout=20)
        await asyncio.gather(*restarts)
        await conjure.service.wait_idle()

        assert outcome.ok
        assert sandbox_server.sandbox.create_count == 1
        await assert_one_image_saved_and_charged_once(conjure, caplog)


@pytest.mark.parametrize("cancel_refused_at_first", [False, True])
async def test_a_polled_job_whose_prediction_cannot_be_recorded_in_time_is_stopped_and_given_back(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    cancel_refused_at_first: bool,
) -> None:
    """No webhooks, and PostgreSQL away for longer than a job may wait to start
    (START_GIVE_UP): its prediction, which nothing could ever tie to it, is stopped, and once
    the database answers the job is given back and its person told; nothing is charged. A stop
    Replicate refuses at first (503s past the client's retries) is asked again: the run went
    on, billed by Replicate to a job given back."""
    sandbox_server.sandbox.faults.run_seconds = 5.0  # still running when it is stopped
    if cancel_refused_at_first:  # only the cancel is a POST under /v1/predictions/
        refused = HttpFault(
            status=503, count=4, method="POST", path_prefix="/v1/predictions/", retry_after=0.01
        )
        sandbox_server.sandbox.faults.http.append(refused)
    monkeypatch.setattr(jobs_module, "START_GIVE_UP", timedelta(seconds=0.5))
    monkeypatch.setattr(jobs_module, "START_TAKEOVER", timedelta(seconds=0.3))
    restarts: list[asyncio.Task[None]] = []
    polled = console_behind_a_relay(sandbox_server, postgres_url, tmp_path, webhooks=False)
    async with polled as (relay, conjure):
        away_after_the_create(conjure, relay, restarts, monkeypatch)
        await conjure.console.run_line("/imagine a fox", timeout=0.1)
        await asyncio.gather(*restarts)
        await conjure.service.wait_idle()
        await conjure.service.recover()  # the sweeper's round once the database answers
        await conjure.service.wait_idle()

        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "canceled"
        [job] = await all_jobs(conjure.runtime.store)
        assert job.job_status is JobStatus.FAILED and not job.actual_micros
        assert RESTARTED_BEFORE_START in conjure.output.getvalue()
        subject = user_subject("console", "local", "you")
        counter = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
        assert counter is not None and (counter.reserved_micros, counter.spent_micros) == (0, 0)
        assert errors(caplog) == []


async def test_a_create_that_meets_an_outage_longer_than_the_takeover_is_left_to_its_webhook(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With webhooks, PostgreSQL away just as the create answered, for longer than the record
    of its prediction is tried (START_TAKEOVER; after it the prediction is found by its webhook
    URL): the job is left to its webhook and the sweeper, which tie the prediction to it once
    the database answers. The person read "internal error, try again" while the job ran and
    was charged anyway (trying again paid twice)."""
    monkeypatch.setattr(jobs_module, "START_TAKEOVER", timedelta(seconds=0.3))
    restarts: list[asyncio.Task[None]] = []
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (relay, conjure):
        away_after_the_create(conjure, relay, restarts, monkeypatch)
        outcome = asyncio.create_task(conjure.console.run_line("/imagine a fox", timeout=20))
        await asyncio.gather(*restarts)
        await conjure.service.recover()  # the sweeper's round once the database answers

        assert (await outcome).ok
        await conjure.service.wait_idle()
        assert "internal error" not in conjure.output.getvalue()
        assert sandbox_server.sandbox.create_count == 1
        await assert_one_image_saved_and_charged_once(conjure, caplog)


async def test_a_restart_between_the_post_and_its_record_posts_the_result_once(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The result is posted, and PostgreSQL restarts before it is recorded delivered: the record
    is tried again until the database answers. Left claimed, the delivery was taken over once
    its lease lapsed and posted a second time, on a platform that cannot tell what it posted
    (the console here, Discord: ChatAdapter.deliver_result's default)."""
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (relay, conjure):
        service = conjure.service
        service.delivery = DeliveryPolicy(backoff=0.05, lease=timedelta(seconds=3))
        restarts: list[asyncio.Task[None]] = []
        post_result = conjure.console.post_result

        async def post_then_restart(job: Job, result: JobResult) -> None:
            await post_result(job, result)
            if not restarts:  # the first post only: here, before the delivery records it
                relay.down()
                restarts.append(asyncio.create_task(_back_after(relay, RESTART)))

        monkeypatch.setattr(conjure.console, "post_result", post_then_restart)
        sweeper = asyncio.create_task(service.sweep_forever(every=60, deliveries_every=0.1))
        try:
            assert (await conjure.console.run_line("/imagine a fox", timeout=20)).ok
            await asyncio.gather(*restarts)
            await service.wait_idle()
            await asyncio.sleep(service.delivery.lease.total_seconds() + 0.5)  # a lease later
            await service.wait_idle()
        finally:
            sweeper.cancel()

        [job] = await all_jobs(conjure.runtime.store)
        assert job.delivery == Delivery.DELIVERED and job.actual_micros
        assert conjure.output.getvalue().count("saved ") == 1  # posted once
        await assert_charged_once(conjure.runtime.store, "console", "local", "you")
        assert errors(caplog) == []


async def test_a_restart_before_the_slack_share_is_ridden_out_and_the_image_posted_once(
    sandbox_server: SandboxServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL restarts while the image uploads to Slack: the checkpoint that records the
    upload before its share (so a second delivery can tell it was shared) cannot be written.
    The delivery tries again once the database is back, and the image is in the thread once."""
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_slack_conjure(sandbox_server, proxied) as conjure,
    ):
        conjure.service.delivery = DeliveryPolicy(tries=4, backoff=0.5, max_wait=1.0)
        conjure.fake.delays["files.getUploadURLExternal"] = 0.2
        await conjure.slash("/imagine", "a red fox in the snow")
        while not conjure.fake.calls_to("files.getUploadURLExternal"):
            await asyncio.sleep(0.01)
        await restart(relay)
        await conjure.settle(sandbox_server)

        job = await only_job(conjure, sandbox_server)
        await assert_delivered_once_charged_once(conjure, job)
        assert len(conjure.fake.calls_to("files.completeUploadExternal")) == 1
        assert errors(caplog) == []


async def test_a_restart_during_the_slack_share_is_recorded_delivered_once_back(
    sandbox_server: SandboxServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL restarts while Slack shares the image: the delivery is recorded once the
    database is back, in one warning line, not left claimed (with an error and its
    traceback) for another claim to post again a lease later."""
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_slack_conjure(sandbox_server, proxied) as conjure,
    ):
        conjure.service.delivery = DeliveryPolicy(backoff=0.2)
        conjure.fake.delays["files.completeUploadExternal"] = 0.3
        await conjure.slash("/imagine", "a red fox in the snow")
        while not conjure.fake.calls_to("files.completeUploadExternal"):
            await asyncio.sleep(0.01)
        await restart(relay)
        await conjure.settle(sandbox_server)

        job = await only_job(conjure, sandbox_server)
        await assert_delivered_once_charged_once(conjure, job)
        assert errors(caplog) == []


async def test_a_status_edit_due_during_a_restart_is_skipped_in_one_line(
    sandbox_server: SandboxServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A running job's progress is shown at most every progress_interval: the edit held back
    falls due while PostgreSQL restarts. It is skipped (a warning), not a failed background
    task with a traceback, and the job ends, delivered once."""
    sandbox_server.sandbox.faults.run_seconds = 3.0
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_slack_conjure(sandbox_server, proxied, progress_interval=0.5) as conjure,
    ):
        await conjure.slash("/imagine", "a red fox in the snow")
        while not conjure.service._shows_later:  # a progress held back, shown when due
            await asyncio.sleep(0.01)
        await conjure.runtime.engine.dispose()  # its read meets the refusal, not a cut
        await restart(relay)
        await conjure.settle(sandbox_server)

        job = await only_job(conjure, sandbox_server)
        await assert_delivered_once_charged_once(conjure, job)
        assert errors(caplog) == []


async def test_a_record_the_database_does_not_take_stops_before_the_claims_lease_lapses(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The result is posted and PostgreSQL stays away for longer than the claim's lease: the
    record stops being tried before the lease lapses. Tried on for a lease counted from the
    post (later than the last renewal), it went on past it, when another instance may have
    taken the delivery over: its late record would mark that instance's claim delivered."""
    monkeypatch.setattr(jobs_module, "UNANSWERED_RETRY", 0.05)  # tried to the last moment
    monkeypatch.setattr(jobs_module, "UNANSWERED_RETRY_MAX", 0.05)
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (relay, conjure):
        service = conjure.service
        service.delivery = DeliveryPolicy(backoff=0.05, lease=timedelta(seconds=1.5))
        restarts: list[asyncio.Task[None]] = []
        post_result = conjure.console.post_result

        async def post_then_go_away(job: Job, result: JobResult) -> None:
            await asyncio.sleep(0.3)  # a post that takes a while, after the last renewal
            await post_result(job, result)
            relay.down()
            restarts.append(asyncio.create_task(_back_after(relay, 2.5)))

        monkeypatch.setattr(conjure.console, "post_result", post_then_go_away)
        await conjure.console.run_line("/imagine a fox", timeout=0.1)
        while not restarts:
            await asyncio.sleep(0.01)
        await service.wait_idle()  # the delivery gave up while the database was away
        gave_up = [r for r in caplog.records if "not recorded delivered" in r.getMessage()]
        await asyncio.gather(*restarts)

        [job] = await all_jobs(conjure.runtime.store)
        assert job.delivery == Delivery.DELIVERING and job.delivery_lease_until is not None
        [line] = gave_up
        assert line.created < job.delivery_lease_until.replace(tzinfo=UTC).timestamp()


async def test_a_restart_as_a_slot_frees_starts_the_queued_job_once_it_is_back(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the jobs-in-flight limit a second job waits for the first's slot; PostgreSQL
    restarts just as the first ends and its slot frees. The queued job is started by the
    sweeper once the database is back (not left waiting), both are delivered and charged
    once, and the log holds warnings, not errors."""
    sandbox_server.sandbox.faults.run_seconds = 0.5  # both are in before the first ends
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_conjure(
            sandbox_server, proxied, tmp_path / "out", conjure_user_max_in_flight=1
        ) as conjure,
    ):
        service = conjure.service
        service.delivery = DeliveryPolicy(backoff=0.05)
        restarts: list[asyncio.Task[None]] = []
        slot_freed = service._slot_freed

        def restart_as_it_frees(job: Job) -> None:
            if not restarts:
                relay.down()
                restarts.append(asyncio.create_task(_back_after(relay, RESTART)))
            slot_freed(job)

        monkeypatch.setattr(service, "_slot_freed", restart_as_it_frees)
        sweeper = asyncio.create_task(service.sweep_forever(every=60, deliveries_every=0.1))
        try:
            jobs = await submit(conjure, 2)  # the second waits for the first's slot
            assert jobs[1].waiting_since is not None
            while not restarts:
                await asyncio.sleep(0.01)
            await asyncio.gather(*restarts)
            done = await settle_all(conjure, sandbox_server, jobs)
        finally:
            sweeper.cancel()
        assert restarts
        assert [j.job_status for j in done] == [JobStatus.SUCCEEDED] * 2
        jobs = await all_jobs(conjure.runtime.store)
        assert all(j.delivery == Delivery.DELIVERED and j.actual_micros for j in jobs)
        assert conjure.output.getvalue().count("saved ") == 2
        store, you = conjure.runtime.store, user_subject("console", "local", "you")
        live, queue = [await store.counter("user", you, kind) for kind in ("live", "queue")]
        assert live is not None and queue is not None
        assert live.jobs == 0 and queue.jobs == 0  # no hold left behind
        await assert_charged_once(store, "console", "local", "you")
        assert errors(caplog) == []


async def test_a_restart_just_after_a_discord_command_is_deferred_runs_it_once(
    sandbox_server: SandboxServer,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Discord command is recorded, then deferred publicly ("thinking"), and PostgreSQL
    restarts at that moment: the job goes on (it is recorded, and its person was told it was
    taken) and is delivered and charged once. It was answered "Conjure hit an internal error
    ... Please try again" while the sweeper started it anyway a few seconds later: a person who
    did try again paid twice."""
    restarts: list[asyncio.Task[None]] = []
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_discord_conjure(sandbox_server, proxied) as conjure,
    ):
        defer = discord_listener.defer_publicly

        async def defer_then_restart(interaction: Any) -> Any:
            deferred = await defer(interaction)
            relay.down()
            restarts.append(asyncio.create_task(_back_after(relay, RESTART)))
            return deferred

        monkeypatch.setattr(discord_listener, "defer_publicly", defer_then_restart)
        sent = await conjure.interact("imagine", {"prompt": "a red fox in the snow"})
        await asyncio.gather(*restarts)
        await conjure.settle()

        fake = conjure.discord
        assert [m for m in fake.messages.values() if "internal error" in m["content"]] == []
        message = fake.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert [a["filename"] for a in message["attachments"]] == ["out-0.webp"]
        [job] = await all_jobs(conjure.runtime.store)
        assert job.job_status is JobStatus.SUCCEEDED and job.actual_micros
        assert job.delivery == Delivery.DELIVERED
        assert sandbox_server.sandbox.create_count == 1
        await assert_charged_once(conjure.runtime.store, "discord", str(GUILD_ID), str(USER_ID))
        assert errors(caplog) == []


async def test_a_leader_cut_off_by_a_restart_stops_its_duties_and_leads_again_once_back(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leader holds its lock on a connection of its own, which the restart cuts: it stops
    its duties (recovery and the sweeper), and once PostgreSQL is back it takes the lead again
    and runs them again. The restart comes as the recovery starts (a leader taking the lead
    just as the server goes): the recovery that meets it is a warning, not an error with its
    traceback, and the next term's recovery delivers the result that waited."""
    async with relayed_postgres(postgres_url) as (relay, proxied):
        leadership = Leadership(PostgresLock(proxied), retry=0.1)
        async with running_conjure(
            sandbox_server, proxied, tmp_path / "out", leadership=leadership
        ) as conjure:
            service = conjure.service
            await asyncio.wait_for(leadership.leading.wait(), 5)
            sandbox_server.sandbox.faults.drop_webhooks = 10**6  # its end is the test's
            reply = await conjure.runtime.commands.handle(request())
            assert reply.job is not None
            [prediction_id] = sandbox_server.sandbox.predictions
            await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 10)
            final = await conjure.runtime.replicate.get_prediction(prediction_id)
            console = service.adapters["console"]
            service.remove_adapter("console")  # its result waits, pending, for the leader
            await service.apply_prediction(reply.job.id, final)
            await service.wait_idle()
            service.add_adapter(console)

            recoveries: list[asyncio.Task[None]] = []
            recover = service.recover

            async def restart_as_it_recovers(silent_for: timedelta | None = None) -> None:
                if not recoveries:
                    relay.down()
                    recoveries.append(asyncio.create_task(_back_after(relay, RESTART)))
                await recover(silent_for)

            monkeypatch.setattr(service, "recover", restart_as_it_recovers)
            caplog.clear()
            relay.down()  # the first restart: this term ends, the next one recovers
            await _back_after(relay, 0.3)
            async with asyncio.timeout(10):
                while leadership.terms < 3 or not leadership.leading.is_set():
                    await asyncio.sleep(0.02)
                while "saved " not in conjure.output.getvalue():
                    await asyncio.sleep(0.02)
            await service.wait_idle()

            [job] = await all_jobs(conjure.runtime.store)
            assert job.delivery == Delivery.DELIVERED
            assert conjure.output.getvalue().count("saved ") == 1
            await assert_charged_once(conjure.runtime.store, "console", "local", "you")
        assert errors(caplog) == []


async def test_the_health_check_during_a_restart_is_503_in_one_warning_line(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A load balancer probes /healthz every few seconds: during a restart each probe is
    answered 503 (take this instance out for now) with a warning, not an error and its
    traceback per probe; once PostgreSQL is back, 200."""
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (relay, conjure):
        await conjure.runtime.engine.dispose()  # no connection left from before
        relay.down()
        caplog.clear()
        assert (await conjure.http.get("/healthz")).status_code == 503
        assert errors(caplog) == []
        assert [r.levelno for r in caplog.records if "health" in r.getMessage()] == [
            logging.WARNING
        ]
        await relay.up()
        assert (await conjure.http.get("/healthz")).status_code == 200


async def test_a_checkpoint_whose_database_is_unreachable_is_tried_again_not_failed_for_good(
    sandbox_server: SandboxServer,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a failover the server's address may not be reached at all for a moment: connecting
    raises an OSError that is no ConnectionError (no route to host, a name that does not
    resolve), which SQLAlchemy does not wrap either. Met by the checkpoint before the Slack
    share, it was taken for Slack refusing for good: the delivery failed, and the result the
    person was charged for never came."""
    async with running_slack_conjure(sandbox_server, postgres_url) as conjure:
        conjure.service.delivery = DeliveryPolicy(backoff=0.05)
        store = conjure.runtime.store
        merge_destination = store.merge_destination
        unreachable = [OSError(errno.EHOSTUNREACH, "Connect call failed: No route to host")]

        async def during_a_failover(job_id: str, fields: dict[str, Any]) -> None:
            if unreachable:
                raise unreachable.pop()
            await merge_destination(job_id, fields)

        monkeypatch.setattr(store, "merge_destination", during_a_failover)
        await conjure.slash("/imagine", "a red fox in the snow")
        await conjure.settle(sandbox_server)

        assert not unreachable  # the checkpoint met it
        job = await only_job(conjure, sandbox_server)
        await assert_delivered_once_charged_once(conjure, job)
        assert errors(caplog) == []


async def test_a_checkpoint_the_database_refuses_as_wrong_fails_the_delivery_at_once(
    sandbox_server: SandboxServer,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQL the database refuses as wrong (a mistake in Conjure) under the checkpoint before the
    share will fail again: the delivery fails at once, its traceback in the log, where it was
    tried again and again as if the database were away, hiding the bug."""
    async with running_slack_conjure(sandbox_server, postgres_url) as conjure:
        conjure.service.delivery = DeliveryPolicy(backoff=0.05)
        store = conjure.runtime.store
        calls: list[str] = []

        async def refused(job_id: str, fields: dict[str, Any]) -> None:
            calls.append(job_id)
            raise ProgrammingError("UPDATE job", {}, Exception("column nope does not exist"))

        monkeypatch.setattr(store, "merge_destination", refused)
        await conjure.slash("/imagine", "a red fox in the snow")
        await conjure.settle(sandbox_server)

        assert len(calls) == 1
        job = await only_job(conjure, sandbox_server)
        assert job.delivery == Delivery.FAILED
        [failed] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "delivery failed" in failed.getMessage() and failed.exc_info is not None


async def test_conjure_usage_on_discord_during_a_restart_says_try_again_in_one_line(
    sandbox_server: SandboxServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`/conjure usage` is deferred privately at once, then reads the database: during a
    restart the person is told, privately, to try again in a minute, and the log says the
    database did not answer in a warning, not an error with its traceback."""
    async with (
        relayed_postgres(postgres_url) as (relay, proxied),
        running_discord_conjure(sandbox_server, proxied) as conjure,
    ):
        await conjure.runtime.engine.dispose()  # no connection left from before
        relay.down()
        caplog.clear()
        sent = await conjure.interact("conjure", subcommand="usage")
        message = conjure.discord.original(sent.token)
        assert message is not None and message["flags"] & EPHEMERAL
        assert message["content"] == CONJURE_FAILED
        assert errors(caplog) == []

        await relay.up()
        sent = await conjure.interact("conjure", subcommand="usage")
        message = conjure.discord.original(sent.token)
        assert message is not None and "$0.00" in message["content"]


async def test_a_costly_command_during_a_restart_is_told_the_database_cannot_be_reached(
    sandbox_server: SandboxServer,
    postgres_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A command costly enough to be asked about first records its question before it asks:
    during a restart the person reads that Conjure cannot reach its database (try again in a
    minute), as for any other command, not "an internal error", and the log holds a warning,
    not an error with its traceback."""
    async with console_behind_a_relay(sandbox_server, postgres_url, tmp_path) as (relay, conjure):
        # The safety rules read now (kept 5 s): the question is what meets the restart.
        assert (await conjure.console.run_line("/imagine a fox", timeout=20)).ok
        await conjure.service.wait_idle()
        await conjure.runtime.engine.dispose()  # no connection left from before
        relay.down()
        caplog.clear()
        asked = await conjure.console.run_line("/video a fox", timeout=20)
        assert asked.error == DATABASE_UNANSWERED
        assert errors(caplog) == []

        await relay.up()
        asked = await conjure.console.run_line("/video a fox", timeout=20)
        assert asked.error is not None and "/confirm to run it" in asked.error


async def test_the_leaders_discord_gateway_comes_back_after_a_restart(
    sandbox_server: SandboxServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Under `conjure serve` the Discord gateway is the leader's: the restart cuts the lock's
    connection, the leader closes its gateway (another instance may lead now), and once
    PostgreSQL is back it leads again and connects again: commands reach Conjure as before.
    The new term's recovery meets a pooled connection the restart cut, fails once and is
    started again: that was an error with its traceback after every restart, now a warning."""
    async with relayed_postgres(postgres_url) as (relay, proxied):
        leadership = Leadership(PostgresLock(proxied), retry=0.1)
        async with running_discord_conjure(
            sandbox_server, proxied, gateway=True, leadership=leadership
        ) as conjure:
            gateway = conjure.gateway
            assert gateway is not None
            await conjure.discord.wait_for(lambda: gateway.connected == 1)
            await restart(relay)
            await conjure.discord.wait_for(lambda: leadership.terms == 2)
            await conjure.discord.wait_for(lambda: gateway.connected == 1)

            sent = await conjure.interact("imagine", {"prompt": "a red fox in the snow"})
            await conjure.discord.wait_for(
                lambda: (
                    "✅ done" in ((conjure.discord.original(sent.token) or {}).get("content") or "")
                )
            )
            assert len(gateway.identifies) + len(gateway.resumes) == 2
        assert errors(caplog) == []


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (TimeoutError(), True),
        (OperationalError("UPDATE job", {}, Exception("server closed the connection")), True),
        (DBAPIError("UPDATE job", {}, Exception("canceling statement due to lock timeout")), True),
        # Every pooled connection busy past the pool's wait (a burst queued on row locks).
        (PoolTimeout("QueuePool limit of size 10 overflow 20 reached"), True),
        (ProgrammingError("SELECT nope", {}, Exception("column nope does not exist")), False),
        (IntegrityError("INSERT INTO job", {}, Exception("duplicate key")), False),
    ],
)
def test_an_outage_is_told_from_a_mistake_in_what_was_asked(
    error: BaseException, outage: bool
) -> None:
    assert is_outage(error) is outage


async def test_a_background_task_that_asked_the_database_wrongly_keeps_its_traceback(
    sandbox_server: SandboxServer,
    sqlite_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A restart stopping a background task is a warning line; SQL the database refuses as
    wrong is a bug, and its traceback stays in the log."""

    async def asked_wrongly() -> None:
        raise ProgrammingError("SELECT nope", {}, Exception("column nope does not exist"))

    async def cut_off() -> None:
        raise ConnectionRefusedError(111, "Connect call failed")

    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        await conjure.service.wait_idle()
        caplog.clear()
        for step in (asked_wrongly, cut_off):
            conjure.service.spawn(step())
            await conjure.service.wait_idle()
    [wrong, cut] = [r for r in caplog.records if "background job task" in r.getMessage()]
    assert wrong.levelno == logging.ERROR and wrong.exc_info is not None
    assert cut.levelno == logging.WARNING and cut.exc_info is None
