"""The job service's own contract, seen from a recording chat adapter.

Every job starts the way an adapter starts one, through `Commands.handle`; the real app serves
the sandbox's webhooks on loopback, the database is real, and `RecordingAdapter` stands for the
platform: it records every call (with the job as handed over and as stored at that moment) and
can be told to raise. The assertions are what a person would have been shown and what was
charged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.platforms import attached
from bot.adapter import ChatAdapter, Checkpoint, CommandRequest, JobResult, Reply
from bot.markup import Mention, Text
from bot.quotas.windows import day_window, month_window
from bot.replicate.client import Prediction
from bot.sandbox import HttpFault
from storage.jobs import JobStore, user_subject
from storage.models import Delivery, Job, JobStatus, Reservation, utcnow
from tests.harness import Conjure, running_conjure, settle

PLATFORM = "recorder"  # a platform of the tests' own: no real adapter ever claims its jobs
FLUX_SCHNELL_MICROS = 3000  # one flux-schnell image at $0.003
NON_TERMINAL = {JobStatus.QUEUED, JobStatus.STARTING, JobStatus.PROCESSING}


class AdapterBroke(RuntimeError):
    """What a RecordingAdapter raises when told to."""


@dataclass(frozen=True)
class Seen:
    """The job as the service handed it to the adapter (a snapshot, not the live object)."""

    id: str
    status: JobStatus
    progress: int | None
    prediction_id: str | None
    destination: dict[str, Any]
    actual_micros: int | None
    duration_seconds: float | None
    error: str | None

    @classmethod
    def of(cls, job: Job) -> Seen:
        return cls(
            job.id,
            job.job_status,
            job.progress,
            job.prediction_id,
            dict(job.destination),
            job.actual_micros,
            job.duration_seconds,
            job.error,
        )


@dataclass
class Call:
    """One call the service made: which method, the job then, and its stored status then."""

    method: str
    job: Seen | None = None
    stored: JobStatus | None = None  # read from the database when the call came in
    result: JobResult | None = None
    message: str | None = None
    channel: str | None = None
    text: Text | None = None


Hook = Callable[[Call], Awaitable[None]]


@dataclass
class RecordingAdapter(ChatAdapter):
    """A chat platform that shows nothing and remembers everything it was asked to show."""

    platform: str = PLATFORM
    store: JobStore | None = None
    raise_on: set[str] = field(default_factory=set)
    hooks: dict[str, Hook] = field(default_factory=dict)  # run inside the call, before raising
    calls: list[Call] = field(default_factory=list)

    async def post_status(self, job: Job) -> dict[str, Any]:
        await self._record(Call("post_status", Seen.of(job)))
        return {"thread": f"thread-{job.id}"}

    async def update_status(self, job: Job) -> None:
        await self._record(Call("update_status", Seen.of(job)))

    async def post_result(self, job: Job, result: JobResult) -> None:
        await self._record(Call("post_result", Seen.of(job), result=result))

    async def post_error(
        self, job: Job, message: str, checkpoint: Checkpoint | None = None
    ) -> None:
        await self._record(Call("post_error", Seen.of(job), message=message))

    async def post_notice(self, channel: str, text: Text) -> None:
        await self._record(Call("post_notice", channel=channel, text=text))

    async def _record(self, call: Call) -> None:
        self.calls.append(call)  # first, so the list keeps the order the calls were made in
        if call.job is not None and self.store is not None:
            stored = await self.store.get(call.job.id)
            call.stored = stored.job_status if stored is not None else None
        if call.method in self.hooks:
            await self.hooks[call.method](call)
        if call.method in self.raise_on:
            raise AdapterBroke(f"{self.platform}.{call.method} broke")

    def methods(self) -> list[str]:
        return [call.method for call in self.calls]

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]


@contextlib.asynccontextmanager
async def conjure_with(
    sandbox_server: Any,
    database_url: str,
    tmp_path: Path,
    *adapters: RecordingAdapter,
    **extra: Any,
) -> AsyncIterator[Conjure]:
    """The running app (console attached, as always) with `adapters` attached as well."""
    async with running_conjure(sandbox_server, database_url, tmp_path / "out", **extra) as conjure:
        with contextlib.ExitStack() as stack:
            for adapter in adapters:
                adapter.store = conjure.runtime.store
                stack.enter_context(attached(conjure.service, adapter))
            yield conjure


async def command(
    conjure: Conjure,
    text: str = "a red fox in the snow",
    *,
    name: str = "imagine",
    platform: str = PLATFORM,
    user_id: str = "U1",
    workspace: str = "W1",
) -> Reply:
    """A slash command through the one command path, as every adapter sends it."""
    request = CommandRequest(
        platform=platform,
        workspace=workspace,
        channel="C1",
        user_id=user_id,
        command=name,
        text=text,
        destination={"channel": "C1"},
    )
    return await conjure.runtime.commands.handle(request)


async def started(conjure: Conjure, **options: Any) -> Job:
    reply = await command(conjure, **options)
    assert not reply.refused and reply.job is not None, reply.text
    return reply.job


async def stored(conjure: Conjure, job_id: str) -> Job:
    job = await conjure.runtime.store.get(job_id)
    assert job is not None
    return job


async def day_jobs(conjure: Conjure, user_id: str = "U1", platform: str = PLATFORM) -> int:
    """The user's jobs counted today (a job given back is not counted)."""
    subject = user_subject(platform, "W1", user_id)
    counter = await conjure.runtime.store.counter("user", subject, day_window(utcnow()).key)
    return counter.jobs if counter is not None else 0


