"""`/conjure help|usage|models|quota|report|safety`: the bot's own command, on every platform.

The command path (bot.commands.handler) passes the text after `/conjure`; the answer is shown
privately. Admin subcommands check the caller against CONJURE_ADMINS here, in one place, so no
adapter can forget.
"""

from __future__ import annotations

import re

from bot.adapter import CommandRequest
from bot.catalog import Price, format_number
from bot.commands.model_options import models_usage
from bot.commands.safety import safety_command
from bot.jobs import JobService
from bot.markup import Mention, Text
from bot.money import format_usd, usd_to_micros
from bot.quotas.limits import USER, WORKSPACE
from bot.quotas.words import LimitError, parse_limit
from bot.replicate.schema_cache import ModelSchemas
from storage.jobs import user_subject, workspace_subject
from storage.models import utcnow
from storage.quotas import LimitChange

SUBCOMMANDS = ("help", "usage", "models", "quota", "report", "safety")
ADMIN_ONLY = "Only Conjure admins can do that. Ask one of them, or see /conjure usage for your own."
QUOTA_USAGE = (
    "Usage: /conjure quota @user|workspace [jobs=50/day] [usd=10/month] [inflight=2] "
    "(unlimited = no limit, 0 = none allowed, default = back to the default)"
)

# Slack: <@U123> or <@U123|name>; Discord: <@123> or <@!123>; or a bare ID. At most 64
# characters (bot.commands.names.MAX_ID): a longer one is no user's, and cannot be stored.
_MENTION = re.compile(r"^<@!?([A-Za-z0-9]{1,64})(?:\|[^>]*)?>$|^([A-Z0-9]{6,64}|\d{15,22})$")
_SETTING = re.compile(r"^(jobs|usd|inflight|in_flight)=([^/\s]+)(?:/(day|month))?$", re.I)


class CommandInputError(Exception):
    """Bad /conjure arguments; the message is shown as is."""


def is_admin(service: JobService, request: CommandRequest) -> bool:
    return service.settings.is_admin(request.platform, request.workspace, request.user_id)


async def run_conjure_command(
    service: JobService, request: CommandRequest, schemas: ModelSchemas | None = None
) -> Text:
    """The answer to `/conjure <text>`; unknown subcommands get the help. `schemas`, the
    models' own input schemas, make `/conjure models` show each model's own options."""
    words = request.text.split()
    word = words[0].lower() if words else "help"
    try:
        if word == "usage":
            usage = await service.quotas.usage_text(
                request.platform, request.workspace, request.user_id, utcnow()
            )
            return Text.of(usage)
        if word == "models":
            return Text.of(models_text(service, schemas))
        if word == "quota":
            if not is_admin(service, request):
                return Text.of(ADMIN_ONLY)
            return await quota_command(service, request, words[1:])
        if word == "report":
            if not is_admin(service, request):
                return Text.of(ADMIN_ONLY)
            report = await service.quotas.report(request.platform, request.workspace, utcnow())
            return report.as_text(Mention)
        if word == "safety":
            if not is_admin(service, request):
                return Text.of(ADMIN_ONLY)
            return await safety_command(service, request, words[1:])
    except CommandInputError as exc:
        return Text.of(str(exc))
    prefix = "" if word == "help" else f"Unknown subcommand “{word}”.\n"
    return Text.of(prefix + help_text(service, is_admin(service, request)))


def help_text(service: JobService, admin: bool = False) -> str:
    lines = ["Conjure runs Replicate models from chat. Commands:"]
    for spec in service.catalog.commands.values():
        lines.append(f"• {spec.usage()}: {spec.description}")
    lines.append("• /conjure usage: your jobs and spend, what is left, when it resets")
    lines.append("• /conjure models: the models you can pick with --model")
    if admin:
        lines.append(
            "• /conjure quota @user|workspace jobs=N/day usd=X/month inflight=N (admins; "
            "N can be unlimited, 0 allows none)"
        )
        lines.append("• /conjure report: top users and models this month (admins)")
        lines.append(
            "• /conjure safety [ban <word> | pattern <regex> | remove <id>]: this workspace's "
            "banned words and patterns (admins)"
        )
    return "\n".join(lines)


