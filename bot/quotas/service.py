"""Quota policy: which limits apply to a command, what a refusal says, usage and reports.

The mechanism (atomic holds) lives in storage.usage; this module decides the numbers: defaults
from the environment or conjure.toml's [quotas], admins' overrides from the database, windows in
the configured time zone.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bot.config import ConfigError, Settings
from bot.messages import format_usd, until
from bot.quotas.windows import Window, day_window, month_window
from storage.jobs import user_subject, workspace_subject
from storage.models import QuotaOverride
from storage.quotas import QuotaStore, SpendRow
from storage.usage import LIVE, Hold, HoldKind

USER, WORKSPACE = "user", "workspace"


class QuotaConfigError(ConfigError):
    """conjure.toml's [quotas] table is malformed; the message names the key."""


@dataclass(frozen=True)
class Limits:
    """One scope's limits; 0 means unlimited."""

    jobs_per_day: int = 0
    usd_per_month_micros: int = 0
    max_in_flight: int = 0

    def with_override(self, override: QuotaOverride | None) -> Limits:
        if override is None:
            return self
        return Limits(
            jobs_per_day=_pick(override.jobs_per_day, self.jobs_per_day),
            usd_per_month_micros=_pick(override.usd_per_month_micros, self.usd_per_month_micros),
            max_in_flight=_pick(override.max_in_flight, self.max_in_flight),
        )

    def describe(self) -> str:
        return (
            f"jobs {_or_unlimited(self.jobs_per_day)}/day, "
            f"budget {_usd_or_unlimited(self.usd_per_month_micros)}/month, "
            f"in flight {_or_unlimited(self.max_in_flight)}"
        )


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override


def _or_unlimited(value: int) -> str:
    return str(value) if value else "unlimited"


def _usd_or_unlimited(micros: int) -> str:
    return format_usd(micros) if micros else "unlimited"


def usd_to_micros(usd: float) -> int:
    return round(usd * 1_000_000)


_ENV_FIELDS = {
    "jobs_per_day": ("jobs_per_day", int),
    "usd_per_month_micros": ("usd_per_month", usd_to_micros),
    "max_in_flight": ("max_in_flight", int),
}


def default_limits(settings: Settings) -> dict[str, Limits]:
    """Per-scope defaults: an environment variable that is set wins over conjure.toml."""
    from_file = _file_limits(settings.config_path())
    explicit = settings.model_fields_set
    result = {}
    for scope in (USER, WORKSPACE):
        values = {}
        for field, (suffix, convert) in _ENV_FIELDS.items():
            name = f"conjure_{scope}_{suffix}"
            in_file = from_file.get(scope, {})
            if name in explicit or field not in in_file:
                values[field] = convert(getattr(settings, name))
            else:
                values[field] = in_file[field]
        result[scope] = Limits(**values)
    return result


def _file_limits(path: Path | None) -> dict[str, dict[str, int]]:
    """[quotas.user] / [quotas.workspace] with jobs_per_day, usd_per_month, max_in_flight."""
    if path is None or not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")).get("quotas", {})
    except tomllib.TOMLDecodeError as exc:
        raise QuotaConfigError(f"{path}: {exc}") from None
    result: dict[str, dict[str, int]] = {}
    for scope, table in data.items():
        if scope not in (USER, WORKSPACE) or not isinstance(table, dict):
            raise QuotaConfigError(f"{path}: quotas.{scope}: expected [quotas.user] or .workspace")
        values: dict[str, int] = {}
        for key, value in table.items():
            if key not in ("jobs_per_day", "usd_per_month", "max_in_flight"):
                raise QuotaConfigError(f"{path}: quotas.{scope}.{key}: unknown limit")
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise QuotaConfigError(f"{path}: quotas.{scope}.{key}: must be a number >= 0")
            if key == "usd_per_month":
                values["usd_per_month_micros"] = usd_to_micros(value)
            else:
                values[key] = int(value)
        result[scope] = values
    return result


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

    async def holds(self, platform: str, workspace: str, user_id: str, now: datetime) -> list[Hold]:
        """Every counter a new job reserves against, user scope first (the lock order)."""
        day, month = self.windows(now)
        holds = []
        for scope, subject in (
            (USER, user_subject(platform, workspace, user_id)),
            (WORKSPACE, workspace_subject(platform, workspace)),
        ):
            limits = await self.limits(scope, subject)
            holds += [
                Hold(HoldKind.JOBS, scope, subject, day.key, limits.jobs_per_day),
                Hold(HoldKind.USD, scope, subject, month.key, limits.usd_per_month_micros),
                Hold(HoldKind.IN_FLIGHT, scope, subject, LIVE, limits.max_in_flight),
            ]
        return holds

    def refusal(self, hold: Hold, estimate: int, now: datetime) -> str:
        """Why a job was refused: the limit by name, and when it resets."""
        day, month = self.windows(now)
        mine = hold.scope == USER
        whose, its = ("your", "your") if mine else ("this workspace's", "its")
        if hold.kind is HoldKind.JOBS:
            who = "You have" if mine else "This workspace has"
            return (
                f"{who} used all {hold.limit} of {its} jobs for today. "
                f"The count resets at {self._clock(day.end)} ({until(day.end, now)})."
            )
        if hold.kind is HoldKind.USD:
            return (
                f"This job (about {format_usd(estimate)}) would pass {whose} monthly budget of "
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


def _line(label: str, shown: str, limit: int, used: int, fmt: object) -> str:
    if not limit:
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

    def as_text(self, mention: object = None) -> str:
        name = mention if callable(mention) else (lambda user: user)
        lines = [f"Spend report for {self.month}"]
        for title, rows, label in (
            ("Top users", self.users, name),
            ("Top models", self.models, lambda m: m),
        ):
            lines.append(f"{title}:")
            if not rows:
                lines.append("  (no jobs yet)")
            for row in rows:
                lines.append(
                    f"  {label(row.name)}: {row.jobs} job{'s' if row.jobs != 1 else ''}, "
                    f"{format_usd(row.spent_micros)}"
                )
        return "\n".join(lines)
