"""Progress reaches the thread parent, but a burst of webhooks edits it at most every 2 s."""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from bot.config import Settings
from bot.quotas.windows import day_window, month_window
from storage.engine import statement_engines
from storage.jobs import user_subject
from storage.models import utcnow
from tests.fakes.slack_api import TEAM_ID
from tests.harness import all_jobs
from tests.slack_harness import running_slack_conjure

INTERVAL = 2.0
BUDGET = "conjure_status_edits_per_minute"
# The throttle stamps an edit before its call; its arrival at the fake can come later, by more
# than 0.1 s when the suite loads the machine (one run: two edits 1.85 s apart on arrival).
# Unthrottled, this run's edits would come every 0.5 s, so the check still tells.
JITTER = 0.25


@pytest.mark.parametrize("edits_per_minute", [1e6, Settings.model_fields[BUDGET].default])
async def test_a_burst_of_progress_webhooks_edits_the_parent_at_most_every_two_seconds(
    sandbox_server, sqlite_url: str, edits_per_minute: float
) -> None:
    """The same with the workspace's edit budget at its default: one job is within it."""
    # At speed 1 flux-dev runs 28 steps over ~3 s: a logs webhook every 0.5 s.
    sandbox_server.sandbox.config.speed = 1.0
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=INTERVAL, **{BUDGET: edits_per_minute}
    ) as conjure:
        await conjure.slash("/imagine", "a slow lighthouse --model flux-dev")
        await conjure.settle(sandbox_server)

        progress_webhooks = [
            d
            for d in sandbox_server.sandbox.webhook_deliveries
            if d.event == "logs" and d.status == "processing"
        ]
        updates = conjure.fake.calls_to("chat.update")
        running = [call for call in updates if "🎨 running" in call.args["text"]]
        before_done = [call for call in updates if "✅ done" not in call.args["text"]]

        assert len(progress_webhooks) >= 4
        assert running, "the person saw progress"
        assert any("%" in call.args["text"] for call in running)
        assert len(before_done) < len(progress_webhooks)
        for earlier, later in itertools.pairwise(before_done):
            assert later.at - earlier.at >= INTERVAL - JITTER
        # The terminal update is never throttled: the parent ends as done.
        assert "✅ done" in updates[-1].args["text"]


async def test_many_jobs_in_one_workspace_share_its_edit_budget_and_all_end_done(
    sandbox_server, sqlite_url: str
) -> None:
    """Six slow jobs at once, each sending a progress webhook every 0.5 s: unbudgeted, each
    would be edited every 0.5 s (some 30 edits); at 60 edits a minute for the workspace, the
    progress edits stay within one a second, and every job still ends as done, once."""
    sandbox_server.sandbox.config.speed = 1.0
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=0.5, **{BUDGET: 60}
    ) as conjure:
        started = time.monotonic()
        for number in range(6):
            await conjure.slash(
                "/imagine", f"a slow lighthouse {number} --model flux-dev", user_id=f"U{number}"
            )
        await conjure.settle(sandbox_server)
        elapsed = time.monotonic() - started

        progress_webhooks = [
            d
            for d in sandbox_server.sandbox.webhook_deliveries
            if d.event == "logs" and d.status == "processing"
        ]
        updates = conjure.fake.calls_to("chat.update")
        progress_edits = [call for call in updates if "✅ done" not in call.args["text"]]
        assert len(progress_webhooks) >= 6 * 4
        assert len(progress_edits) <= elapsed * 60 / 60 + 1
        done = [call for call in updates if "✅ done" in call.args["text"]]
        assert len(done) == 6 and len({(c.args["channel"], c.args["ts"]) for c in done}) == 6
        assert len(conjure.fake.shared_uploads()) == 6


async def test_a_workspace_too_busy_to_show_progress_is_not_sent_it(
    sandbox_server, sqlite_url: str
) -> None:
    """With 40 jobs running in a workspace at 40 edits a minute, a new job could be shown once a
    minute at best, its first edit about a minute after its status message. A quick image (a
    model expected to end within 30 s) is asked for its outcome only: no `start`, no `logs`;
    a video (expected to take minutes) for its start and outcome, not its progress. Both end
    done, shared once, with Replicate's start recorded. Once the workspace is quiet, all is
    asked for again."""
    sandbox_server.sandbox.config.speed = 1.0
    async with running_slack_conjure(
        sandbox_server,
        sqlite_url,
        progress_interval=INTERVAL,
        **{BUDGET: 40, "conjure_confirm_above_usd": "0"},  # the video without a price question
    ) as conjure:
        followed = conjure.runtime.service.followed
        busy = [f"busy{number}" for number in range(40)]
        for job_id in busy:  # jobs this process follows in the same workspace
            followed.announced(job_id, ("slack", TEAM_ID))
        await conjure.slash("/imagine", "a quiet harbour")
        await conjure.settle(sandbox_server)
        await conjure.slash("/video", "a harbour at dawn")
        await conjure.settle(sandbox_server)
        for job_id in busy:
            followed.forget(job_id)
        await conjure.slash("/imagine", "a second harbour")
        await conjure.settle(sandbox_server)

        predictions = sorted(
            sandbox_server.sandbox.predictions.values(), key=lambda p: p["created_at"]
        )
        assert [p["webhook_events_filter"] for p in predictions] == [
            ["completed"],
            ["start", "completed"],
            ["start", "logs", "completed"],
        ]
        deliveries = sandbox_server.sandbox.webhook_deliveries
        events = [(json.loads(d.body)["id"], d.event) for d in deliveries]
        assert [e for i, e in events if i == predictions[0]["id"]] == ["completed"]
        assert (predictions[1]["id"], "start") in events
        assert (predictions[1]["id"], "logs") not in events
        assert (predictions[2]["id"], "logs") in events
        done = [c for c in conjure.fake.calls_to("chat.update") if "✅ done" in c.args["text"]]
        assert len(done) == 3 and len(conjure.fake.shared_uploads()) == 3
        for prediction in predictions:
            job = await conjure.runtime.store.find_by_prediction(prediction["id"])
            assert job is not None and job.started_at is not None and job.completed_at is not None
            assert job.started_at <= job.completed_at