def models_text(service: JobService, schemas: ModelSchemas | None = None) -> str:
    """Each model, its price, and the options it takes in each command (its own ranges and
    choices where its schema is known)."""
    lines = ["Enabled models:"]
    for model in service.catalog.models.values():
        price = model.price
        if price.per_token:
            cost = _per_token_text(price)
        elif price.per_output_usd is not None:
            cost = f"{format_usd(usd_to_micros(price.per_output_usd))} per output"
        else:
            # What one usually costs, and the most it can: where Replicate stops it.
            each = "an output" if model.outputs_field else "a run"
            cost = (
                f"{format_usd(usd_to_micros(price.per_second_usd or 0))} per second, about "
                f"{format_usd(price.estimate_micros(1))} {each}, at most "
                f"{format_usd(price.ceiling_micros(1))} (stopped after "
                f"{format_number(price.run_limit_seconds)} s)"
            )
        lines.append(f"• {model.key} ({model.kind}): {model.description}; {cost}")
        lines.extend(f"  {usage}" for usage in models_usage(service.catalog, model, schemas))
    return "\n".join(lines)


def _per_token_text(price: Price) -> str:
    """ "$0.65/M input tokens, $2.75/M output tokens, answers up to 512 tokens"."""

    def per_million(usd: float | None) -> str:
        return format_usd(usd_to_micros(usd or 0))

    return (
        f"{per_million(price.per_million_input_tokens_usd)}/M input tokens, "
        f"{per_million(price.per_million_output_tokens_usd)}/M output tokens, "
        f"answers up to {price.max_output_tokens} tokens"
    )


async def quota_command(service: JobService, request: CommandRequest, args: list[str]) -> Text:
    """Show or set a user's or the workspace's limits; every change is audited."""
    if not args:
        raise CommandInputError(QUOTA_USAGE)
    target, settings = args[0], args[1:]
    if target.lower() == "workspace":
        scope, subject = WORKSPACE, workspace_subject(request.platform, request.workspace)
        label: Mention | str = "This workspace"
    else:
        match = _MENTION.match(target)
        if not match:
            raise CommandInputError(f"“{target}” is not a user mention.\n{QUOTA_USAGE}")
        user_id = match.group(1) or match.group(2)
        scope, subject = USER, user_subject(request.platform, request.workspace, user_id)
        label = Mention(user_id)
    if settings:
        changes = parse_quota_settings(settings)
        actor = user_subject(request.platform, request.workspace, request.user_id)
        limits = await service.quotas.override(scope, subject, changes, actor)
    else:
        limits = await service.quotas.limits(scope, subject)
    verb = "now has" if settings else "has"
    return Text.of(label, f" {verb} limits: {limits.describe()}.")


def parse_quota_settings(words: list[str]) -> dict[str, LimitChange]:
    """`jobs=50/day usd=unlimited/month inflight=0` → override fields; `default` clears one."""
    changes: dict[str, LimitChange] = {}
    for word in words:
        match = _SETTING.match(word)
        if not match:
            raise CommandInputError(f"“{word}” is not a limit.\n{QUOTA_USAGE}")
        name, raw, per = match.group(1).lower(), match.group(2), match.group(3)
        expected = {"jobs": "day", "usd": "month"}.get(name)
        if per and per.lower() != expected:
            raise CommandInputError(
                f"{name} is counted per {expected or 'job at once'}, not {per}."
            )
        field = {"jobs": "jobs_per_day", "usd": "usd_per_month_micros"}.get(name, "max_in_flight")
        if field in changes:
            raise CommandInputError(f"{name} is given twice.")
        changes[field] = _limit_value(name, raw)
    return changes


def _limit_value(name: str, raw: str) -> LimitChange:
    try:
        return parse_limit(name, raw)
    except LimitError as exc:
        raise CommandInputError(f"{name}={exc}") from None
