"""`/conjure help|usage|models`: the bot's own command, answered the same on every platform.

Adapters pass the text after `/conjure` and show the returned text privately (ephemeral).
"""

from __future__ import annotations

from datetime import timedelta

from bot.adapter import CommandRequest
from bot.jobs import JobService
from bot.messages import format_usd, until
from storage.jobs import day_period, user_subject
from storage.models import utcnow

SUBCOMMANDS = ("help", "usage", "models")


async def run_conjure_command(service: JobService, request: CommandRequest) -> str:
    """The answer to `/conjure <text>`; unknown subcommands get the help."""
    word = request.text.strip().split(maxsplit=1)[0].lower() if request.text.strip() else "help"
    if word == "usage":
        return await usage_text(service, request)
    if word == "models":
        return models_text(service)
    prefix = "" if word == "help" else f"Unknown subcommand “{word}”.\n"
    return prefix + help_text(service)


def help_text(service: JobService) -> str:
    lines = ["Conjure runs Replicate models from chat. Commands:"]
    for spec in service.catalog.commands.values():
        lines.append(f"• {spec.usage()}: {spec.description}")
    lines.append("• /conjure usage: your jobs today and what is left")
    lines.append("• /conjure models: the models you can pick with --model")
    return "\n".join(lines)


def models_text(service: JobService) -> str:
    lines = ["Enabled models:"]
    for model in service.catalog.models.values():
        price = model.price
        if price.per_output_usd is not None:
            cost = f"{format_usd(round(price.per_output_usd * 1_000_000))} per output"
        else:
            cost = f"{format_usd(round((price.per_second_usd or 0) * 1_000_000))} per second"
        lines.append(f"• {model.key} ({model.kind}): {model.description}; {cost}")
    return "\n".join(lines)


async def usage_text(service: JobService, request: CommandRequest) -> str:
    now = utcnow()
    counter = await service.store.counter(
        "user", user_subject(request.platform, request.workspace, request.user_id), day_period(now)
    )
    used = counter.jobs if counter else 0
    spent = counter.spent_micros if counter else 0
    limit = service.settings.conjure_user_jobs_per_day
    reset = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if limit:
        left = max(0, limit - used)
        head = f"Today you have used {used} of {limit} jobs; {left} left."
    else:
        head = f"Today you have used {used} jobs (no daily limit)."
    resets = f"The count resets {until(reset, now)} (00:00 UTC)."
    return f"{head} Spent today: {format_usd(spent)}. {resets}"
