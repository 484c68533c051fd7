"""Limits: what each scope may do, where the numbers come from, and how people write them.

Defaults come from the environment or conjure.toml's [quotas]; admins override them per user or
per workspace, in chat (`/conjure quota`) or from the shell (`conjure quota set`). All of them
read a limit with bot.quotas.words, so none can accept what another refuses. In Python a limit
is None (unlimited) or a number (0 = none allowed); storage writes it its own way
(storage.usage.store_limit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.config import ConfigError, Settings
from bot.money import format_usd, usd_to_micros
from bot.quotas.words import UNLIMITED, Limit, LimitError, parse_setting
from bot.toml_file import TomlFileError, read_toml
from storage.models import QuotaOverride
from storage.usage import load_limit

USER, WORKSPACE = "user", "workspace"

log = logging.getLogger(__name__)


class QuotaConfigError(ConfigError):
    """conjure.toml's [quotas] table is malformed; the message names the key."""


@dataclass(frozen=True)
class Limits:
    """One scope's limits: None means unlimited, 0 none allowed."""

    jobs_per_day: Limit = None
    usd_per_month_micros: Limit = None
    max_in_flight: Limit = None

    def with_override(self, override: QuotaOverride | None) -> Limits:
        """These defaults with an admin's override over them (a NULL column keeps the default)."""
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


def _pick(stored: int | None, default: Limit) -> Limit:
    return default if stored is None else load_limit(stored)


def _or_unlimited(value: Limit) -> str:
    return UNLIMITED if value is None else str(value)


def _usd_or_unlimited(micros: Limit) -> str:
    return UNLIMITED if micros is None else format_usd(micros)


_FIELDS = {  # Limits field: (setting and conjure.toml key, parse_limit kind)
    "jobs_per_day": ("jobs_per_day", "jobs"),
    "usd_per_month_micros": ("usd_per_month", "usd"),
    "max_in_flight": ("max_in_flight", "inflight"),
}


def default_limits(settings: Settings) -> dict[str, Limits]:
    """Per-scope defaults: an environment variable that is set wins over conjure.toml; neither
    set means unlimited."""
    from_file = _file_limits(settings.config_path())
    explicit = settings.model_fields_set
    result = {}
    for scope in (USER, WORKSPACE):
        values: dict[str, Limit] = {}
        for field, (key, kind) in _FIELDS.items():
            name = f"conjure_{scope}_{key}"
            in_file = from_file.get(scope, {})
            if name in explicit or field not in in_file:
                value = getattr(settings, name)
                values[field] = (
                    usd_to_micros(value) if kind == "usd" and value is not None else value
                )
            else:
                values[field] = in_file[field]
            if values[field] == 0:
                log.warning(
                    "the default %s limit for each %s is 0, so none is allowed "
                    "(write %r for no limit)",
                    key,
                    scope,
                    UNLIMITED,
                )
        result[scope] = Limits(**values)
    return result


def _file_limits(path: Path | None) -> dict[str, dict[str, Limit]]:
    """[quotas.user] / [quotas.workspace] with jobs_per_day, usd_per_month, max_in_flight.

    A CONJURE_CONFIG that names no file is refused (as the catalog refuses it), not read as
    having no limits: `conjure quota show` would present unlimited defaults as in force."""
    if path is None:
        return {}
    try:
        data = read_toml(path).get("quotas", {})
    except TomlFileError as exc:
        raise QuotaConfigError(str(exc)) from None
    if not isinstance(data, dict):  # `quotas = 10`: a key where the tables go
        raise QuotaConfigError(f"{path}: quotas: expected [quotas.user] or [quotas.workspace]")
    keys = {key: (field, kind) for field, (key, kind) in _FIELDS.items()}
    result: dict[str, dict[str, Limit]] = {}
    for scope, table in data.items():
        if scope not in (USER, WORKSPACE) or not isinstance(table, dict):
            raise QuotaConfigError(f"{path}: quotas.{scope}: expected [quotas.user] or .workspace")
        values: dict[str, Limit] = {}
        for key, value in table.items():
            if key not in keys:
                raise QuotaConfigError(f"{path}: quotas.{scope}.{key}: unknown limit")
            field, kind = keys[key]
            try:
                values[field] = parse_setting(kind, value)
            except LimitError as exc:
                raise QuotaConfigError(f"{path}: quotas.{scope}.{key}: {exc}") from None
        result[scope] = values
    return result
