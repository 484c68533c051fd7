"""Quota policy: which limits apply to a command, what a refusal says, usage and reports.

The mechanism (atomic holds) lives in storage.usage; this module decides the numbers: defaults
from the environment or conjure.toml's [quotas], admins' overrides from the database, windows in
the configured time zone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from bot.config import Settings
from bot.markup import Part, Text
from bot.messages import until
from bot.money import format_usd
from bot.quotas.limits import USER, WORKSPACE, Limit, Limits, default_limits
from bot.quotas.windows import Window, day_window, month_window
from storage.jobs import user_subject, workspace_subject
from storage.quotas import LimitChange, QuotaStore, SpendRow
from storage.usage import LIVE, Hold, HoldKind


class Quotas:
    """The limits in force and the words for them."""

    def __init__(self, settings: Settings, store: QuotaStore) -> None:
        self.settings = settings
        self.store = store
        self.zone = settings.timezone
        self.defaults = default_limits(settings)

    def windows(self, now: datetime) -> tuple[Window, Window]:
        return day_window(now, self.zone), month_window(now, self.zone)

    async def limits(self, scope: str, subject: str) -> Limits:
        return self.defaults[scope].with_override(await self.store.override(scope, subject))

    async def override(
        self, scope: str, subject: str, changes: Mapping[str, LimitChange], actor: str
    ) -> Limits:
        """An admin's change to one subject's limits (audited); returns the limits now."""
        await self.store.set_override(scope, subject, changes, actor)
        return await self.limits(scope, subject)

    async def holds(self, platform: str, workspace: str, user_id: str, now: datetime) -> list[Hold]:
        """Every counter a new job reserves against, user scope first (the lock order)."""
        day, month = self.windows(now)
        holds = []
        keys = [
            (USER, user_subject(platform, workspace, user_id)),
            (WORKSPACE, workspace_subject(platform, workspace)),
        ]
        overrides = await self.store.overrides_of(keys)
        for scope, subject in keys:
            limits = self.defaults[scope].with_override(overrides.get((scope, subject)))
            holds += [
                Hold(HoldKind.JOBS, scope, subject, day.key, limits.jobs_per_day),
                Hold(HoldKind.USD, scope, subject, month.key, limits.usd_per_month_micros),
                Hold(HoldKind.IN_FLIGHT, scope, subject, LIVE, limits.max_in_flight),
            ]
        return holds

    def refusal(self, hold: Hold, estimate: int, now: datetime, ceiling: int | None = None) -> str:
        """Why a job was refused: the limit by name, and when it resets. `estimate` is what the
        job usually costs, `ceiling` the most it can (what the budget must hold for it)."""
        day, month = self.windows(now)
        mine = hold.scope == USER
        whose, its = ("your", "your") if mine else ("this workspace's", "its")
        if hold.limit == 0:  # none allowed: nothing to wait for, no reset to name
            what = {
                HoldKind.JOBS: "daily job limit is 0",
                HoldKind.USD: "monthly budget is $0",
                HoldKind.IN_FLIGHT: "limit of jobs running at once is 0",
            }[hold.kind]
            return (
                f"{whose.capitalize()} {what}, so no job can start. "
                "An admin can change that with /conjure quota."
            )
        if hold.kind is HoldKind.JOBS:
            who = "You have" if mine else "This workspace has"
            return (
                f"{who} used all {hold.limit} of {its} jobs for today. "
                f"The count resets at {self._clock(day.end)} ({until(day.end, now)})."
            )
        if hold.kind is HoldKind.USD:
            cost = f"about {format_usd(estimate)}"
            if ceiling is not None and ceiling > estimate:
                cost += f", up to {format_usd(ceiling)} if it runs long"
            return (
                f"This job ({cost}) would pass {whose} monthly budget of "
                f"{format_usd(hold.limit)}. The budget resets on {self._date(month.end)} "
                f"({until(month.end, now)})."
            )
        who = "You already have" if mine else "This workspace already has"
        return (
            f"{who} {hold.limit} job{'s' if hold.limit != 1 else ''} running, the most allowed "
            "at once. Try again when one finishes."
        )

    def _clock(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.zone):%H:%M} {self.settings.conjure_timezone}"

    def _date(self, moment: datetime) -> str:
        local = moment.astimezone(self.zone)
        return f"{local:%-d %B} at {local:%H:%M} {self.settings.conjure_timezone}"

    async def usage_text(self, platform: str, workspace: str, user_id: str, now: datetime) -> str:
        """`/conjure usage`: what the person used, what is left, when it resets."""
        day, month = self.windows(now)
        subject = user_subject(platform, workspace, user_id)
        limits = await self.limits(USER, subject)
        rows = await self.store.counters(USER, subject, [day.key, month.key, LIVE])
        jobs = rows[day.key].jobs if day.key in rows else 0
        money = rows.get(month.key)
        spent = money.spent_micros if money else 0
        held = money.reserved_micros if money else 0
        running = rows[LIVE].jobs if LIVE in rows else 0
        lines = [
            _line("Jobs today", f"{jobs}", limits.jobs_per_day, jobs, str)
            + f"; resets {until(day.end, now)}",
            _line(
                "Spent this month",
                format_usd(spent) + (f" (+{format_usd(held)} running)" if held else ""),
                limits.usd_per_month_micros,
                spent + held,
                format_usd,
            )
            + f"; resets {self._date(month.end)}",
            _line("Running now", f"{running}", limits.max_in_flight, running, str),
        ]
        return "\n".join(lines)

    async def report(self, platform: str | None, workspace: str | None, now: datetime) -> Report:
        _, month = self.windows(now)
        where = {k: v for k, v in (("platform", platform), ("workspace", workspace)) if v}
        users = await self.store.spend_by("user_id", month.start, month.end, where)
        models = await self.store.spend_by("model", month.start, month.end, where)
        return Report(month.key.removeprefix("month:"), users, models)


def _line(label: str, shown: str, limit: Limit, used: int, fmt: object) -> str:
    if limit is None:
        return f"{label}: {shown} (no limit)"
    left = max(0, limit - used)
    return f"{label}: {shown} of {fmt(limit)}; {fmt(left)} left"  # type: ignore[operator]


@dataclass(frozen=True)
class Report:
    """This month's top users and models by spend."""

    month: str
    users: list[SpendRow]
    models: list[SpendRow]

    def as_json(self) -> dict[str, object]:
        return {
            "month": self.month,
            "users": [vars(row) for row in self.users],
            "models": [vars(row) for row in self.models],
        }

    def as_text(self, person: Callable[[str], Part] = str) -> Text:
        """The report as lines; `person` shows a user id (a Mention in chat)."""
        lines: list[Text | str] = [f"Spend report for {self.month}"]
        for title, rows, label in (
            ("Top users", self.users, person),
            ("Top models", self.models, str),
        ):
            lines.append(f"{title}:")
            if not rows:
                lines.append("  (no jobs yet)")
            for row in rows:
                jobs = f"{row.jobs} job{'s' if row.jobs != 1 else ''}"
                lines.append(
                    Text.of("  ", label(row.name), f": {jobs}, {format_usd(row.spent_micros)}")
                )
        return Text.lines(lines)
