"""Discord's slash commands, built from the catalog: the option pickers match what parsing takes.

discord.py reads a command's options from its callback's signature. The catalog is data, so each
command gets a generated signature (one keyword per catalog option, typed, with the catalog's
choices and bounds) and one shared body that hands the values to the adapter, which validates
them with the same parser as every other platform: Discord's pickers are a convenience, never
the check.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, Literal, Protocol

import discord
from discord import app_commands

from bot.catalog import Catalog, CommandSpec, OptionSpec

log = logging.getLogger(__name__)

DISCORD_MAX_INT = 2**53  # Discord's integer options hold JavaScript-safe integers
GUILDS_ONLY = app_commands.AppCommandContext(guild=True)  # quotas are per server


SORRY = "Something went wrong on Conjure's side; please try again in a minute."


class ConjureTree(app_commands.CommandTree):
    """The command tree; failures outside our handlers still get a plain answer."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        log.error("Discord command failed", exc_info=error)
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(SORRY, ephemeral=True)
            else:
                await interaction.response.send_message(SORRY, ephemeral=True)


class CommandHandler(Protocol):
    """What the commands call: the Discord listener."""

    async def run_command(
        self,
        interaction: discord.Interaction,
        spec: CommandSpec,
        prompt: str,
        options: dict[str, Any],
    ) -> None: ...

    async def run_conjure(self, interaction: discord.Interaction, text: str) -> None: ...


def build_commands(
    catalog: Catalog, handler: CommandHandler
) -> list[app_commands.Command[Any, ..., Any] | app_commands.Group]:
    """Every catalog command, and /conjure."""
    commands: list[app_commands.Command[Any, ..., Any] | app_commands.Group] = [
        catalog_command(spec, handler) for spec in catalog.commands.values()
    ]
    commands.append(conjure_group(handler))
    return commands


def catalog_command(
    spec: CommandSpec, handler: CommandHandler
) -> app_commands.Command[Any, ..., Any]:
    """`/<name> prompt:<text> [option:value ...]` for one catalog command."""
    # Python names for the options (catalog names may hold '-'); Discord sees the real names.
    by_key = {f"option_{index}": option for index, option in enumerate(spec.options)}

    async def callback(
        interaction: discord.Interaction, prompt: str | None = None, **values: Any
    ) -> None:
        given = {by_key[key].name: value for key, value in values.items()}
        await handler.run_command(interaction, spec, prompt or "", given)

    # A file that stands for the prompt (/transcribe's audio URL or file) makes it optional;
    # the shared parser says what is missing when neither is given.
    optional = any(o.is_file and o.field == spec.prompt_field for o in spec.options)

    keyword = inspect.Parameter.KEYWORD_ONLY
    callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                "interaction",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=discord.Interaction,
            ),
            inspect.Parameter(
                "prompt",
                keyword,
                annotation=str | None if optional else str,
                default=None if optional else inspect.Parameter.empty,
            ),
            *(
                inspect.Parameter(key, keyword, annotation=option_type(option), default=None)
                for key, option in by_key.items()
            ),
        ]
    )
    descriptions = {key: option.description for key, option in by_key.items()}
    app_commands.describe(prompt=f"The {spec.prompt_label}", **descriptions)(callback)
    app_commands.rename(**{key: option.name for key, option in by_key.items()})(callback)
    return app_commands.Command(
        name=spec.name,
        description=spec.description,
        callback=callback,
        allowed_contexts=GUILDS_ONLY,
    )


def option_type(option: OptionSpec) -> Any:
    """The annotation discord.py turns into the option: choices, or a type with its bounds."""
    if option.type in ("choice", "model"):
        return Literal[option.choices]  # type: ignore[valid-type]
    if option.is_file:
        return discord.Attachment  # option type 11; type and size are checked by the core
    kind: type = {"int": int, "float": float, "bool": bool}.get(option.type, str)
    if kind is bool or kind is str or (option.minimum is None and option.maximum is None):
        return kind

    def bound(value: float | None) -> Any:
        if value is None:
            return None
        return kind(max(-DISCORD_MAX_INT, min(DISCORD_MAX_INT, value)))

    return app_commands.Range[kind, bound(option.minimum), bound(option.maximum)]  # type: ignore[valid-type]