async def month_money(conjure: Conjure, user_id: str = "U1") -> tuple[int, int]:
    """The user's (reserved, spent) micro-dollars this month."""
    subject = user_subject(PLATFORM, "W1", user_id)
    counter = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
    return (counter.reserved_micros, counter.spent_micros) if counter is not None else (0, 0)


async def ran_to_the_end(conjure: Conjure, sandbox_server: Any, job: Job) -> Prediction:
    """The job's prediction once the sandbox has finished running it, as Replicate reports it
    (waiting for the run, not for the retries of webhooks a test has the sandbox drop)."""
    assert job.prediction_id is not None
    await asyncio.wait_for(sandbox_server.sandbox.runs[job.prediction_id].done.wait(), 10)
    return await conjure.runtime.replicate.get_prediction(job.prediction_id)


def assert_never_backwards(calls: list[Call]) -> None:
    """Status and progress, as shown one call after another, only ever rise."""
    rank, progress = -1, -1
    for call in calls:
        assert call.job is not None
        assert call.job.status.rank >= rank, [(c.method, c.job and c.job.status) for c in calls]
        rank = call.job.status.rank
        if call.job.progress is not None:
            assert call.job.progress >= progress, [c.job and c.job.progress for c in calls]
            progress = call.job.progress


# ---- a job's life, as shown ------------------------------------------------------------------


