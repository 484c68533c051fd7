"""The one command path: every slash command, from every platform, comes through `handle`.

An adapter turns its platform's event into a `CommandRequest` and the `Reply` into its platform's
answer; everything between is here. Parsing is pure, so bad input is answered before the
platform's deadline with nothing created; a valid command is reserved and recorded, then
acknowledged (the adapter's `acknowledge`), then announced and started by the job service.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bot.adapter import Acknowledge, CommandRequest, Reply, no_acknowledgement
from bot.commands.conjure import run_conjure_command
from bot.commands.files import FileInputs
from bot.commands.model_options import check_model_options
from bot.commands.parsing import Invocation, UsageError, parse_invocation, parse_options
from bot.commands.safety import safety_refusal
from bot.confirm import Confirmations
from bot.inputs import FileRefused
from bot.jobs import DATABASE_UNANSWERED, CommandRefused, JobService
from bot.logs import command_event
from bot.markup import Code, Text
from bot.replicate.schema_cache import ModelSchemas
from storage.errors import is_outage
from storage.jobs import DuplicateRequest

log = logging.getLogger(__name__)

CONJURE = "conjure"
INTERNAL_ERROR = (
    "Conjure hit an internal error while starting your job. Please try again in a minute."
)
CONJURE_FAILED = "Conjure could not answer that just now. Please try again in a minute."


class Commands:
    """Parses, answers `/conjure ...`, refuses, or submits: the same for every platform."""

    def __init__(self, service: JobService, schemas: ModelSchemas | None = None) -> None:
        self.service = service
        self.schemas = schemas  # the models' own input schemas; None: the catalog's rules only
        self.confirmations = Confirmations(service)

    async def _ask(self, request: CommandRequest, invocation: Invocation) -> Reply:
        """A costly command: its price and Run it / Cancel, and nothing else (bot.confirm)."""
        try:
            return await self.confirmations.ask(request, invocation)
        except Exception as exc:
            if not is_outage(exc):
                log.exception("could not ask %s to confirm /%s", request.user_id, request.command)
                return Reply(Text.of(INTERNAL_ERROR), refused=True)
            log.warning(  # as a job command's reservation: nothing asked, try again
                "could not ask %s to confirm /%s: the database did not answer (%s)",
                request.user_id,
                request.command,
                type(exc).__name__,
            )
            return Reply(Text.of(DATABASE_UNANSWERED), refused=True)

    async def handle(
        self, request: CommandRequest, acknowledge: Acknowledge = no_acknowledgement
    ) -> Reply:
        """The answer to one command. Never raises: an internal error is logged and answered.

        `acknowledge` is called once, only for a valid job command, as soon as its job is
        recorded (one transaction) and before anything slower (the announcement, Replicate):
        a command the platform was told was taken is never lost to a crash. A Reply returned
        without it having been called (bad input, a limit reached) is a quick answer the
        adapter may send within the platform's deadline.

        A command the platform sent again (its request key already has a job) is refused with
        nothing to say: the first copy is running and its own messages speak for it, and
        anything said here would reach the person as a second, confusing answer.
        """
        if request.command == CONJURE:
            return await self._conjure(request)
        try:
            invocation = self.parse(request)
            invocation = await check_model_options(invocation, self.service.catalog, self.schemas)
        except UsageError as exc:
            command_event(request, "refused", reason="bad input", known=self._known(request))
            return Reply(usage_text(exc), refused=True)
        except Exception:  # handle never raises: input no check foresaw is answered, not raised
            log.exception("could not read /%s for %s", request.command, request.user_id)
            return Reply(Text.of(INTERNAL_ERROR), refused=True)
        refusal = await safety_refusal(self.service, request, invocation)  # before anything
        if refusal is not None:
            return refusal
        try:  # files are read (size-capped) and sent before anything is created or reserved
            invocation = await FileInputs(
                self.service.replicate, self.service.fetcher.http
            ).prepare(invocation)
        except FileRefused as exc:
            command_event(request, "refused", reason="file refused", known=self._known(request))
            return Reply(Text.of(str(exc)), refused=True)
        except Exception:  # handle never raises; nothing has been created or reserved yet
            log.exception(
                "could not read the files of /%s for %s", request.command, request.user_id
            )
            return Reply(Text.of(INTERNAL_ERROR), refused=True)
        if self.confirmations.needed(invocation):
            return await self._ask(request, invocation)
        acknowledging = False

        async def acknowledge_once() -> Mapping[str, Any] | None:
            nonlocal acknowledging
            acknowledging = True
            return await acknowledge()

        try:
            job = await self.service.submit(request, invocation, acknowledge_once)
        except CommandRefused as exc:
            return Reply(exc.text, refused=True)
        except DuplicateRequest:
            return _sent_again(request)
        except Exception:
            # A copy of a command whose first copy has a job is refused by the database before
            # it is acknowledged (DuplicateRequest); an error before acknowledging with a job
            # for the command is one more such copy, not a failure.
            if not acknowledging and await self._has_job(request):
                return _sent_again(request)
            log.exception("could not start /%s for %s", request.command, request.user_id)
            return Reply(Text.of(INTERNAL_ERROR), refused=True)
        return Reply(job=job)

    def _known(self, request: CommandRequest) -> bool:
        return self.service.catalog.command(request.command) is not None

    async def _has_job(self, request: CommandRequest) -> bool:
        if request.request_key is None:
            return False
        try:
            return await self.service.store.has_request(request.request_key)
        except Exception:
            log.warning("could not look up request %s", request.request_key, exc_info=True)
            return False

    def parse(self, request: CommandRequest) -> Invocation:
        """The command validated against the catalog; raises UsageError for bad input."""
        catalog = self.service.catalog
        if request.options is None:
            return parse_invocation(catalog, request.command, request.text)
        spec = catalog.command(request.command)
        if spec is None:
            return parse_invocation(catalog, request.command, request.text)  # the usual error
        return parse_options(spec, catalog, request.text, request.options)

    async def _conjure(self, request: CommandRequest) -> Reply:
        try:
            return Reply(await run_conjure_command(self.service, request, self.schemas))
        except Exception as exc:
            if is_outage(exc):  # a restart, a failover: the answer says try again, a line
                log.warning(
                    "/conjure for %s not answered: the database did not answer (%s)",
                    request.user_id,
                    type(exc).__name__,
                )
            else:  # not the text typed: what a request carries never reaches the log
                log.exception("/conjure failed for %s", request.user_id)
            return Reply(Text.of(CONJURE_FAILED), refused=True)


def _sent_again(request: CommandRequest) -> Reply:
    """The answer to a copy of a command that already has its job: nothing to add."""
    log.info("/%s sent again (%s): already started", request.command, request.request_key)
    return Reply(refused=True)


def usage_text(error: UsageError) -> Text:
    """What is wrong, then the usage line as code."""
    if not error.usage:
        return Text.of(error.message)
    return Text.of(error.message, "\nUsage: ", Code(error.usage))