# Text, not numbers: a limit may be `unlimited` or `default` as well as a number, and the shared
# parser (bot.quotas.limits.parse_limit) checks it, with the same words on every platform.
LimitText = app_commands.Range[str, 1, 20]
LIMIT_HINT = "a number, unlimited, 0 (none) or default"


def quota_text(
    target: str, jobs_per_day: str | None, usd_per_month: str | None, inflight: str | None
) -> str:
    """The `/conjure quota ...` text the shared command parser reads."""
    words = ["quota", target]
    for name, value, per in (
        ("jobs", jobs_per_day, "/day"),
        ("usd", usd_per_month, "/month"),
        ("inflight", inflight, ""),
    ):
        if value is not None:
            words.append(f"{name}={''.join(str(value).split())}{per}")
    return " ".join(words)


def conjure_group(handler: CommandHandler) -> app_commands.Group:
    """/conjure usage|models|help, and for admins quota|workspace-quota|report|safety; each
    subcommand is one small function passing its text on (the admin check is in the shared
    command)."""
    group = app_commands.Group(
        name="conjure",
        description="Conjure itself: usage, models, help; quotas and reports for admins",
        allowed_contexts=GUILDS_ONLY,
    )

    @group.command(name="quota", description="Admins: show or set a member's limits")
    @app_commands.describe(
        user="Whose limits",
        jobs_per_day=f"Jobs a day: {LIMIT_HINT}",
        usd_per_month=f"Budget in USD a month: {LIMIT_HINT}",
        inflight=f"Jobs running at once: {LIMIT_HINT}",
    )
    async def quota(
        interaction: discord.Interaction,
        user: discord.User,
        jobs_per_day: LimitText | None = None,
        usd_per_month: LimitText | None = None,
        inflight: LimitText | None = None,
    ) -> None:
        text = quota_text(f"<@{user.id}>", jobs_per_day, usd_per_month, inflight)
        await handler.run_conjure(interaction, text)

    @group.command(name="workspace-quota", description="Admins: show or set this server's limits")
    @app_commands.describe(
        jobs_per_day=f"Jobs a day: {LIMIT_HINT}",
        usd_per_month=f"Budget in USD a month: {LIMIT_HINT}",
        inflight=f"Jobs running at once: {LIMIT_HINT}",
    )
    async def workspace_quota(
        interaction: discord.Interaction,
        jobs_per_day: LimitText | None = None,
        usd_per_month: LimitText | None = None,
        inflight: LimitText | None = None,
    ) -> None:
        text = quota_text("workspace", jobs_per_day, usd_per_month, inflight)
        await handler.run_conjure(interaction, text)

    @group.command(name="safety", description="Admins: this server's banned words and patterns")
    @app_commands.describe(
        action="list, ban a word, add a pattern (regex), or remove a rule by id",
        value="The word or phrase, the pattern, or the rule's id",
    )
    async def safety(
        interaction: discord.Interaction,
        action: Literal["list", "ban", "pattern", "remove"] = "list",
        value: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        await handler.run_conjure(interaction, f"safety {action} {value or ''}".strip())

    @group.command(name="report", description="Admins: top members and models this month")
    async def report(interaction: discord.Interaction) -> None:
        await handler.run_conjure(interaction, "report")

    @group.command(name="usage", description="Your jobs today and what is left")
    async def usage(interaction: discord.Interaction) -> None:
        await handler.run_conjure(interaction, "usage")

    @group.command(name="models", description="The models you can choose")
    async def models(interaction: discord.Interaction) -> None:
        await handler.run_conjure(interaction, "models")

    @group.command(name="help", description="What Conjure can do")
    async def help_(interaction: discord.Interaction) -> None:
        await handler.run_conjure(interaction, "help")

    return group
