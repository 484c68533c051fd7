"""bot.updates: which updates of a running job are news (the rest cost no database work)."""

from __future__ import annotations

import pytest

from bot.replicate.client import Prediction
from bot.updates import FollowedJobs
from storage.models import JobStatus


def update(status: str, logs: str = "", prediction_id: str = "p1") -> Prediction:
    return Prediction.model_validate({"id": prediction_id, "status": status, "logs": logs})


def followed(progress: int | None = 10) -> FollowedJobs:
    jobs = FollowedJobs(show_every=2.0)
    jobs.recorded("j1", "p1", JobStatus.PROCESSING.rank, progress)
    jobs.shown("j1", now=100.0)
    return jobs


def test_a_job_not_followed_here_is_always_read() -> None:
    assert not FollowedJobs(2.0).adds_nothing("j1", update("processing"))


def test_the_same_status_and_no_higher_progress_add_nothing() -> None:
    jobs = followed()
    assert jobs.adds_nothing("j1", update("processing"))
    assert jobs.adds_nothing("j1", update("processing", " 10%|█ | 1/10 ["))
    assert jobs.adds_nothing("j1", update("starting"))


def test_a_forward_status_an_outcome_or_another_prediction_is_news() -> None:
    jobs = FollowedJobs(2.0)
    jobs.recorded("j1", "p1", JobStatus.STARTING.rank, None)
    assert not jobs.adds_nothing("j1", update("processing"))
    assert not jobs.adds_nothing("j1", update("succeeded"))
    assert not jobs.adds_nothing("j1", update("failed"))
    assert not jobs.adds_nothing("j1", update("starting", prediction_id="p2"))


def test_a_higher_progress_is_news_only_when_due_to_be_shown(monkeypatch) -> None:
    jobs = followed()
    clock = iter([101.0, 102.5])
    monkeypatch.setattr("bot.updates.time.monotonic", lambda: next(clock))
    higher = update("processing", " 50%|█████ | 5/10 [")
    assert jobs.adds_nothing("j1", higher)  # 1 s after the last show: not yet
    assert not jobs.adds_nothing("j1", higher)  # 2.5 s after: shown, so written


def test_what_is_recorded_only_rises_and_a_finished_job_is_forgotten() -> None:
    jobs = followed(progress=50)
    jobs.recorded("j1", "p1", JobStatus.STARTING.rank, 20)  # an older copy, read late
    assert jobs.adds_nothing("j1", update("processing", " 40%|████ | 4/10 ["))
    jobs.forget("j1")
    assert not jobs.adds_nothing("j1", update("processing"))


def test_the_oldest_job_is_dropped_past_the_limit() -> None:
    jobs = FollowedJobs(2.0, remembered=2)
    for job_id in ("a", "b", "c"):
        jobs.recorded(job_id, "p1", JobStatus.PROCESSING.rank, None)
    assert len(jobs) == 2
    assert not jobs.adds_nothing("a", update("processing"))
    assert jobs.adds_nothing("c", update("processing"))


def test_a_progress_held_back_is_kept_for_its_delayed_showing(monkeypatch) -> None:
    jobs = followed(progress=10)
    monkeypatch.setattr("bot.updates.time.monotonic", lambda: 101.0)
    assert jobs.adds_nothing("j1", update("processing", " 50%|█████ | 5/10 ["))
    assert jobs.adds_nothing("j1", update("processing", " 40%|████ | 4/10 ["))
    assert jobs.held_back("j1") == 50
    assert jobs.next_show_in("j1") == 1.0
    jobs.recorded("j1", "p1", JobStatus.PROCESSING.rank, 50)  # written when shown
    assert jobs.held_back("j1") is None


def test_the_first_edit_waits_a_moment_after_the_status_message() -> None:
    jobs = FollowedJobs(show_every=2.0)
    jobs.announced("j1", now=100.0)
    assert not jobs.show_due("j1", now=100.1)
    assert jobs.next_show_in("j1", now=100.1) == pytest.approx(0.2)
    assert jobs.show_due("j1", now=100.3)
    jobs.recorded("j1", "p1", JobStatus.STARTING.rank, None)  # its prediction, once created
    assert jobs.adds_nothing("j1", update("starting"))


def test_start_before_the_create_answers_adds_nothing_but_anything_further_is_read() -> None:
    jobs = FollowedJobs(show_every=2.0)
    jobs.announced("j1", now=100.0)
    assert jobs.adds_nothing("j1", update("starting", prediction_id="p9"))
    assert not jobs.adds_nothing("j1", update("processing", prediction_id="p9"))
    assert not jobs.adds_nothing("j1", update("succeeded", prediction_id="p9"))


TEAM = ("slack", "T1")


def test_one_job_is_shown_every_interval_as_before() -> None:
    jobs = FollowedJobs(show_every=2.0, edits_per_minute=40)
    jobs.announced("j1", TEAM, now=100.0)
    assert jobs.interval("j1") == 2.0
    assert jobs.next_show_in("j1", now=100.0) == pytest.approx(0.3)


