"""Settings from the environment (and an optional `.env`), validated once at start-up.

Secrets are `SecretStr` so that a settings object can be logged or shown in a traceback without
leaking a token. `load_settings` turns pydantic's validation error into one plain sentence per
bad variable, naming the variable as the operator typed it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.money import MICROS_PER_USD
from bot.quotas.words import LimitError, parse_setting

PLATFORMS = ("slack", "discord", "console")
LIMIT_SETTINGS = tuple(
    f"conjure_{scope}_{key}"
    for scope in ("user", "workspace")
    for key in ("jobs_per_day", "usd_per_month", "max_in_flight")
)


def _split_pairs(value: str) -> list[str]:
    return [item.strip() for item in value.replace(";", ",").split(",") if item.strip()]


def _is_id(text: str) -> bool:
    """A platform's own id (U0123, 80351110224678912): a mention such as <@U0123>, a name with
    '#' or '@', or two ids with a space between could never match one, silently."""
    return re.fullmatch(r"[A-Za-z0-9_.-]+", text) is not None


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and never its value."""


class Settings(BaseSettings):
    """Every knob Conjure reads from the environment; names match DESIGN.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    replicate_api_token: SecretStr | None = None
    replicate_base_url: AnyHttpUrl = AnyHttpUrl("https://api.replicate.com")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")

    discord_token: SecretStr | None = None
    discord_api_url: AnyHttpUrl = AnyHttpUrl("https://discord.com/api/v10")
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_guild_id: int | None = None

    conjure_database_url: str = "sqlite+aiosqlite:///conjure.db"
    conjure_public_url: AnyHttpUrl | None = None
    conjure_webhook_secret: SecretStr | None = None
    conjure_config: Path | None = None

    # Default limits: unset is unlimited, "unlimited" says so, 0 allows none (read by
    # bot.quotas.words.parse_setting); conjure.toml [quotas] fills in what the environment leaves.
    conjure_user_jobs_per_day: int | None = None
    conjure_user_usd_per_month: Decimal | None = None  # dollars, to the micro-dollar
    conjure_user_max_in_flight: int | None = None
    conjure_workspace_jobs_per_day: int | None = None
    conjure_workspace_usd_per_month: Decimal | None = None
    conjure_workspace_max_in_flight: int | None = None
    # Jobs that wait for a slot when one's jobs in flight are at their limit (0: refuse instead).
    conjure_user_max_queued: int = Field(default=5, ge=0)
    conjure_workspace_max_queued: int = Field(default=50, ge=0)
    conjure_timezone: str = "UTC"
    # "slack:U0123,discord:80351110224678912": who may run /conjure quota and /conjure report.
    conjure_admins: str = ""
    # "slack:C0123,discord:1234": where budget alerts go, one channel per platform.
    conjure_alert_channels: str = ""

    # Status edits (progress, not outcomes) one workspace gets a minute across its running jobs;
    # Slack allows chat.update about 50 times a minute (bot.updates).
    conjure_status_edits_per_minute: float = Field(default=40.0, gt=0, allow_inf_nan=False)
    # Seconds between reads of a prediction; inf would never read a polled job again.
    conjure_poll_interval: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    conjure_max_download_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    # A job whose estimate reaches this many dollars asks its person first (bot.confirm);
    # 0 or blank: never ask.
    conjure_confirm_above_usd: Decimal | None = Decimal("0.50")
    # How `conjure serve` writes its log (bot.logs): "plain" lines or "json" objects.
    conjure_log_format: str = "plain"
    # The admin page (/admin, bot.admin): off unless set; its sign-in token and Bearer token.
    conjure_admin_token: SecretStr | None = None
    # `conjure serve`: processes serving the one port (bot.cli.workers); --workers overrides it.
    conjure_workers: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _blank_limits_unset(cls, data: object) -> object:
        """A blank limit variable is unset, not set to unlimited: it must leave the limit in
        conjure.toml in force (bot.quotas.limits.default_limits lets only a set one win)."""
        if not isinstance(data, dict):
            return data
        return {
            key: value
            for key, value in data.items()
            if not (
                str(key).lower() in LIMIT_SETTINGS and isinstance(value, str) and not value.strip()
            )
        }

    @field_validator(*LIMIT_SETTINGS, mode="before")
    @classmethod
    def _limit(cls, value: object, info: ValidationInfo) -> int | Decimal | None:
        """One reader for every limit (bot.quotas.words); a blank variable counts as unset."""

        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        usd = info.field_name is not None and info.field_name.endswith("_usd_per_month")
        try:
            limit = parse_setting("usd" if usd else "jobs", value)
        except LimitError as exc:
            raise ValueError(exc.reason) from None
        if usd and limit is not None:
            return Decimal(limit) / MICROS_PER_USD
        return limit

    @field_validator("conjure_confirm_above_usd", mode="before")
    @classmethod
    def _confirm_price(cls, value: object) -> Decimal | None:
        """Dollars as a limit is written (bot.quotas.words); blank or 0 turns asking off."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            limit = parse_setting("usd", value)
        except LimitError:  # its reason speaks of limits ("0 allows none"); 0 here never asks
            raise ValueError(
                "must be a dollar amount such as 0.50; 0 or blank never asks"
            ) from None
        if not limit or limit < 0:  # unset, "unlimited" (None) or 0: nothing asks
            return None
        return Decimal(limit) / MICROS_PER_USD

    @field_validator("conjure_log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> str:
        text = str(value).strip().lower() if value is not None else ""
        if text not in ("plain", "json", ""):
            raise ValueError("must be plain or json")
        return text or "plain"

    @field_validator("conjure_webhook_secret")
    @classmethod
    def _webhook_secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must start with 'whsec_' (Replicate's webhook signing secret)")
        return value

    @field_validator("conjure_admin_token", mode="before")
    @classmethod
    def _admin_token_shape(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # blank: the admin page is off
        secret = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if len(secret) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 24`)")
        return value

    @field_validator("conjure_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as UTC or Europe/Berlin") from None
        return value

    @field_validator("conjure_alert_channels")
    @classmethod
    def _platform_pairs(cls, value: str) -> str:
        seen: set[str] = set()
        for item in _split_pairs(value):
            platform, _, ident = item.partition(":")
            if platform not in PLATFORMS or not _is_id(ident):
                raise ValueError(
                    f"each entry must look like slack:C0123 or discord:1234 ({item!r})"
                )
            if platform in seen:  # alert_channel reads the first: a second would never hear
                raise ValueError(f"one channel for each platform; {platform} is given twice")
            seen.add(platform)
        return value

    @field_validator("conjure_admins")
    @classmethod
    def _admin_entries(cls, value: str) -> str:
        for item in _split_pairs(value):
            platform, _, ident = item.partition(":")
            workspace, slash, user = ident.rpartition("/")
            if platform not in PLATFORMS or not _is_id(user) or (slash and not _is_id(workspace)):
                raise ValueError(
                    "each entry must look like slack:T0123/U0123 or discord:<server id>/<user id>"
                    f" (an admin of that workspace), or slack:U0123 (of every one) ({item!r})"
                )
        return value

    @field_validator("conjure_database_url")
    @classmethod
    def _database_url_shape(cls, value: str) -> str:
        from storage.urls import normalize_database_url

        return normalize_database_url(value)

    @property
    def replicate_api_base(self) -> str:
        """The base URL without a trailing slash or `/v1`, as Replicate's clients take it."""
        return str(self.replicate_base_url).rstrip("/").removesuffix("/v1")

    @property
    def public_url(self) -> str | None:
        return str(self.conjure_public_url).rstrip("/") if self.conjure_public_url else None

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.conjure_timezone)

    @property
    def admins(self) -> frozenset[str]:
        """Admin entries as written: "platform:workspace/user", or "platform:user" for an
        admin of every workspace Conjure serves (the operator's own account)."""
        return frozenset(_split_pairs(self.conjure_admins))

    def is_admin(self, platform: str, workspace: str, user_id: str) -> bool:
        """Whether this person may set quotas and read reports in this workspace.

        A Discord user id is the same in every server, so a bare `discord:<user>` would make
        someone an admin of every server the bot is in; `discord:<server>/<user>` keeps them to
        their own. The same holds for Slack workspaces under one app."""
        admins = self.admins
        return f"{platform}:{workspace}/{user_id}" in admins or f"{platform}:{user_id}" in admins

    def alert_channel(self, platform: str) -> str | None:
        for item in _split_pairs(self.conjure_alert_channels):
            name, _, channel = item.partition(":")
            if name == platform:
                return channel
        return None

    def config_path(self) -> Path | None:
        """The commands/quotas file: `CONJURE_CONFIG`, else `conjure.toml` when present."""
        if self.conjure_config is not None:
            return self.conjure_config
        default = Path("conjure.toml")
        return default if default.exists() else None


def load_settings(**overrides: object) -> Settings:
    """Build settings, raising `ConfigError` with one line per bad variable (values never shown)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
