"""What an instance keeps per answer being written stays bounded: with several instances, the
one that streamed an answer may never see its delivery (another instance's), which is where it
used to forget it."""

from __future__ import annotations

from adapters.discord.streaming import LiveAnswers
from bot.recent import KEPT, Recent


def test_the_oldest_entry_goes_and_setting_one_makes_it_the_newest() -> None:
    kept: Recent[str, int] = Recent(most=2)
    kept["a"], kept["b"] = 1, 2
    kept["a"] = 3  # now the newest
    kept["c"] = 4
    assert dict(kept) == {"a": 3, "c": 4}


def test_discord_keeps_the_answers_of_at_most_kept_jobs_it_never_delivered() -> None:
    answers = LiveAnswers()
    for n in range(KEPT + 500):  # each delivered by another instance: never popped here
        answers.set(f"job-{n}", "an answer so far " * 20)
        answers.note_status(f"job-{n}", "⏳ running")
    assert not answers.live("job-0")
    assert answers.live(f"job-{KEPT + 499}")
    assert len(answers._texts) == len(answers._statuses) == KEPT