def test_a_workspace_running_many_jobs_keeps_its_edits_within_the_budget() -> None:
    """40 edits a minute shared by 100 jobs: each is shown every 150 s, so the workspace makes
    40 edits a minute however many jobs it runs (Slack's chat.update allows about 50)."""
    jobs = FollowedJobs(show_every=2.0, edits_per_minute=40)
    for number in range(100):
        jobs.announced(f"j{number}", TEAM, now=100.0)
    jobs.announced("elsewhere", ("slack", "T2"), now=100.0)
    assert jobs.interval("j0") == pytest.approx(150.0)
    assert not jobs.show_due("j0", now=200.0)
    assert jobs.show_due("j0", now=100.0 - 2.0 + 0.3 + 150.0)
    assert jobs.interval("elsewhere") == 2.0  # another workspace's budget is its own
    for number in range(1, 100):
        jobs.forget(f"j{number}")  # their outcomes came
    assert jobs.interval("j0") == 2.0


def test_a_job_whose_workspace_comes_later_joins_its_budget_once() -> None:
    jobs = FollowedJobs(show_every=2.0, edits_per_minute=60)
    jobs.recorded("j1", "p1", JobStatus.STARTING.rank, None)  # followed, workspace unknown
    jobs.announced("j2", TEAM, now=100.0)
    assert jobs.interval("j1") == 2.0
    for _ in range(2):
        jobs.recorded("j1", "p1", JobStatus.PROCESSING.rank, None, TEAM)
    jobs.recorded("j3", "p3", JobStatus.PROCESSING.rank, None, TEAM)
    assert jobs.interval("j1") == 3.0  # 3 jobs at 1 edit a second
    jobs.recorded("j3", "p4", JobStatus.STARTING.rank, None)  # a new prediction: same job
    assert jobs.interval("j1") == 3.0


def test_dropping_the_oldest_job_gives_back_its_share() -> None:
    jobs = FollowedJobs(show_every=1.0, remembered=2, edits_per_minute=60)
    for job_id in ("a", "b", "c"):
        jobs.announced(job_id, TEAM, now=100.0)
    assert len(jobs) == 2
    assert jobs.interval("c") == 2.0


def test_progress_is_asked_for_only_where_it_could_be_shown_once_a_minute() -> None:
    """At 40 edits a minute, 40 jobs running in a workspace are each shown every 60 s; a 41st
    would be shown less often, so its progress is not asked for. Another workspace's is."""
    jobs = FollowedJobs(show_every=2.0, edits_per_minute=40)
    assert jobs.progress_worth_asking(TEAM)
    for number in range(40):
        jobs.announced(f"j{number}", TEAM, now=100.0)
    assert jobs.progress_worth_asking(TEAM)
    jobs.announced("j40", TEAM, now=100.0)
    assert not jobs.progress_worth_asking(TEAM)
    assert jobs.progress_worth_asking(("slack", "T2"))
    jobs.forget("j0")
    assert jobs.progress_worth_asking(TEAM)
    slow = FollowedJobs(show_every=90.0)  # a progress interval set above a minute: asked
    slow.announced("j1", TEAM, now=100.0)
    assert slow.progress_worth_asking(TEAM)


def test_a_status_is_asked_for_only_where_it_could_be_shown_before_the_job_ends() -> None:
    """A job's first edit comes FIRST_EDIT_AFTER its status message in a quiet workspace, an
    interval later in a busy one (at 40 edits a minute, 20 jobs: 30 s); a job expected to end
    before then is asked for its outcome only."""
    jobs = FollowedJobs(show_every=2.0, edits_per_minute=40)
    jobs.announced("j0", TEAM, now=100.0)
    assert jobs.status_worth_asking(TEAM, runs_for=30.0)  # first edit after 0.3 s
    assert not jobs.status_worth_asking(TEAM, runs_for=0.3)
    for number in range(1, 20):
        jobs.announced(f"j{number}", TEAM, now=100.0)
    assert jobs.status_worth_asking(TEAM, runs_for=30.0)  # 30 - 2 + 0.3 = 28.3 s
    jobs.announced("j20", TEAM, now=100.0)
    assert jobs.status_worth_asking(TEAM, runs_for=30.0)  # 31.5 - 2 + 0.3 = 29.8 s
    jobs.announced("j21", TEAM, now=100.0)
    assert not jobs.status_worth_asking(TEAM, runs_for=30.0)  # 33 - 2 + 0.3 = 31.3 s
    assert jobs.status_worth_asking(TEAM, runs_for=540.0)  # a video: minutes
    assert jobs.status_worth_asking(("slack", "T2"), runs_for=30.0)
    jobs.forget("j0")
    assert jobs.status_worth_asking(TEAM, runs_for=30.0)
