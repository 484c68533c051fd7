"""Which of a running job's updates are news, so that the rest cost no database work.

Replicate sends several webhooks per prediction: `start`, `logs` as often as every 500 ms (each
carrying all the logs so far), then `completed`. Only three things in them change what Conjure
records or shows: a status that moves forward, a progress percentage that rises when it is due
to be shown (at most once per progress interval), and the outcome. `FollowedJobs` remembers,
for each job this process follows, its prediction, the status and progress last recorded and
when they were last shown; an update that adds nothing is answered at once, without a read or
a write.

What it remembers was read from or written to the database, and status and progress only rise,
so it never knows more than the database does. Another process may know more (it recorded a
later update); this one's update then becomes a conditional UPDATE that matches nothing, as
before. A progress rise that is not yet due to be shown is not written either: the percentage
is only ever read to be shown; it is kept here, and written and shown once the interval has
passed (`JobService._show_later`), unless the outcome comes first.

The interval grows with the jobs followed in a workspace, so that a workspace's status edits
stay within `edits_per_minute` however many jobs it runs at once: each of N jobs is shown at
most every N / edits_per_minute minutes (and never more often than `show_every`). Slack allows
about 50 `chat.update` a minute per workspace (Tier 3); beyond that it answers 429, and a
result's own edit would wait behind a queue of progress edits nobody can read. In the bench,
a backlog of 500 commands made 4.8 edits per job, each a Web API call and most of them a read
of the job; now it makes one, the outcome's. That edit is not counted here: it is always made.
Where a new job's progress would be shown less than once a minute, it is not asked for at all
(`progress_worth_asking`): its prediction is created without `logs` webhooks. Where even its
first edit would come after the job is expected to end (`status_worth_asking`: three times its
model's typical run, or the deadline Replicate stops it at), it is asked for its outcome only:
its `start` webhook could only ever be replaced by the result before anyone saw it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from bot.recent import Recent
from bot.replicate.client import Prediction
from bot.replicate.progress import progress_from_logs
from storage.models import Job, JobStatus

# Seconds after a job's status message is posted before its first edit: most of a quick job's
# edits ("starting", "running") would be replaced by its outcome before anyone read them.
FIRST_EDIT_AFTER = 0.3
# Jobs remembered at most: a job finished by another process is never forgotten here by its
# outcome, so the oldest are dropped past this (forgetting only costs a read later).
REMEMBERED = 50_000
# Status edits a workspace gets a minute, across its running jobs (their outcomes not counted):
# below Slack's Tier 3 limit for chat.update (about 50), leaving room for the outcomes' edits.
EDITS_PER_MINUTE = 40.0
# A job is not sent its progress (Replicate's `logs` webhooks) where its workspace follows so
# many jobs that the job's progress could be shown less often than this: at 40 edits a minute,
# beyond 40 jobs running at once. Those webhooks would be verified, read and dropped, four or
# more per job, for a progress nobody sees.
PROGRESS_WORTH_ASKING = 60.0  # seconds between two showings

Workspace = tuple[str, str]  # (platform, workspace): whose edits share one budget


def workspace_of(job: Job) -> Workspace:
    """The budget `job`'s status edits come out of."""
    return (job.platform, job.workspace)


@dataclass(slots=True)
class _Followed:
    prediction_id: str | None  # None: announced, its prediction not yet known
    rank: int
    progress: int | None
    workspace: Workspace | None = None  # None: not known here (no edit budget shared)
    shown_at: float | None = None
    held_back: int | None = None  # a higher progress seen while not due to be shown


