"""Scenarios across features (quotas with the queue, admins' changes, buttons, streaming,
restarts): what a person sees and is charged when several features meet. Through the real app,
the sandbox on loopback and a real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.adapter import CommandRequest
from bot.followups.buttons import Action, Button
from bot.quotas.windows import month_window
from storage.jobs import user_subject
from storage.models import Job, JobStatus, utcnow
from tests.harness import Conjure, running_conjure, settle

FLUX_SCHNELL_MICROS = 3000
SUBJECT = user_subject("console", "local", "you")


def request(user: str = "you", text: str = "a fox", command: str = "imagine") -> CommandRequest:
    return CommandRequest("console", "local", "terminal", user, command, text, user_name=user)


async def submit(conjure: Conjure, text: str, user: str = "you") -> Job:
    reply = await conjure.runtime.commands.handle(request(user, text))
    assert reply.job is not None, reply.text
    return reply.job


async def until_ended(conjure: Conjure, sandbox, jobs: list[Job]) -> list[Job]:  # type: ignore[no-untyped-def]
    """Until every job has ended (a queued one starts only after the one before it)."""
    stored: list[Job] = []
    for _ in range(60):
        await settle(conjure, sandbox)
        stored = [await conjure.runtime.store.get(job.id) for job in jobs]  # type: ignore[misc]
        if all(job.job_status.terminal for job in stored):
            return stored
        await asyncio.sleep(0.05)
    raise TimeoutError([job.status for job in stored])


async def usage(conjure: Conjure, user: str = "you") -> str:
    reply = await conjure.runtime.commands.handle(request(user, "usage", "conjure"))
    return str(reply.text)


async def money(conjure: Conjure) -> tuple[int, int]:
    row = await conjure.runtime.store.counter("user", SUBJECT, month_window(utcnow()).key)
    return (0, 0) if row is None else (row.spent_micros, row.reserved_micros)


def alerts(conjure: Conjure) -> list[str]:
    return [line for line in conjure.output.getvalue().splitlines() if "[admins]" in line]


async def test_a_budget_lowered_while_a_job_runs_charges_it_refuses_the_next_and_alerts_once(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """The admin lowers the person's budget to what the running job will cost: the job is
    charged as billed, the next is refused by the new budget, and the admins hear once that
    the (new) budget was reached."""
    sandbox_server.sandbox.faults.slow_start = 0.4
    async with running_conjure(
        sandbox_server,
        database_url,
        tmp_path / "out",
        conjure_user_usd_per_month=1.0,
        conjure_admins="console:boss",
        conjure_alert_channels="console:admins",
    ) as conjure:
        job = await submit(conjure, "a coin")
        lowered = await conjure.runtime.commands.handle(
            request("boss", "quota <@you> usd=0.003", "conjure")
        )
        assert "budget $0.003/month" in str(lowered.text)
        [done] = await until_ended(conjure, sandbox_server, [job])
        assert done.job_status is JobStatus.SUCCEEDED
        assert done.actual_micros == FLUX_SCHNELL_MICROS
        assert await money(conjure) == (FLUX_SCHNELL_MICROS, 0)
        shown = await usage(conjure)
        assert "Spent this month: $0.003 of $0.003; $0.00 left" in shown, shown

        refused = await conjure.runtime.commands.handle(request(text="one more"))
        assert refused.refused and "monthly budget of $0.003" in str(refused.text)
        await conjure.service.send_alerts()
        await conjure.service.send_alerts()
        reached = [line for line in alerts(conjure) if "has reached 100%" in line]
        assert len(reached) == 1, alerts(conjure)
        assert "$0.003 of $0.003" in reached[0]


async def test_usage_adds_up_across_a_queue_a_cancel_and_the_next_start(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Three jobs at a limit of one in flight; the second, queued, is canceled; `/conjure usage`
    after each step shows what runs, what is held, and at the end exactly what was charged."""
    sandbox_server.sandbox.faults.slow_start = 0.4
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_user_max_in_flight=1,
        conjure_user_jobs_per_day=10,
        conjure_user_usd_per_month=1.0,
    ) as conjure:
        first = await submit(conjure, "fox 1")
        second = await submit(conjure, "fox 2")
        third = await submit(conjure, "fox 3")
        shown = await usage(conjure)
        # Queued jobs hold only their place: one job counted, one running, one held.
        assert "Jobs today: 1 of 10; 9 left" in shown, shown
        assert "Running now: 1 of 1; 0 left" in shown, shown
        assert "(+$0.003 running)" in shown, shown

        press = conjure.console._press(Button(Action.CANCEL, second.id))
        assert not (await conjure.runtime.followups.press(press)).refused
        done = await until_ended(conjure, sandbox_server, [first, second, third])
        assert [job.job_status for job in done] == [
            JobStatus.SUCCEEDED,
            JobStatus.CANCELED,
            JobStatus.SUCCEEDED,
        ]
        charged = sum(job.actual_micros for job in done)
        assert charged == 2 * FLUX_SCHNELL_MICROS
        assert await money(conjure) == (charged, 0)
        shown = await usage(conjure)
        assert "Jobs today: 2 of 10; 8 left" in shown, shown
        assert "Spent this month: $0.006 of $1.00" in shown and "running" not in shown, shown
        assert "Running now: 0 of 1" in shown, shown
        places = await conjure.runtime.store.counter("user", SUBJECT, "queue")
        assert places is not None and places.jobs == 0