async def test_an_outcome_only_job_whose_outcome_webhook_is_lost_is_read_by_the_sweeper(
    sandbox_server, sqlite_url: str
) -> None:
    """A job asked for its outcome only has no webhook before it: if that one is lost, nothing
    else shows it ended. The sweeper reads it like any silent job, and it is delivered and
    charged once, ending done with Replicate's start time."""
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=INTERVAL, **{BUDGET: 40}
    ) as conjure:
        followed = conjure.runtime.service.followed
        for number in range(40):
            followed.announced(f"busy{number}", ("slack", TEAM_ID))
        sandbox_server.sandbox.faults.drop_webhooks = 100  # every attempt
        await conjure.slash("/imagine", "a harbour nobody heard from")
        await conjure.settle(sandbox_server)

        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["webhook_events_filter"] == ["completed"]
        assert prediction["status"] == "succeeded"
        attempts = sandbox_server.sandbox.webhook_deliveries
        assert attempts and all(a.event == "completed" and a.dropped for a in attempts)
        assert conjure.fake.shared_uploads() == []
        job = await conjure.runtime.store.find_by_prediction(prediction["id"])
        assert job is not None and job.completed_at is None

        await conjure.runtime.service.recover(silent_for=timedelta(0))  # the sweeper's pass
        await conjure.settle(sandbox_server)
        await conjure.runtime.service.recover(silent_for=timedelta(0))  # a second pass: no-op
        await conjure.settle(sandbox_server)

        done = [c for c in conjure.fake.calls_to("chat.update") if "✅ done" in c.args["text"]]
        assert len(done) == 1 and len(conjure.fake.shared_uploads()) == 1
        job = await conjure.runtime.store.find_by_prediction(prediction["id"])
        assert job is not None and job.started_at is not None and job.completed_at is not None
        assert job.actual_micros is not None and job.actual_micros > 0
        subject = user_subject("slack", TEAM_ID, job.user_id)
        jobs = await conjure.runtime.store.counter("user", subject, day_window(utcnow()).key)
        money = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
        assert jobs is not None and jobs.jobs == 1
        assert money is not None and money.reserved_micros == 0
        assert money.spent_micros == job.actual_micros  # charged once


async def test_progress_webhooks_that_add_nothing_are_answered_without_the_database(
    sandbox_server, sqlite_url: str
) -> None:
    """Of a run's many `logs` webhooks, only those that raise the status or bring a progress
    due to be shown are read and written; the rest are answered at once (bot.updates)."""
    sandbox_server.sandbox.config.speed = 1.0
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=INTERVAL
    ) as conjure:
        statements: list[str] = []

        def note(_conn, _cursor, statement: str, *_: object) -> None:
            statements.append(statement)

        for engine in statement_engines(conjure.runtime.engine):
            event.listen(engine, "before_cursor_execute", note)
        await conjure.slash("/imagine", "a slow lighthouse --model flux-dev")
        await conjure.settle(sandbox_server)

        webhooks = sandbox_server.sandbox.webhook_deliveries
        unchanged = conjure.runtime.metrics.webhooks.labels("unchanged")._value.get()
        progress_writes = [s for s in statements if s.startswith("UPDATE job SET progress")]
        shown = [
            call
            for call in conjure.fake.calls_to("chat.update")
            if "🎨 running" in call.args["text"] and "%" in call.args["text"]
        ]
        assert len(webhooks) >= 6 and unchanged >= 3
        assert len(progress_writes) <= len(shown)  # a percentage is written only to be shown
        reads = [s for s in statements if s.startswith("SELECT job.")]
        edits = [c for c in conjure.fake.calls_to("chat.update") if "✅ done" not in c.args["text"]]
        # Read: each webhook that was news, and each delayed edit (it shows the latest row).
        assert len(reads) <= len(webhooks) - unchanged + len(edits)
        # What the person sees is unchanged: progress, then the image, once.
        assert shown
        assert "✅ done" in conjure.fake.calls_to("chat.update")[-1].args["text"]
        assert len(conjure.fake.shared_uploads()) == 1


async def test_a_delayed_edit_with_the_database_away_is_skipped_and_the_job_still_delivered(
    sandbox_server,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The edit that shows a held-back status later reads the job; if the database fails right
    then, that edit is skipped with a warning (no failed background task), and the result
    still arrives once."""
    sandbox_server.sandbox.config.speed = 1.0
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=INTERVAL
    ) as conjure:
        await conjure.slash("/imagine", "a slow lighthouse --model flux-dev")
        [job] = await all_jobs(conjure.runtime.store)  # type: ignore[union-attr]

        async def away(_: str) -> None:
            raise OperationalError("SELECT", {}, Exception("database is locked"))

        with monkeypatch.context() as patched:
            patched.setattr(conjure.runtime.store, "get", away)
            await conjure.service._show_latest(job.id)
        assert "its status was not shown (database unavailable)" in caplog.text
        await conjure.settle(sandbox_server)
        assert len(conjure.fake.shared_uploads()) == 1
        assert "✅ done" in conjure.fake.calls_to("chat.update")[-1].args["text"]
    assert "background job task failed" not in caplog.text
