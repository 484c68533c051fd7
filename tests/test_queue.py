"""The queue at the jobs-in-flight limit: jobs wait for a slot instead of being refused, start
in order on whichever instance frees one, never pass a limit, and are checked against the budget
again when they start. Through the real app, the sandbox on loopback and a real database."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from bot.adapter import CommandRequest
from bot.followups.buttons import Action, Button
from bot.quotas.windows import month_window
from storage.jobs import user_subject
from storage.models import Job, JobStatus, utcnow
from tests.harness import Conjure, running_conjure, settle


def request(user: str = "you", text: str = "a fox") -> CommandRequest:
    return CommandRequest("console", "local", "terminal", user, "imagine", text, user_name=user)


async def submit(conjure: Conjure, count: int, user: str = "you") -> list[Job]:
    jobs = []
    for n in range(count):  # one after another: the queue's order is the order given
        reply = await conjure.runtime.commands.handle(request(user, f"fox number {n}"))
        assert reply.job is not None, reply.text
        jobs.append(reply.job)
    return jobs


async def settle_all(conjure: Conjure, sandbox, jobs: list[Job]) -> list[Job]:
    """Until every job has ended (a queued one starts only after the one before it)."""
    for _ in range(50):
        await settle(conjure, sandbox)
        stored = [await conjure.runtime.store.get(job.id) for job in jobs]
        if all(job.job_status.terminal for job in stored):
            return stored
        await asyncio.sleep(0.05)
    raise TimeoutError([job.status for job in stored])


def overlaps(predictions: list[dict]) -> int:
    """The most predictions that were running at the same moment."""
    edges = []
    for p in predictions:
        edges.append((datetime.fromisoformat(p["created_at"]), 1))
        edges.append((datetime.fromisoformat(p["completed_at"]), -1))
    running = most = 0
    for _, step in sorted(edges):
        running += step
        most = max(most, running)
    return most


async def test_at_the_in_flight_limit_jobs_wait_and_start_in_order(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        store = conjure.runtime.store
        first, second, third = await submit(conjure, 3)
        waiting = [await store.get(job.id) for job in (second, third)]
        assert [job.queue_ahead for job in waiting] == [0, 1]
        shown = conjure.output.getvalue()
        assert "queued, next in line" in shown and "queued, 1 ahead of you" in shown

        done = await settle_all(conjure, sandbox_server, [first, second, third])
        assert [job.job_status for job in done] == [JobStatus.SUCCEEDED] * 3
        predictions = list(sandbox_server.sandbox.predictions.values())
        assert [p["input"]["prompt"] for p in predictions] == [
            "fox number 0",
            "fox number 1",
            "fox number 2",
        ]
        assert overlaps(predictions) == 1
        live = await store.counter("user", user_subject("console", "local", "you"), "live")
        queue = await store.counter("user", user_subject("console", "local", "you"), "queue")
        assert live.jobs == 0 and queue.jobs == 0


async def test_a_full_queue_refuses_as_before(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.5
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_user_max_in_flight=1,
        conjure_user_max_queued=2,
    ) as conjure:
        jobs = await submit(conjure, 3)
        refused = await conjure.runtime.commands.handle(request(text="one too many"))
        assert refused.refused and refused.job is None
        assert "already have 1 job running" in str(refused.text)
        assert "also have 2 jobs waiting, the most Conjure queues for you" in str(refused.text)
        await settle_all(conjure, sandbox_server, jobs)
        assert sandbox_server.sandbox.create_count == 3


async def test_a_queued_job_canceled_gives_its_place_to_the_next(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.5
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        store = conjure.runtime.store
        first, second, third = await submit(conjure, 3)
        press = conjure.console._press(Button(Action.CANCEL, second.id))
        reply = await conjure.runtime.followups.press(press)
        assert not reply.refused
        await conjure.service.start_waiting("console", "local")  # after the one it set off
        canceled = await store.get(second.id)
        assert canceled.job_status is JobStatus.CANCELED and canceled.actual_micros == 0
        moved_up = await store.get(third.id)
        assert moved_up.queue_ahead == 0 and moved_up.waiting_since is not None

        await settle_all(conjure, sandbox_server, [first, second, third])
        assert (
            "🚫 canceled" in conjure.output.getvalue()
        )  # shown by its delivery, in the background
        prompts = [p["input"]["prompt"] for p in sandbox_server.sandbox.predictions.values()]
        assert prompts == ["fox number 0", "fox number 2"]


async def test_a_queued_job_that_no_longer_fits_the_budget_is_refused_when_it_would_start(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_user_max_in_flight=1,
        conjure_user_usd_per_month=0.006,  # two flux-schnell images
    ) as conjure:
        store = conjure.runtime.store
        jobs = await submit(conjure, 3)
        done = await settle_all(conjure, sandbox_server, jobs)
        assert [job.job_status for job in done] == [
            JobStatus.SUCCEEDED,
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
        ]
        assert "monthly budget of $0.006" in (done[2].error or "")
        assert "monthly budget of $0.006" in conjure.output.getvalue()
        assert sandbox_server.sandbox.create_count == 2
        subject = user_subject("console", "local", "you")
        money = await store.counter("user", subject, month_window(utcnow()).key)
        assert (money.spent_micros, money.reserved_micros) == (6000, 0)


async def test_two_instances_start_one_queue_in_order_and_never_pass_the_limit(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """Jobs queued on either instance; a slot freed on one starts the next, wherever it was
    queued. At no moment do two of the person's jobs run."""
    sandbox_server.sandbox.faults.slow_start = 0.2
    limits = {"conjure_user_max_in_flight": 1}
    async with (
        running_conjure(sandbox_server, database_url, tmp_path / "a", **limits) as one,
        running_conjure(sandbox_server, database_url, tmp_path / "b", **limits) as two,
    ):
        jobs = []
        for n in range(6):
            instance = (one, two)[n % 2]
            reply = await instance.runtime.commands.handle(request(text=f"fox number {n}"))
            assert reply.job is not None, reply.text
            jobs.append(reply.job)
        for _ in range(20):
            await asyncio.gather(settle(one, sandbox_server), settle(two, sandbox_server))
            stored = [await one.runtime.store.get(job.id) for job in jobs]
            if all(job.job_status.terminal for job in stored):
                break
            await one.service.sweep_waiting()
        assert [job.job_status for job in stored] == [JobStatus.SUCCEEDED] * 6
        predictions = list(sandbox_server.sandbox.predictions.values())
        assert [p["input"]["prompt"] for p in predictions] == [f"fox number {n}" for n in range(6)]
        assert overlaps(predictions) == 1


async def test_a_new_job_waits_behind_the_queue_even_when_a_slot_has_just_freed(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Between a slot freeing and the next queued job taking it, a new command must not
    take it: it queues behind the ones already waiting."""
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        service, store = conjure.service, conjure.runtime.store
        first, second = await submit(conjure, 2)
        async with service._promoting:  # the freed slot is not handed on yet
            while (await store.get(first.id)).prediction_id is None:
                await asyncio.sleep(0.01)
            assert await service.cancel(await store.get(first.id))
            late = await conjure.runtime.commands.handle(request(text="fox number 2"))
            assert late.job is not None
            assert (await store.get(late.job.id)).waiting_since is not None
        done = await settle_all(conjure, sandbox_server, [first, second, late.job])
        assert [job.job_status for job in done] == [
            JobStatus.CANCELED,
            JobStatus.SUCCEEDED,
            JobStatus.SUCCEEDED,
        ]
        prompts = [p["input"]["prompt"] for p in sandbox_server.sandbox.predictions.values()]
        assert prompts == ["fox number 0", "fox number 1", "fox number 2"]