class FollowedJobs:
    """Per running job: what is recorded of it, and when it was last shown (see module doc)."""

    def __init__(
        self,
        show_every: float,
        remembered: int = REMEMBERED,
        edits_per_minute: float = EDITS_PER_MINUTE,
    ) -> None:
        self.show_every = show_every
        self._remembered = remembered
        self._edits_per_second = edits_per_minute / 60
        self._jobs: dict[str, _Followed] = {}
        self._in_workspace: Counter[Workspace] = Counter()
        # Jobs whose outcome this process recorded, oldest first: a copy of one read before
        # (a create's answer coming after its `completed` webhook) must not follow it again.
        self._ended: Recent[str, None] = Recent(remembered)

    def __len__(self) -> int:
        return len(self._jobs)

    def recorded(
        self,
        job_id: str,
        prediction_id: str,
        rank: int,
        progress: int | None,
        workspace: Workspace | None = None,
    ) -> None:
        """What the database now holds of a running job (from a read or a write)."""
        if job_id in self._ended:
            return
        followed = self._jobs.get(job_id)
        if followed is not None and followed.prediction_id is None:
            followed.prediction_id = prediction_id
        if followed is None or followed.prediction_id != prediction_id:
            known = followed.workspace if followed is not None else None
            self._add(job_id, _Followed(prediction_id, rank, progress, workspace or known))
            return
        if followed.workspace is None and workspace is not None:
            followed.workspace = workspace
            self._in_workspace[workspace] += 1
        followed.rank = max(followed.rank, rank)
        if progress is not None and (followed.progress is None or progress > followed.progress):
            followed.progress = progress

    def announced(
        self, job_id: str, workspace: Workspace | None = None, now: float | None = None
    ) -> None:
        """The job's status message was just posted: its first edit waits `FIRST_EDIT_AFTER`, so
        a job done by then goes from its status message straight to its outcome, and one that
        is not shows its progress as before (each edit an interval after the last)."""
        if job_id in self._ended:
            return
        if job_id not in self._jobs:
            self._add(job_id, _Followed(None, 0, None, workspace))
        now = time.monotonic() if now is None else now
        self.shown(job_id, now - self._first_edit_early)

    def _add(self, job_id: str, followed: _Followed) -> None:
        self.forget(job_id)
        if len(self._jobs) >= self._remembered:
            self.forget(next(iter(self._jobs)))
        self._jobs[job_id] = followed
        if followed.workspace is not None:
            self._in_workspace[followed.workspace] += 1

    def interval(self, job_id: str) -> float:
        """Seconds between two showings of the job: `show_every`, or longer where its workspace
        follows so many jobs that their edits would pass `edits_per_minute` (module doc)."""
        followed = self._jobs.get(job_id)
        if followed is None or followed.workspace is None:
            return self.show_every
        return self._workspace_interval(followed.workspace)

    def _workspace_interval(self, workspace: Workspace) -> float:
        """Seconds between two showings of each job `workspace` follows (module doc)."""
        return max(self.show_every, self._in_workspace[workspace] / self._edits_per_second)

    @property
    def _first_edit_early(self) -> float:
        """How much sooner than an interval a job's first edit may come: FIRST_EDIT_AFTER its
        status message, where the interval is show_every."""
        return self.show_every - min(FIRST_EDIT_AFTER, self.show_every)

    def progress_worth_asking(self, workspace: Workspace) -> bool:
        """Whether the edit budget of `workspace` (a job starting now followed already) lets
        each of its jobs be shown at least every PROGRESS_WORTH_ASKING seconds. A progress
        interval set longer than that is the operator's choice, and still asked for."""
        return self._in_workspace[workspace] / self._edits_per_second <= PROGRESS_WORTH_ASKING

    def status_worth_asking(self, workspace: Workspace, runs_for: float) -> bool:
        """Whether a job starting now in `workspace` (followed already), expected to end within
        `runs_for` seconds, could be shown running before then: its first edit comes an
        interval after its status message (less what `announced` takes off the first), and a
        busy workspace's interval is long. Where it could not, its status and
        progress webhooks would only be verified and dropped."""
        return self._workspace_interval(workspace) - self._first_edit_early < runs_for

    def follows(self, job_id: str) -> bool:
        return job_id in self._jobs

    def next_show_in(self, job_id: str, now: float | None = None) -> float:
        """Seconds until the job's status may be shown again (0: now)."""
        followed = self._jobs.get(job_id)
        if followed is None or followed.shown_at is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, followed.shown_at + self.interval(job_id) - now)

    def show_due(self, job_id: str, now: float | None = None) -> bool:
        """Whether the job's status may be shown again (never shown, or long enough ago)."""
        return self.next_show_in(job_id, now) == 0.0

    def shown(self, job_id: str, now: float | None = None) -> None:
        followed = self._jobs.get(job_id)
        if followed is not None:
            followed.shown_at = time.monotonic() if now is None else now

    def ended(self, job_id: str) -> None:
        """The job's outcome is recorded (its result, its failed create, its cancel): it is
        forgotten, and never followed again here, whatever older copy of it is recorded next."""
        self.forget(job_id)
        self._ended[job_id] = None

    def forget(self, job_id: str) -> None:
        """Nothing more to follow of the job (its outcome is recorded, or it is the oldest)."""
        followed = self._jobs.pop(job_id, None)
        if followed is not None and followed.workspace is not None:
            self._in_workspace[followed.workspace] -= 1
            if not self._in_workspace[followed.workspace]:
                del self._in_workspace[followed.workspace]

    def adds_nothing(self, job_id: str, prediction: Prediction) -> bool:
        """Whether `prediction`, an update of a followed job, would change nothing recorded or
        shown: not terminal, its own prediction, no status ahead of the recorded one, and no
        higher progress that is due to be shown. False whenever unsure (a read follows)."""
        followed = self._jobs.get(job_id)
        if followed is None:
            return False
        try:
            status = JobStatus(prediction.status)
        except ValueError:
            return False
        if followed.prediction_id is None:
            # Announced here, its create not answered yet: `start` says what the create's answer
            # will, and that answer (or, if it is lost, the search by webhook URL) records it.
            return status is JobStatus.STARTING
        if prediction.id != followed.prediction_id:
            return False
        if status.terminal or status.rank > followed.rank:
            return False
        progress = progress_from_logs(prediction.logs)
        if progress is None or (followed.progress is not None and progress <= followed.progress):
            return True
        if self.show_due(job_id):
            return False
        self.hold_back(job_id, progress)
        return True

    def hold_back(self, job_id: str, progress: int) -> None:
        """A higher progress came before it may be shown: kept for the delayed showing."""
        followed = self._jobs.get(job_id)
        if followed is not None and (followed.held_back is None or progress > followed.held_back):
            followed.held_back = progress

    def held_back(self, job_id: str) -> int | None:
        """The progress held back for a delayed showing, if it is above the recorded one."""
        followed = self._jobs.get(job_id)
        if followed is None or followed.held_back is None:
            return None
        if followed.progress is not None and followed.held_back <= followed.progress:
            return None
        return followed.held_back
