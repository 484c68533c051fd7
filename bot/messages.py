"""Plain-text pieces every adapter shows: status lines, money, durations, progress bars."""

from __future__ import annotations

from datetime import datetime

from bot.markup import Mention, Text
from bot.money import format_usd
from storage.models import Job, JobStatus

_STATUS_WORDS = {
    JobStatus.QUEUED: "queued",
    JobStatus.STARTING: "starting",
    JobStatus.PROCESSING: "running",
    JobStatus.SUCCEEDED: "done",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "canceled",
    JobStatus.ABORTED: "aborted",
}
_STATUS_ICONS = {
    JobStatus.QUEUED: "⏳",
    JobStatus.STARTING: "⏳",
    JobStatus.PROCESSING: "🎨",
    JobStatus.SUCCEEDED: "✅",
    JobStatus.FAILED: "❌",
    JobStatus.CANCELED: "🚫",
    JobStatus.ABORTED: "🚫",
}


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s"


def progress_bar(percent: int, width: int = 10) -> str:
    filled = max(0, min(width, round(percent * width / 100)))
    return "█" * filled + "░" * (width - filled) + f" {percent}%"


def status_line(job: Job) -> str:
    """One line for the announcement: state, progress, and on completion duration and cost."""
    status = job.job_status
    text = f"{_STATUS_ICONS[status]} {_STATUS_WORDS[status]}"
    if status is JobStatus.QUEUED and job.waiting_since is not None:
        ahead = job.queue_ahead or 0
        text += f", {ahead} ahead of you" if ahead else ", next in line"
    if status is JobStatus.PROCESSING and job.progress is not None:
        text += f" {progress_bar(job.progress)}"
    if status.terminal:
        text += f" in {format_duration(job.duration_seconds)}"
        if job.actual_micros is not None:
            text += f" · {format_usd(job.actual_micros)}"
    return text


def status_text(job: Job, prompt_limit: int | None = None) -> Text:
    """The full announcement: who asked, the prompt (clipped to `prompt_limit`), the model, the
    state."""
    prompt = job.prompt
    if prompt_limit is not None and len(prompt) > prompt_limit:
        prompt = prompt[: prompt_limit - 1] + "…"
    who = Mention(job.user_id, job.user_name)
    return Text.of(
        who, f" asked /{job.command}: “{prompt}”\nmodel {job.model} · {status_line(job)}"
    )


def until(moment: datetime, now: datetime) -> str:
    """'in 3 h 12 min' style distance to a reset time."""
    minutes = max(1, int((moment - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"in {hours} h {minutes} min" if hours else f"in {minutes} min"


def followup_label(followup: str | None) -> str | None:
    """What a job started by a button says first, since its message sits among the others:
    "reroll" -> "🔁 Re-roll", "upscale:2" -> "🔍 Upscale of image 2", "vary:1" -> "🎲 Variations
    of image 1"; None for a job a command started."""
    action, _, index = (followup or "").partition(":")
    if action == "reroll":
        return "🔁 Re-roll"
    if action == "upscale":
        return f"🔍 Upscale of image {index}"
    if action == "vary":
        return f"🎲 Variations of image {index}"
    return None
