"""`conjure quota show|set` and `conjure report`: quota administration from the operator's shell.

The database layer is imported when one of these commands runs, not when the parser is built:
every `conjure` start builds the whole parser, and SQLAlchemy alone is a third of a second.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.config import PLATFORMS, ConfigError, load_settings
from bot.money import format_usd
from bot.quotas.words import LimitError, parse_limit
from storage.limit_change import LimitChange

if TYPE_CHECKING:
    from bot.quotas.service import Quotas


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    quota = commands.add_parser("quota", help="show or set quota limits")
    actions = quota.add_subparsers(title="actions", required=True)
    show = actions.add_parser("show", help="defaults and overrides, or one subject's limits")
    _subject_arguments(show, required=False)
    show.set_defaults(run=_quota_show)
    change = actions.add_parser("set", help="override a user's or a workspace's limits")
    _subject_arguments(change, required=True)
    words = "'unlimited' = no limit, 0 = none allowed, 'default' = clear the override"
    change.add_argument("--jobs-per-day", help=f"a number; {words}")
    change.add_argument("--usd-per-month", help=f"dollars; {words}")
    change.add_argument("--max-in-flight", help=f"a number; {words}")
    change.set_defaults(run=_quota_set)

    report = commands.add_parser("report", help="top users and models by spend this month")
    report.add_argument("--platform", choices=PLATFORMS)  # a typo must not read as no spend
    report.add_argument("--workspace")
    report.add_argument("--month", help="YYYY-MM (default: this month)")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(run=_report)


def _subject_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--platform", required=required, choices=PLATFORMS)
    parser.add_argument("--workspace", required=required, help="Slack team ID or Discord guild ID")
    parser.add_argument("--user", help="a user ID; without it, the workspace itself")


async def _open(*, recorded: bool = False) -> tuple[Quotas, object]:
    """`recorded`: what is read is what serve recorded, so the database must exist already."""
    from bot.cli.existing import require_recorded
    from bot.quotas.service import Quotas
    from storage.engine import create_engine
    from storage.migrate import migrate
    from storage.quotas import QuotaStore

    settings = load_settings()
    if recorded:
        require_recorded(settings.conjure_database_url)
    engine = create_engine(settings.conjure_database_url)
    await migrate(engine)
    return Quotas(settings, QuotaStore(engine)), engine


def _names_a_subject(args: argparse.Namespace) -> bool:
    return any(value is not None for value in (args.platform, args.workspace, args.user))


def _subject(args: argparse.Namespace) -> tuple[str, str]:
    """The scope and subject the flags name; ConfigError for a subject named in part, or an id
    that is empty or too long to be one. An empty --user ("$ID" unset) is not the workspace:
    that would set the limit of everyone in it."""
    from bot.commands.names import MAX_ID, user_id_of
    from bot.quotas.limits import USER, WORKSPACE
    from storage.jobs import user_subject, workspace_subject

    if args.platform is None:
        given = "--workspace" if args.workspace is not None else "--user"
        raise ConfigError(f"--platform: required with {given}")
    if args.workspace is None:
        raise ConfigError("--workspace: required with --platform")
    user = user_id_of(args.user) if args.user is not None else None
    for flag, value, what in (
        ("--workspace", args.workspace, "a workspace id"),
        ("--user", user, "a user id, or leave --user out"),
    ):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag}: empty; give {what}")
        if value is not None and len(value) > MAX_ID:
            raise ConfigError(f"{flag}: an id is at most {MAX_ID} characters")
    if user:
        return USER, user_subject(args.platform, args.workspace, user)
    return WORKSPACE, workspace_subject(args.platform, args.workspace)


async def _quota_show(args: argparse.Namespace) -> int:
    quotas, engine = await _open()
    try:
        if _names_a_subject(args):
            scope, subject = _subject(args)
            print(f"{scope} {subject}: {(await quotas.limits(scope, subject)).describe()}")
            return 0
        for scope, limits in quotas.defaults.items():
            print(f"default for each {scope}: {limits.describe()}")
        for override in await quotas.store.overrides():
            limits = await quotas.limits(override.scope, override.subject)
            print(f"{override.scope} {override.subject}: {limits.describe()}")
        return 0
    finally:
        await engine.dispose()  # type: ignore[attr-defined]


async def _quota_set(args: argparse.Namespace) -> int:
    changes: dict[str, LimitChange] = {}
    for field, flag, kind, raw in (
        ("jobs_per_day", "--jobs-per-day", "jobs", args.jobs_per_day),
        ("usd_per_month_micros", "--usd-per-month", "usd", args.usd_per_month),
        ("max_in_flight", "--max-in-flight", "inflight", args.max_in_flight),
    ):
        if raw is not None:
            try:
                changes[field] = parse_limit(kind, raw)
            except LimitError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
    if not changes:
        raise ConfigError("quota set: give --jobs-per-day, --usd-per-month or --max-in-flight")
    quotas, engine = await _open()
    try:
        scope, subject = _subject(args)
        limits = await quotas.override(scope, subject, changes, actor="cli")
        print(f"{scope} {subject}: {limits.describe()}")
        return 0
    finally:
        await engine.dispose()  # type: ignore[attr-defined]


async def _report(args: argparse.Namespace) -> int:
    from bot.quotas.windows import month_window

    moment = datetime.now(UTC)
    if args.month:
        try:
            moment = datetime.strptime(args.month + "-15", "%Y-%m-%d").replace(tzinfo=UTC)
            month_window(moment, load_settings().timezone)  # 9999-12 ends past the calendar
        except ValueError:
            raise ConfigError(f"--month: {args.month!r} is not YYYY-MM") from None
        except OverflowError:
            raise ConfigError(f"--month: {args.month!r} is out of range") from None
    quotas, engine = await _open(recorded=True)
    try:
        report = await quotas.report(args.platform, args.workspace, moment)
    finally:
        await engine.dispose()  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return 0
    print(f"Spend report for {report.month}")
    for title, rows in (("user", report.users), ("model", report.models)):
        print()
        print(f"{title:<40} {'jobs':>6} {'spent':>12}")
        for row in rows:
            print(f"{row.name:<40} {row.jobs:>6} {format_usd(row.spent_micros):>12}")
        if not rows:
            print("(no jobs)")
    return 0