async def test_a_succeeded_job_is_announced_updated_and_delivered_once_in_that_order(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    recorder = RecordingAdapter()
    async with conjure_with(sandbox_server, database_url, tmp_path, recorder) as conjure:
        job = await started(conjure)
        await settle(conjure, sandbox_server)

        methods = recorder.methods()
        assert methods[0] == "post_status" and methods.count("post_status") == 1, methods
        assert methods[-1] == "post_result" and methods.count("post_result") == 1, methods
        assert set(methods[1:-1]) <= {"update_status"}, methods  # no post_error, no notice
        assert methods.count("update_status") >= 2, methods  # starting, then processing/progress

        [announce] = recorder.called("post_status")
        assert announce.job is not None and announce.job.id == job.id
        assert announce.job.status is JobStatus.QUEUED and announce.job.prediction_id is None

        updates = recorder.called("update_status")
        for update in updates:
            assert update.job is not None and update.job.status in NON_TERMINAL, update
        assert_never_backwards(updates)
        assert any(u.job is not None and u.job.status is JobStatus.PROCESSING for u in updates)

        [result] = recorder.called("post_result")
        assert result.job is not None
        assert result.job.status is JobStatus.SUCCEEDED
        assert result.stored is JobStatus.SUCCEEDED  # recorded before it was shown
        assert result.job.duration_seconds is not None and result.job.duration_seconds > 0
        assert result.job.actual_micros == FLUX_SCHNELL_MICROS
        assert result.job.progress == 100
        assert result.job.destination == {"channel": "C1", "thread": f"thread-{job.id}"}
        assert result.result is not None and len(result.result.files) == 1
        assert result.result.files[0].content_type.startswith("image/")

        final = await stored(conjure, job.id)
        assert final.destination == {"channel": "C1", "thread": f"thread-{job.id}"}
        assert final.job_status is JobStatus.SUCCEEDED
        assert final.actual_micros == FLUX_SCHNELL_MICROS
        assert final.reservation == Reservation.SETTLED
        assert final.delivery == Delivery.DELIVERED and final.delivery_error is None
        assert final.delivery_attempts == 1
        assert await month_money(conjure) == (0, FLUX_SCHNELL_MICROS)
        assert conjure.output.getvalue() == ""  # nothing went to the console's platform


async def test_a_failed_prediction_is_one_error_and_gives_the_days_job_back(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.fail_next = 1
    recorder = RecordingAdapter()
    async with conjure_with(sandbox_server, sqlite_url, tmp_path, recorder) as conjure:
        job = await started(conjure)
        await settle(conjure, sandbox_server)

        methods = recorder.methods()
        assert methods[0] == "post_status" and methods[-1] == "post_error", methods
        assert methods.count("post_error") == 1 and "post_result" not in methods, methods
        for update in recorder.called("update_status"):
            assert update.job is not None and update.job.status in NON_TERMINAL
        [error] = recorder.called("post_error")
        assert error.job is not None and error.job.status is JobStatus.FAILED
        assert error.stored is JobStatus.FAILED
        assert error.message is not None and "safety checker flagged" in error.message

        final = await stored(conjure, job.id)
        assert final.job_status is JobStatus.FAILED
        assert final.actual_micros == 0
        assert final.reservation == Reservation.RELEASED
        assert final.delivery == Delivery.DELIVERED
        assert await day_jobs(conjure) == 0  # the day's job is given back
        assert await month_money(conjure) == (0, 0)


async def test_a_refused_create_is_an_error_before_any_prediction_and_charges_nothing(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.http.append(HttpFault(status=402, method="POST"))
    recorder = RecordingAdapter()
    async with conjure_with(sandbox_server, sqlite_url, tmp_path, recorder) as conjure:
        job = (await command(conjure)).job
        assert job is not None
        await settle(conjure, sandbox_server)

        assert recorder.methods() == ["post_status", "post_error"]
        [error] = recorder.called("post_error")
        assert error.job is not None and error.job.status is JobStatus.FAILED
        assert error.job.prediction_id is None
        assert error.message is not None and "out of credit" in error.message
        assert sandbox_server.sandbox.predictions == {}  # nothing ran at Replicate

        final = await stored(conjure, job.id)
        assert final.job_status is JobStatus.FAILED and final.prediction_id is None
        assert final.actual_micros == 0
        assert final.reservation == Reservation.RELEASED
        assert final.delivery == Delivery.NONE  # the person was told directly
        assert await day_jobs(conjure) == 0
        assert await month_money(conjure) == (0, 0)
        live = await conjure.runtime.store.counter(
            "user", user_subject(PLATFORM, "W1", "U1"), "live"
        )
        assert live is None or live.jobs == 0  # no longer in flight


async def test_duplicate_and_out_of_order_predictions_deliver_once_and_never_move_back(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    # The sandbox's own webhooks are all dropped: every update below is one the test applies.
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000
    recorder = RecordingAdapter()
    async with conjure_with(sandbox_server, database_url, tmp_path, recorder) as conjure:
        service = conjure.service
        job = await started(conjure)
        final = await ran_to_the_end(conjure, sandbox_server, job)
        assert final.status == "succeeded" and final.logs

        def running(status: str, steps: int) -> Prediction:
            logs = "".join(final.logs.splitlines(keepends=True)[: steps + 1])  # seed line first
            return final.model_copy(
                update={"status": status, "output": None, "metrics": None, "logs": logs}
            )

        half, quarter = running("processing", 2), running("processing", 1)
        await service.apply_prediction(job.id, half)
        await service.apply_prediction(job.id, running("starting", 0))  # late `start`
        await service.apply_prediction(job.id, quarter)  # an older `logs`
        await service.apply_prediction(job.id, half)  # the same `logs` twice
        # The terminal update three times at once, then stale copies after it.
        await asyncio.gather(*(service.apply_prediction(job.id, final) for _ in range(3)))
        await service.apply_prediction(job.id, half)
        await service.apply_prediction(job.id, running("starting", 0))
        await service.apply_prediction(job.id, final)
        await service.wait_idle()

        methods = recorder.methods()
        assert methods.count("post_result") == 1 and "post_error" not in methods, methods
        assert methods[-1] == "post_result", methods  # nothing is shown after the result
        updates = recorder.called("update_status")
        assert_never_backwards(updates)
        assert [u.job.status for u in updates if u.job] == [
            JobStatus.STARTING,  # the create's own answer
            JobStatus.PROCESSING,  # `half`: the stale and duplicate copies showed nothing
        ]

        after = await stored(conjure, job.id)
        assert after.job_status is JobStatus.SUCCEEDED and after.progress == 100
        assert after.actual_micros == FLUX_SCHNELL_MICROS
        assert after.delivery == Delivery.DELIVERED and after.delivery_attempts == 1
        assert await month_money(conjure) == (0, FLUX_SCHNELL_MICROS)  # charged once


async def test_a_progress_update_overtaken_by_the_result_is_not_shown_after_it(
    sandbox_server, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two webhooks of one prediction handled at once (two requests, or two instances): the
    `logs` one has written its progress, the `completed` one finishes and delivers meanwhile."""
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000
    recorder = RecordingAdapter()
    async with conjure_with(sandbox_server, sqlite_url, tmp_path, recorder) as conjure:
        service, store = conjure.service, conjure.runtime.store
        job = await started(conjure)
        final = await ran_to_the_end(conjure, sandbox_server, job)
        assert final.logs
        logs = "".join(final.logs.splitlines(keepends=True)[:3])
        progress = final.model_copy(update={"status": "processing", "output": None, "logs": logs})

        written, overtaken = asyncio.Event(), asyncio.Event()
        record_progress = store.record_progress

        async def slow_record_progress(job_id: str, value: int) -> Job | None:
            moved = await record_progress(job_id, value)
            written.set()
            await overtaken.wait()
            return moved

        monkeypatch.setattr(store, "record_progress", slow_record_progress)
        logs_webhook = asyncio.create_task(service.apply_prediction(job.id, progress))
        await written.wait()
        await service.apply_prediction(job.id, final)
        await service.wait_idle()
        assert recorder.methods()[-1] == "post_result"
        overtaken.set()
        await logs_webhook

        methods = recorder.methods()
        assert methods[-1] == "post_result", methods


async def test_a_delayed_edit_waits_while_its_workspace_is_busy_and_shows_once_it_is_not(
    sandbox_server, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 60 edits a minute, a workspace following 60 jobs edits each once a minute: a job's
    news waits; once the others end, it is shown at the next look (SHOW_RECHECK), not a minute
    later."""
    monkeypatch.setattr("bot.jobs.SHOW_RECHECK", 0.2)
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000
    recorder = RecordingAdapter()
    async with conjure_with(
        sandbox_server, sqlite_url, tmp_path, recorder, conjure_status_edits_per_minute=60
    ) as conjure:
        service = conjure.service
        job = await started(conjure)
        final = await ran_to_the_end(conjure, sandbox_server, job)
        others = [f"other-{number}" for number in range(59)]
        for other in others:
            service.followed.announced(other, (PLATFORM, "W1"))
        await asyncio.sleep(1.1)  # past the one job's own interval (a second), not 60 jobs'
        shown = len(recorder.calls)
        running = final.model_copy(update={"status": "processing", "output": None, "logs": ""})
        await service.apply_prediction(job.id, running)
        await asyncio.sleep(0.5)
        assert len(recorder.calls) == shown  # not due: 60 jobs share a minute's edits
        # Waiting in the set one timer looks over, not on a timer of its own (memory: a busy
        # workspace's thousands of jobs).
        assert job.id in service._shows_pending and job.id not in service._shows_later
        for other in others:
            service.followed.forget(other)
        for _ in range(40):
            if len(recorder.calls) > shown:
                break
            await asyncio.sleep(0.05)
        [call] = recorder.calls[shown:]
        assert call.method == "update_status" and call.job is not None
        assert call.job.status is JobStatus.PROCESSING


async def test_the_workers_of_one_serve_share_a_workspaces_edits(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Two workers at 60 edits a minute: each edits its own jobs at 30 a minute, so the
    workspace gets 60 in all (a job alone is shown every 2 s, not every 1 s)."""
    async with conjure_with(
        sandbox_server,
        sqlite_url,
        tmp_path,
        conjure_status_edits_per_minute=60,
        conjure_workers=2,
    ) as conjure:
        followed = conjure.service.followed
        followed.announced("alone", (PLATFORM, "W1"))
        assert followed.interval("alone") == 2.0


# ---- an adapter that raises ------------------------------------------------------------------


async def test_a_failed_announcement_does_not_stop_the_job_or_its_result(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    recorder = RecordingAdapter(raise_on={"post_status"})
    async with conjure_with(sandbox_server, sqlite_url, tmp_path, recorder) as conjure:
        job = await started(conjure)
        await settle(conjure, sandbox_server)

        methods = recorder.methods()
        assert methods[0] == "post_status" and methods.count("post_status") == 1
        assert methods.count("post_result") == 1 and methods[-1] == "post_result", methods
        [result] = recorder.called("post_result")
        assert result.job is not None and result.job.status is JobStatus.SUCCEEDED
        assert result.job.destination == {"channel": "C1"}  # no thread was announced

        final = await stored(conjure, job.id)
        assert final.job_status is JobStatus.SUCCEEDED
        assert final.actual_micros == FLUX_SCHNELL_MICROS
        assert final.delivery == Delivery.DELIVERED and final.delivery_error is None


async def test_a_failed_status_update_is_ignored(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    recorder = RecordingAdapter(raise_on={"update_status"})
    async with conjure_with(sandbox_server, sqlite_url, tmp_path, recorder) as conjure:
        job = await started(conjure)
        await settle(conjure, sandbox_server)

        methods = recorder.methods()
        assert methods.count("update_status") >= 2, methods  # each failure was shrugged off
        assert methods.count("post_result") == 1 and methods[-1] == "post_result", methods
        final = await stored(conjure, job.id)
        assert final.job_status is JobStatus.SUCCEEDED and final.progress == 100
        assert final.delivery == Delivery.DELIVERED and final.delivery_error is None


async def test_a_failed_result_post_is_recorded_as_a_failed_delivery_and_not_retried(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    recorder = RecordingAdapter(raise_on={"post_result"})
    async with conjure_with(sandbox_server, database_url, tmp_path, recorder) as conjure:
        job = await started(conjure)
        await settle(conjure, sandbox_server)

        final = await stored(conjure, job.id)
        assert final.job_status is JobStatus.SUCCEEDED  # the job itself did succeed ...
        assert final.actual_micros == FLUX_SCHNELL_MICROS  # ... and is charged
        assert final.delivery == Delivery.FAILED
        assert final.delivery_error == "AdapterBroke"
        assert final.delivery_attempts == 1 and final.delivered_at is not None

        # Neither a restart's recovery nor the sweeper posts it again.
        await conjure.service.recover()
        await conjure.service.wait_idle()
        assert recorder.methods().count("post_result") == 1
        # The person is told once that it could not be posted (its status would say running).
        assert recorder.methods().count("post_error") == 1
        again = await stored(conjure, job.id)
        assert again.delivery == Delivery.FAILED and again.delivery_attempts == 1


# ---- budget alerts ---------------------------------------------------------------------------


async def test_budget_alerts_go_once_to_the_platforms_own_channel_with_a_mention(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    slack, discord = RecordingAdapter("slack"), RecordingAdapter("discord")
    async with conjure_with(
        sandbox_server,
        sqlite_url,
        tmp_path,
        slack,
        discord,
        conjure_user_usd_per_month=0.006,  # two flux-schnell images
        conjure_alert_channels="slack:C0ALERTS,discord:D0ALERTS",
    ) as conjure:
        for _ in range(2):
            await started(conjure, platform="slack", user_id="U0ALICE")
            await settle(conjure, sandbox_server)
        refused = await command(conjure, platform="slack", user_id="U0ALICE")
        assert refused.refused and refused.job is None
        await conjure.service.send_alerts()  # again: nothing is sent twice
        await conjure.service.recover()
        await conjure.service.wait_idle()

        notices = slack.called("post_notice")
        assert [n.channel for n in notices] == ["C0ALERTS", "C0ALERTS"], slack.methods()
        texts = [n.text for n in notices]
        for text in texts:
            assert isinstance(text, Text)
            assert Mention("U0ALICE") in text.parts, text
        plain = sorted(text.plain() for text in texts if text is not None)
        assert "has reached 100%" in plain[0] and "$0.006 of $0.006" in plain[0]
        assert "has used 80%" in plain[1]
        assert discord.calls == []  # another platform's channel hears nothing
        assert "Budget alert" not in conjure.output.getvalue()  # nor does the console


# ---- attaching and detaching adapters --------------------------------------------------------


async def test_only_a_chat_adapter_can_be_added(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    class LooksLikeOne:  # every method, but not a ChatAdapter
        platform = "lookalike"

        async def post_status(self, job: Job) -> dict[str, Any]:
            return {}

        async def update_status(self, job: Job) -> None: ...
        async def post_result(self, job: Job, result: JobResult) -> None: ...
        async def post_error(
            self, job: Job, message: str, checkpoint: Checkpoint | None = None
        ) -> None: ...
        async def post_notice(self, channel: str, text: Text) -> None: ...

    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        service = conjure.service
        with pytest.raises(TypeError, match="LooksLikeOne"):
            service.add_adapter(LooksLikeOne())  # type: ignore[arg-type]
        assert "lookalike" not in service.adapters
        with pytest.raises(TypeError):
            service.adapters["lookalike"] = RecordingAdapter("lookalike")  # type: ignore[index]
        assert sorted(service.adapters) == ["console"]


async def test_a_removed_platforms_result_waits_for_an_adapter_and_recover(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    first = RecordingAdapter()
    async with conjure_with(sandbox_server, sqlite_url, tmp_path, first) as conjure:
        service = conjure.service

        async def detach(_: Call) -> None:
            service.remove_adapter(PLATFORM)  # before the prediction even exists

        first.hooks["post_status"] = detach
        job = await started(conjure)
        await settle(conjure, sandbox_server)

        assert first.methods() == ["post_status"]
        assert PLATFORM not in service.adapters
        waiting = await stored(conjure, job.id)
        assert waiting.job_status is JobStatus.SUCCEEDED
        assert waiting.actual_micros == FLUX_SCHNELL_MICROS  # charged, whoever delivers it
        assert waiting.delivery == Delivery.PENDING and waiting.delivery_attempts == 0

        second = RecordingAdapter(store=conjure.runtime.store)
        with attached(service, second):
            await service.wait_idle()
            assert second.calls == []  # attaching alone delivers nothing
            await service.recover()
            await service.wait_idle()
        assert second.methods() == ["post_result"]
        [result] = second.called("post_result")
        assert result.job is not None and result.job.status is JobStatus.SUCCEEDED
        assert result.job.destination == {"channel": "C1", "thread": f"thread-{job.id}"}
        delivered = await stored(conjure, job.id)
        assert delivered.delivery == Delivery.DELIVERED and delivered.delivery_attempts == 1
        assert first.methods() == ["post_status"]
