"""Limits: what each scope may do, where the numbers come from, and how people write them.

Defaults come from the environment or conjure.toml's [quotas]; admins override them per user or
per workspace, in chat (`/conjure quota`) or from the shell (`conjure quota set`), and both read a
limit with `parse_limit`, so the two can never accept different things.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from bot.config import ConfigError, Settings
from bot.money import format_usd, usd_to_micros
from storage.models import QuotaOverride

MAX_LIMIT = 1_000_000  # jobs, dollars or jobs at once: anything larger is a typo
CLEAR_WORDS = frozenset({"default", "reset"})


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


class LimitError(ValueError):
    """A limit as typed is not one; the message says why, for the person who typed it."""


def parse_limit(kind: str, raw: str) -> int | None:
    """`50`, `$10`, `0` (unlimited) or `default` (clear the override) → the stored value.

    `kind` is "usd" for a monthly budget (stored in micro-dollars), anything else for a count.
    """
    word = raw.strip()
    if word.lower() in CLEAR_WORDS:
        return None
    try:
        value = float(word.removeprefix("$")) if kind == "usd" else int(word)
    except ValueError:
        raise LimitError(f"{raw}: not a number.") from None
    if not 0 <= value <= MAX_LIMIT:
        raise LimitError(f"{raw}: must be between 0 and 1,000,000.")
    return usd_to_micros(word.removeprefix("$")) if kind == "usd" else int(value)
