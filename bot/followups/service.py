"""What a button press does: Re-roll, Upscale or Vary start a new job; Cancel stops one.

Every platform turns its press (Slack's block action, Discord's component interaction, the
console's words) into a `Press` and shows the `Reply`, as for commands. A new job is an ordinary
job of the person who pressed, under their quota and budget, posted where the press came from,
and recorded with its parent and the button (`Job.parent_id`, `Job.followup`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot.adapter import Acknowledge, CommandRequest, OutputFile, Reply, no_acknowledgement
from bot.catalog import Catalog
from bot.catalog.specs import OUTPUTS_FIELD, CommandSpec, ModelSpec
from bot.commands.parsing import Invocation
from bot.commands.safety import safety_refusal
from bot.confirm import Confirmations
from bot.followups.buttons import Action, Button, job_buttons, parse_custom_id
from bot.jobs import CommandRefused, JobService
from bot.markup import Text
from bot.replicate.errors import ReplicateError
from bot.replicate.files import image_input
from bot.replicate.outputs import OutputFetcher, OutputUnavailable, split_output
from storage.errors import is_outage
from storage.jobs import DuplicateRequest
from storage.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

OutputSource = Callable[[Job, int], Awaitable[OutputFile | None]]
"""How a platform reaches output `n` (1-based) of a job where it delivered it: the Slack file
(with the bot token), the Discord attachment, the console's saved file. None when it is gone;
an exception (OutputUnavailable) when it cannot be read just now, so that a passing outage is
not told as a deleted image (which sends the person to pay for the command again)."""

DOUBLE_PRESS = timedelta(seconds=3)
"""A second press of the same button by the same person within this is the same press."""
REPLICATE_LINKS_LAST = timedelta(minutes=55)  # Replicate's output links die after an hour
SEED_MAX = 2**31 - 1
# Stands for the image while an Upscale or Variation is checked against the safety rules: a
# file's value is not text to them, so the check is the same before the image is read back and
# uploaded to Replicate (which a refused press must not do) as after.
IMAGE_NOT_YET_READ = "data:,"

NOT_CONJURES = "That button is not one of Conjure's."
GONE = "Conjure no longer knows that job."
PRESS_AGAIN = (
    "Conjure cannot reach its database right now, so nothing ran. "
    "Please press it again in a minute."
)
NOT_YOURS = "Only the person who started this job, or a Conjure admin, can cancel it."
ALREADY_OVER = "That job has already finished."
ALREADY_CANCELED = "That job is already canceled."
NOT_OFFERED = "That button is no longer offered for /{command}."
NOT_FINISHED = "That job has no result to work from yet."
NO_IMAGE = (
    "That image is no longer available (its message or file was deleted, and Replicate's copy "
    "has expired). Run the command again to make a new one."
)
IMAGE_FAILED = "Conjure could not send that image to Replicate just now. Please try again."
IMAGE_UNREACHABLE = (
    "Conjure could not read that image just now; nothing was started or charged. "
    "Please try again in a minute."
)


@dataclass
class Press:
    """A button pressed: who, where, which button, and how to reach what it names."""

    platform: str
    workspace: str
    channel: str
    user_id: str
    custom_id: str
    user_name: str | None = None
    destination: dict[str, Any] = field(default_factory=dict)
    source: OutputSource | None = None


class Followups:
    """Turns presses into new jobs, or cancels, through the same job service as commands."""

    def __init__(self, service: JobService, fetcher: OutputFetcher) -> None:
        self.service = service
        self.fetcher = fetcher
        self.confirmations = Confirmations(service)

    @property
    def catalog(self) -> Catalog:
        return self.service.catalog

    async def press(self, press: Press, acknowledge: Acknowledge = no_acknowledgement) -> Reply:
        """The answer to one press, for the person who pressed, privately. Never raises."""
        button = parse_custom_id(press.custom_id)
        if button is None:
            return _refused(NOT_CONJURES)
        try:
            if button.action in (Action.CONFIRM, Action.DECLINE):
                return await self.confirmations.answer(_asked(press), button, acknowledge)
            parent = await self.service.store.get(button.job_id)
            # A job's buttons are only on its own messages, in its channel. A press naming it
            # from anywhere else is forged (Slack sends the value the client sends), and would
            # post its prompt and images where that channel's members did not.
            if parent is None or (parent.platform, parent.workspace, parent.channel) != (
                press.platform,
                press.workspace,
                press.channel,
            ):
                return _refused(GONE)
            if button.action is Action.CANCEL:
                return await self._cancel(press, parent)
            return await self._follow_up(press, parent, button, acknowledge)
        except CommandRefused as exc:
            return Reply(exc.text, refused=True)
        except DuplicateRequest:
            return Reply(None, refused=True)  # the other press's job speaks for both
        except Exception as exc:
            if not is_outage(exc):
                log.exception("button %s pressed by %s failed", press.custom_id, press.user_id)
                return _refused("Conjure hit an internal error with that button. Please try again.")
            log.warning(  # nothing ran: the job is recorded, or nothing is
                "button %s pressed by %s: the database did not answer (%s)",
                press.custom_id,
                press.user_id,
                type(exc).__name__,
            )
            return _refused(PRESS_AGAIN)

    # ---- cancel -------------------------------------------------------------------------------

    async def _cancel(self, press: Press, job: Job) -> Reply:
        admin = self.service.settings.is_admin(press.platform, press.workspace, press.user_id)
        if press.user_id != job.user_id and not admin:
            return _refused(NOT_YOURS)
        if not await self.service.cancel(job):
            # A second Cancel must not read as "it ran to its end" (and was charged in full).
            latest = await self.service.store.get(job.id)
            canceled = latest is not None and latest.job_status is JobStatus.CANCELED
            return _refused(ALREADY_CANCELED if canceled else ALREADY_OVER)
        log.info("job %s canceled by %s:%s", job.id, press.platform, press.user_id)
        return Reply(None)  # the job's own message now says it was canceled

    # ---- re-roll, upscale, vary ----------------------------------------------------------------

    async def _follow_up(
        self, press: Press, parent: Job, button: Button, acknowledge: Acknowledge
    ) -> Reply:
        command = self.catalog.commands.get(parent.command)
        if command is None or button not in {
            b for row in job_buttons(self.catalog, parent) for b in row
        }:
            return _refused(NOT_OFFERED.format(command=parent.command))
        followup = button.action.value + (f":{button.index}" if button.index else "")
        count, newest = await self.service.store.followups_of(parent.id, followup, press.user_id)
        if newest is not None and utcnow() - newest < DOUBLE_PRESS:
            return Reply(None, refused=True)  # a double click: its first press is running
        if button.action is Action.REROLL:
            invocation = reroll(command, self._model(parent.model), parent)
        else:  # the image is read and sent only once the prompt has passed the rules
            invocation = self._image_invocation(command, parent, button, IMAGE_NOT_YET_READ)
        request = CommandRequest(
            press.platform,
            press.workspace,
            press.channel,
            press.user_id,
            parent.command,
            parent.prompt,
            user_name=press.user_name,
            destination=dict(press.destination),
            # Counted per person and button: two presses racing both count n and the unique
            # key keeps one; a later, deliberate press counts n + 1.
            request_key=f"{press.platform}:press:{parent.id}:{followup}:{press.user_id}:{count}",
            parent_id=parent.id,
            followup=followup,
        )
        refusal = await safety_refusal(self.service, request, invocation)  # rules may be newer
        if refusal is not None:
            return refusal
        if button.action is not Action.REROLL:
            source = await self._image(press, parent, button.index)
            if isinstance(source, Reply):
                return source
            invocation = self._image_invocation(command, parent, button, source)
        if self.confirmations.needed(invocation):  # a Re-roll of a video costs as much
            return await self.confirmations.ask(request, invocation)
        job = await self.service.submit(request, invocation, acknowledge)
        return Reply(job=job)

    def _model(self, key: str) -> ModelSpec:
        model = self.catalog.models.get(key)
        if model is None:
            raise CommandRefused(f"The model {key} is no longer in Conjure's catalog.")
        return model

    def _image_invocation(
        self, command: CommandSpec, parent: Job, button: Button, image_url: str
    ) -> Invocation:
        followups = command.followups
        chosen = followups.upscale if button.action is Action.UPSCALE else followups.variations
        assert chosen is not None  # _follow_up checked the button is offered
        model = self._model(chosen.model)
        fields: dict[str, Any] = {}
        outputs = 1
        if button.action is Action.VARY:
            fields[command.prompt_field] = parent.prompt
            if model.outputs_field is not None:
                outputs = max(1, parent.outputs_expected)
                fields[OUTPUTS_FIELD] = outputs
        # The follow-up's own fields are the model's input names: set over the logical ones.
        model_input = {**model.build_input(fields), **chosen.fields(image_url)}
        return Invocation(
            command=command,
            model=model,
            prompt=parent.prompt,
            input=model_input,
            outputs=outputs,
        )

    async def _image(self, press: Press, parent: Job, index: int) -> str | Reply:
        """The parent's output `index` as a model input (a data: URL or an upload)."""
        if parent.job_status is not JobStatus.SUCCEEDED:
            return _refused(NOT_FINISHED)
        try:
            output = await self._delivered_output(press, parent, index)
        except OutputUnavailable:
            return _refused(IMAGE_UNREACHABLE)
        if output is None:
            return _refused(NO_IMAGE)
        try:
            return await image_input(
                self.service.replicate, output.content, output.content_type, output.filename
            )
        except (ReplicateError, ValueError):
            log.warning("could not send output %d of job %s", index, parent.id, exc_info=True)
            return _refused(IMAGE_FAILED)

    async def _delivered_output(self, press: Press, parent: Job, index: int) -> OutputFile | None:
        """Where it was delivered first (it lasts); else Replicate's link while it lives.
        None when both are gone; OutputUnavailable when one exists but cannot be read now."""
        unreachable: Exception | None = None
        if press.source is not None:
            try:
                found = await press.source(parent, index)
            except Exception as exc:
                log.warning(
                    "job %s: delivered output %d unreachable", parent.id, index, exc_info=True
                )
                unreachable = exc
            else:
                if found is not None:
                    return found
        found = await self._from_replicate(parent, index)
        if found is None and unreachable is not None:
            raise OutputUnavailable(f"output {index} of job {parent.id} unreachable")
        return found

    async def _from_replicate(self, parent: Job, index: int) -> OutputFile | None:
        """Output `index` from Replicate's link while it lives (an hour); None when it is gone,
        OutputUnavailable when its host fails just now."""
        urls, _ = split_output(parent.output)
        done = parent.completed_at
        if index > len(urls) or done is None or utcnow() - done > REPLICATE_LINKS_LAST:
            return None
        try:
            result = await self.fetcher.fetch([urls[index - 1]])
        except OutputUnavailable:
            log.warning("job %s: output %d not downloadable now", parent.id, index, exc_info=True)
            raise
        except Exception:
            log.warning("job %s: output %d not downloadable", parent.id, index, exc_info=True)
            return None
        return result.files[0] if result.files else None


def _asked(press: Press) -> CommandRequest:
    """Who answers a price question, and where the job goes: the press's own destination."""
    return CommandRequest(
        press.platform,
        press.workspace,
        press.channel,
        press.user_id,
        "",
        "",
        user_name=press.user_name,
        destination=dict(press.destination),
    )


def reroll(command: CommandSpec, model: ModelSpec, parent: Job) -> Invocation:
    """The same command, model and input as `parent`, with a new seed."""
    fields = dict(parent.input)
    seed = command.option("seed")
    fields[seed.field if seed is not None else "seed"] = secrets.randbelow(SEED_MAX + 1)
    return Invocation(
        command=command,
        model=model,
        prompt=parent.prompt,
        input=fields,
        outputs=parent.outputs_expected,
    )


def _refused(text: str) -> Reply:
    return Reply(Text.of(text), refused=True)