async def test_a_reroll_pressed_while_its_parent_waits_in_the_queue_starts_nothing(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.4
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        first = await submit(conjure, "fox 1")
        queued = await submit(conjure, "fox 2")
        press = conjure.console._press(Button(Action.REROLL, queued.id))
        reply = await conjure.runtime.followups.press(press)
        assert reply.refused and reply.job is None, reply
        done = await until_ended(conjure, sandbox_server, [first, queued])
        assert [job.job_status for job in done] == [JobStatus.SUCCEEDED] * 2
        assert sandbox_server.sandbox.create_count == 2
        assert await money(conjure) == (2 * FLUX_SCHNELL_MICROS, 0)


QUESTION = "why is the sky blue?"  # 5 input tokens to the sandbox


async def test_an_answer_canceled_mid_stream_is_charged_its_tokens_and_ends_cleanly(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox = sandbox_server.sandbox
    sandbox.faults.pause_after_tokens = 5  # holds mid-answer, as a person reads it
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_usd_per_month=1.0
    ) as conjure:
        reply = await conjure.runtime.commands.handle(
            request(text=f"{QUESTION} --model llama-3-70b", command="ask")
        )
        job = reply.job
        assert job is not None, reply.text
        for _ in range(300):  # the five tokens written, and shown as they came
            written = [len(p.get("output") or []) for p in sandbox.predictions.values()]
            if written == [5] and len(conjure.console._streamed.get(job.id, "").split()) >= 5:
                break
            await asyncio.sleep(0.01)
        assert job.id in conjure.console._streamed, conjure.output.getvalue()
        assert await money(conjure) == (0, job.estimated_micros)

        press = conjure.console._press(Button(Action.CANCEL, job.id))
        assert not (await conjure.runtime.followups.press(press)).refused
        sandbox.faults.pause_after_tokens = 0
        [done] = await until_ended(conjure, sandbox_server, [job])
        await settle(conjure, sandbox_server)

        assert done.job_status is JobStatus.CANCELED
        prediction = sandbox.predictions[done.prediction_id]
        assert prediction["metrics"]["output_token_count"] == 5
        # 5 x $0.65 + 5 x $2.75 a million tokens: $0.000017, charged, none of it held.
        assert done.actual_micros == 17
        assert await money(conjure) == (17, 0)
        shown = conjure.output.getvalue()
        assert job.id not in conjure.console._streamed  # the half-written answer was ended
        assert "error: The job was canceled." in shown, shown
        assert shown.count("error:") == 1
        assert "Running now: 0" in await usage(conjure)


async def test_run_it_pressed_at_the_in_flight_limit_queues_the_job_and_it_runs_next(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """A price question answered while the person's one slot is taken: the job waits in the
    queue (not refused, the question not left open), starts when the slot frees, and a second
    Run it says it started and starts nothing more."""
    sandbox_server.sandbox.faults.slow_start = 0.4
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_max_in_flight=1
    ) as conjure:
        first = await submit(conjure, "a fox")
        asked = await conjure.runtime.commands.handle(
            request(text="a fox running", command="video")
        )
        assert asked.buttons and asked.job is None, asked.text
        question = asked.buttons[0].job_id
        run_it = conjure.console._press(Button(Action.CONFIRM, question))
        started = await conjure.runtime.followups.press(run_it)
        assert started.job is not None and not started.refused, started.text
        queued = await conjure.runtime.store.get(started.job.id)
        assert queued is not None and queued.waiting_since is not None
        recorded = await conjure.runtime.followups.confirmations.store.get(question)
        assert recorded is not None and recorded.job_id == queued.id

        again = await conjure.runtime.followups.press(run_it)
        assert again.refused and "already started" in str(again.text)
        done = await until_ended(conjure, sandbox_server, [first, queued])
        assert [job.job_status for job in done] == [JobStatus.SUCCEEDED] * 2
        assert sandbox_server.sandbox.create_count == 2
        spent, held = await money(conjure)
        assert (spent, held) == (sum(job.actual_micros for job in done), 0)


async def test_a_restart_with_one_job_running_and_two_queued_finishes_all_three_in_order(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The instance stops with one job running (its result comes while none is up) and two
    waiting; the next instance delivers the first, then starts the others, one at a time,
    and the counters end at what was charged."""
    sandbox = sandbox_server.sandbox
    sandbox.faults.slow_start = 0.3
    sandbox.faults.drop_webhooks = 100  # the stopped instance hears nothing
    limits = {"conjure_user_max_in_flight": 1}
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "a", **limits) as first:
        first.service.start_polling = lambda *_: None  # type: ignore[method-assign]
        jobs = [await submit(first, f"fox {n}") for n in range(3)]
        while not sandbox.predictions:
            await asyncio.sleep(0.01)
    await sandbox.wait_idle()  # the first run ends while no instance is up
    sandbox.faults.reset()
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "b", **limits) as second:
        done = await until_ended(second, sandbox_server, jobs)
        await settle(second, sandbox_server)
        assert [job.job_status for job in done] == [JobStatus.SUCCEEDED] * 3
        assert [job.delivery for job in done] == ["delivered"] * 3
        prompts = [p["input"]["prompt"] for p in sandbox.predictions.values()]
        assert prompts == ["fox 0", "fox 1", "fox 2"]
        assert await money(second) == (3 * FLUX_SCHNELL_MICROS, 0)
        shown = await usage(second)
        assert "Jobs today: 3" in shown and "Running now: 0 of 1" in shown, shown
        places = await second.runtime.store.counter("user", SUBJECT, "queue")
        assert places is not None and places.jobs == 0


async def test_a_person_with_a_free_slot_is_not_queued_behind_anothers_personal_limit(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The workspace runs 2 at once, each person 1. Ada has one running and one waiting for
    her own slot; Bo's job fits the workspace's free slot and his own: it starts at once, and
    he is never told the workspace is full (nor refused when its queue is)."""
    sandbox_server.sandbox.faults.slow_start = 0.4
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_user_max_in_flight=1,
        conjure_workspace_max_in_flight=2,
        conjure_workspace_max_queued=1,
    ) as conjure:
        running = await submit(conjure, "fox 1", user="ada")
        waiting = await submit(conjure, "fox 2", user="ada")
        assert (await conjure.runtime.store.get(waiting.id)).waiting_since is not None  # type: ignore[union-attr]

        reply = await conjure.runtime.commands.handle(request("bo", "an owl"))
        assert not reply.refused and reply.job is not None, reply.text
        started = await conjure.runtime.store.get(reply.job.id)
        assert started is not None and started.waiting_since is None
        shown = conjure.output.getvalue().split("an owl", 1)[-1]
        assert "ahead of you" not in shown and "next in line" not in shown  # never waiting
        done = await until_ended(conjure, sandbox_server, [running, waiting, reply.job])
        assert [job.job_status for job in done] == [JobStatus.SUCCEEDED] * 3
