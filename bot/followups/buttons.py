"""Which buttons a job's message carries, and the id each button travels with.

A button carries the job id, the action and which output, and nothing else: everything a press
needs comes from the database, so a press works after a restart and on any instance. The id is
the same on every platform (Slack's `value`, Discord's `custom_id`, the console's words) and is
checked on the way back, since it comes back from outside.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from bot.catalog import Catalog
from bot.replicate.outputs import split_output
from storage.models import Job, JobStatus


class Action(StrEnum):
    REROLL = "reroll"
    UPSCALE = "upscale"
    VARY = "vary"
    CANCEL = "cancel"
    # On the question before a costly job (bot.confirm); their "job" is the question's id.
    CONFIRM = "confirm"
    DECLINE = "decline"


PREFIX = "conjure"
_CUSTOM_ID = re.compile(
    rf"^{PREFIX}:(?P<action>{'|'.join(a.value for a in Action)}):(?P<job>[0-9a-f]{{8,32}})"
    r":(?P<index>\d{1,2})$"
)
CUSTOM_ID_TEMPLATE = _CUSTOM_ID.pattern  # for discord.py's DynamicItem


@dataclass(frozen=True)
class Button:
    """One button: `index` is the output it acts on (1-based, U1 is 1), 0 for the whole job."""

    action: Action
    job_id: str
    index: int = 0

    @property
    def label(self) -> str:
        if self.action is Action.UPSCALE:
            return f"U{self.index}"
        if self.action is Action.VARY:
            return f"V{self.index}"
        if self.action is Action.CONFIRM:
            return "Run it"
        return "Re-roll" if self.action is Action.REROLL else "Cancel"

    @property
    def custom_id(self) -> str:
        return f"{PREFIX}:{self.action.value}:{self.job_id}:{self.index}"

    @property
    def danger(self) -> bool:
        return self.action in (Action.CANCEL, Action.DECLINE)

    @property
    def primary(self) -> bool:
        """The button that goes ahead (Run it): shown as the main choice where a platform can."""
        return self.action is Action.CONFIRM


def parse_custom_id(value: str) -> Button | None:
    """The button an id names, or None for anything Conjure did not make."""
    match = _CUSTOM_ID.match(value or "")
    if match is None:
        return None
    action = Action(match["action"])
    index = int(match["index"])
    per_output = action in (Action.UPSCALE, Action.VARY)
    if per_output != (index > 0):
        return None
    return Button(action, match["job"], index)


@dataclass(frozen=True)
class Offered:
    """What a finished job's command offers (from conjure.toml's follow-ups)."""

    reroll: bool = False
    upscale: bool = False
    vary: bool = False


def buttons_for(job: Job, offered: Offered, images: int) -> list[list[Button]]:
    """The rows of buttons for `job` as it stands: Cancel while it may still run; on a
    finished image job, Re-roll, then U1..Un, then V1..Vn for its `images` delivered images."""
    status = job.job_status
    if not status.terminal:
        return [[Button(Action.CANCEL, job.id)]]
    if status is not JobStatus.SUCCEEDED or images <= 0:
        return []
    rows: list[list[Button]] = []
    if offered.reroll:
        rows.append([Button(Action.REROLL, job.id)])
    if offered.upscale:
        rows.append([Button(Action.UPSCALE, job.id, n) for n in range(1, images + 1)])
    if offered.vary:
        rows.append([Button(Action.VARY, job.id, n) for n in range(1, images + 1)])
    return rows


def job_buttons(catalog: Catalog, job: Job) -> list[list[Button]]:
    """buttons_for `job` with what its command offers (conjure.toml's follow-ups) and its
    image outputs. An upscale's result is final: it offers nothing more."""
    return buttons_for(job, offered(catalog, job), images(job))


def offered(catalog: Catalog, job: Job) -> Offered:
    command = catalog.commands.get(job.command)
    if command is None or (job.followup or "").startswith(Action.UPSCALE.value):
        return Offered()
    followups = command.followups
    return Offered(
        reroll=bool(followups.reroll),
        upscale=followups.upscale is not None,
        vary=followups.variations is not None,
    )


def images(job: Job) -> int:
    """How many file outputs the job has (U1..Un and V1..Vn name them)."""
    return len(split_output(job.output)[0])
