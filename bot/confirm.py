"""Asking before a costly job: "This will cost about $X. [Run it] [Cancel]".

A command (or a follow-up such as a video's Re-roll) whose estimate reaches
`CONJURE_CONFIRM_ABOVE_USD` is not submitted: the question is recorded (storage.confirmations;
nothing is reserved, no job exists, Replicate is not called) and its person answers privately.
Run it submits the command as it was asked, through `JobService.submit` like any other, as the
person who presses, so their quota and budget are checked then; its request key is the
question's, so any number of presses, on any instance, start one job. Only the person who asked
may answer, and only for CONFIRM_FOR.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from decimal import Decimal

from bot.adapter import Acknowledge, CommandRequest, Reply
from bot.commands.parsing import Invocation
from bot.commands.safety import safety_refusal
from bot.followups.buttons import Action, Button
from bot.jobs import CommandRefused, JobService
from bot.markup import Text
from bot.money import format_usd, usd_to_micros
from storage.confirmations import ConfirmationStore
from storage.models import Confirmation, ConfirmationStatus, utcnow

log = logging.getLogger(__name__)

CONFIRM_FOR = timedelta(minutes=10)
"""How long the buttons work: long enough to read the price and decide, short enough that a
press is still about the command just typed (and well within Slack's 30-minute response_url
and Discord's 15-minute interaction token, which carry the answer)."""

NOT_YOURS = "Only the person who asked can answer this question."
GONE = "Conjure no longer knows that question; nothing ran. Run the command again."
EXPIRED = (
    "That question expired (the buttons work for {minutes} minutes); nothing ran and nothing "
    "was charged. Run the command again if you still want it."
)
DECLINED = "Canceled: nothing ran and nothing was charged."
ALREADY_DECLINED = "You canceled that one; nothing ran. Run the command again if you want it."
ALREADY_STARTED = "That job has already started; its own message shows how it goes."


class Confirmations:
    """Asks, records the question, and answers its buttons."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.store = ConfirmationStore(service.store.engine)

    def threshold_micros(self) -> int | None:
        """The estimate from which a job is asked about first; None when nothing is."""
        usd: Decimal | None = self.service.settings.conjure_confirm_above_usd
        return usd_to_micros(usd) if usd else None

    def needed(self, invocation: Invocation) -> bool:
        """Whether `invocation` costs enough to ask first (its estimate, as shown, reaches the
        setting: a $0.50 video asks at the default $0.50)."""
        threshold = self.threshold_micros()
        return threshold is not None and invocation.estimate_micros() >= threshold

    async def ask(self, request: CommandRequest, invocation: Invocation) -> Reply:
        """Record the question and return it, with its two buttons; nothing else happens."""
        now = utcnow()
        question = Confirmation(
            id=secrets.token_hex(10),
            platform=request.platform,
            workspace=request.workspace,
            channel=request.channel,
            user_id=request.user_id,
            user_name=request.user_name,
            parent_id=request.parent_id,
            followup=request.followup,
            command=invocation.command.name,
            model=invocation.model.key,
            prompt=invocation.prompt,
            input=invocation.input,
            outputs=invocation.outputs,
            estimate_micros=invocation.estimate_micros(),
            created_at=now,
            expires_at=now + CONFIRM_FOR,
        )
        await self.store.add(question)
        log.info("asked %s:%s to confirm /%s", request.platform, request.user_id, question.command)
        buttons = (Button(Action.CONFIRM, question.id), Button(Action.DECLINE, question.id))
        return Reply(Text.of(question_text(invocation)), refused=True, buttons=buttons)

    async def answer(
        self, request: CommandRequest, button: Button, acknowledge: Acknowledge
    ) -> Reply:
        """Run it or Cancel, pressed by `request.user_id`: `request` says who and where the
        job would go (the press's own destination). Raises CommandRefused (a limit reached:
        the question stays open) or DuplicateRequest (another press started it)."""
        question = await self.store.get(button.job_id)
        if question is None or (question.platform, question.workspace) != (
            request.platform,
            request.workspace,
        ):
            return _refused(GONE)
        if request.user_id != question.user_id:
            return _refused(NOT_YOURS)
        now = utcnow()
        status = ConfirmationStatus(question.status)
        if status is ConfirmationStatus.CONFIRMED:
            if question.job_id is not None or button.action is Action.DECLINE:
                return _refused(ALREADY_STARTED)
            if question.expires_at <= now:  # claimed, and its start never recorded since
                return _refused(EXPIRED.format(minutes=int(CONFIRM_FOR.total_seconds() // 60)))
            # Claimed by a Run it whose job is not recorded yet: still starting, or its process
            # died before it could say. Submitting again is safe: the request key makes it one
            # job, and a press that finds it started is told so (DuplicateRequest).
            return await self._start(request, question, acknowledge)
        if status is ConfirmationStatus.DECLINED:
            return _refused(ALREADY_DECLINED)
        if question.expires_at <= now:
            return _refused(EXPIRED.format(minutes=int(CONFIRM_FOR.total_seconds() // 60)))
        if button.action is Action.DECLINE:
            if await self.store.settle(question.id, ConfirmationStatus.DECLINED, now):
                return _refused(DECLINED)
            return _refused(ALREADY_STARTED)  # Run it won the race
        # Claimed before the job is submitted, so that a Cancel pressed while it starts finds
        # it started, instead of saying "nothing ran" beside a job that runs and is charged.
        if not await self.store.settle(question.id, ConfirmationStatus.CONFIRMED, now):
            latest = await self.store.get(question.id)
            if latest is not None and latest.status == ConfirmationStatus.DECLINED:
                return _refused(ALREADY_DECLINED)
            return _refused(ALREADY_STARTED)  # another press of Run it claimed it
        return await self._start(request, question, acknowledge)

    async def _start(
        self, request: CommandRequest, question: Confirmation, acknowledge: Acknowledge
    ) -> Reply:
        """Submit a claimed question's command, checked against the safety rules as they
        are now (a rule added since the question was asked refuses it); a refusal (a limit
        reached) reopens it, so its buttons work again once there is room."""
        invocation = self._invocation(question)
        command = CommandRequest(
            request.platform,
            request.workspace,
            request.channel,
            request.user_id,
            question.command,
            question.prompt,
            user_name=request.user_name,
            destination=dict(request.destination),
            request_key=f"{request.platform}:confirm:{question.id}",
            parent_id=question.parent_id,
            followup=question.followup,
        )
        refusal = await safety_refusal(self.service, command, invocation)
        if refusal is not None:
            await self.store.reopen(question.id)  # as for a limit: nothing started
            return refusal
        try:
            job = await self.service.submit(command, invocation, acknowledge)
        except CommandRefused:
            await self.store.reopen(question.id)
            raise
        await self.store.record_job(question.id, job.id)
        return Reply(job=job)

    def _invocation(self, question: Confirmation) -> Invocation:
        catalog = self.service.catalog
        command = catalog.commands.get(question.command)
        model = catalog.models.get(question.model)
        if command is None or model is None:
            raise CommandRefused(f"/{question.command} is no longer in Conjure's catalog.")
        return Invocation(
            command=command,
            model=model,
            prompt=question.prompt,
            input=dict(question.input),
            outputs=question.outputs,
        )


def question_text(invocation: Invocation) -> str:
    """ "This will cost about $0.50 ..." with the most it can cost when that is more."""
    estimate, ceiling = invocation.estimate_micros(), invocation.ceiling_micros()
    most = f" (up to {format_usd(ceiling)} if it runs long)" if ceiling > estimate else ""
    minutes = int(CONFIRM_FOR.total_seconds() // 60)
    return (
        f"This /{invocation.command.name} will cost about {format_usd(estimate)}{most}. "
        f"Run it? Nothing is reserved or charged until you press Run it "
        f"(the buttons work for {minutes} minutes)."
    )


def _refused(text: str) -> Reply:
    return Reply(Text.of(text), refused=True)
