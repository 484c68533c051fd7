"""`/conjure safety ...` (admins) and the check every prompt passes before anything is spent.

The rules themselves, their matching and their cache are bot.safety's.
"""

from __future__ import annotations

import logging

from bot.adapter import CommandRequest, Reply
from bot.commands.parsing import Invocation
from bot.jobs import DATABASE_UNANSWERED, JobService
from bot.logs import command_event
from bot.markup import Text
from bot.safety import PATTERN, REFUSED, WORD, RuleError, parse_rule_id, prompt_texts
from storage.errors import is_outage
from storage.jobs import user_subject

log = logging.getLogger(__name__)

INTERNAL_ERROR = (
    "Conjure hit an internal error while starting your job. Please try again in a minute."
)
SAFETY_USAGE = (
    "Usage: /conjure safety (list) | /conjure safety ban <word or phrase> | "
    "/conjure safety pattern <regex> | /conjure safety remove <id>"
)


async def safety_refusal(
    service: JobService, request: CommandRequest, invocation: Invocation
) -> Reply | None:
    """A neutral, private refusal if `invocation`'s prompt breaks a rule of its workspace, with
    its audit row; None if it breaks none. Never raises: a failed check refuses (fails closed)."""
    texts = prompt_texts(invocation.prompt, invocation.input)
    try:
        rule = await service.safety.check(request.platform, request.workspace, texts)
        if rule is None:
            return None
        await service.safety.refused(
            user_subject(request.platform, request.workspace, request.user_id),
            platform=request.platform,
            workspace=request.workspace,
            channel=request.channel,
            command=request.command,
            rule=rule,
            texts=texts,
        )
    except Exception as exc:  # fails closed, and says why
        if not is_outage(exc):
            log.exception("could not check /%s against the safety rules", request.command)
            return Reply(Text.of(INTERNAL_ERROR), refused=True)
        log.warning(  # nothing wrong with the prompt: the database did not answer
            "could not check /%s against the safety rules: the database did not answer (%s)",
            request.command,
            type(exc).__name__,
        )
        return Reply(Text.of(DATABASE_UNANSWERED), refused=True)
    command_event(request, "refused", reason=f"safety rule {rule.id}", known=True)
    return Reply(Text.of(REFUSED), refused=True)


async def safety_command(service: JobService, request: CommandRequest, args: list[str]) -> Text:
    """List, ban, pattern or remove this workspace's rules (the caller is an admin)."""
    rules = service.safety
    actor = user_subject(request.platform, request.workspace, request.user_id)
    action = args[0].lower() if args else "list"
    rest = request.text.split(None, 2)[2] if len(args) > 1 else ""
    if action == "list":
        found = await rules.list(request.platform, request.workspace)
        if not found:
            return Text.of("This workspace has no safety rules. " + SAFETY_USAGE)
        lines = ["This workspace's safety rules:"]
        lines += [f"• #{r.id} {r.kind}: {r.value} (by {r.created_by})" for r in found]
        return Text.of("\n".join(lines))
    if action in ("ban", "word", "pattern"):
        kind = PATTERN if action == "pattern" else WORD
        try:
            rule = await rules.add(request.platform, request.workspace, kind, rest, actor)
        except RuleError as exc:
            return Text.of(str(exc))
        return Text.of(f"Added rule #{rule.id} ({rule.kind}): {rule.value}")
    if action == "remove":
        rule_id = parse_rule_id(args[1]) if len(args) == 2 else None
        if rule_id is None:
            return Text.of(SAFETY_USAGE)
        if await rules.remove(request.platform, request.workspace, rule_id, actor):
            return Text.of(f"Removed rule #{rule_id}.")
        return Text.of(f"This workspace has no rule #{rule_id}.")
    return Text.of(SAFETY_USAGE)
