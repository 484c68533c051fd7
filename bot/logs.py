"""Conjure's log: plain lines or JSON objects (CONJURE_LOG_FORMAT), one line per job transition.

A job's life reads as a handful of `conjure.jobs` lines (`job_event`): recorded or queued,
created, finished with its status, cost and duration, delivered. What is never logged: a body,
a prompt (the person's content), a token, a webhook secret, or a capability URL (Slack's
response_url, a Discord interaction's webhook, Replicate's stream and signed file URLs).
httpx's request lines carry such URLs, so httpx and httpcore log warnings only; and every line,
whoever logs it, passes `redact`, which keeps a URL's scheme and host and drops its user info,
its query and any long (token-like) path segment.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.money import format_usd

if TYPE_CHECKING:
    from bot.adapter import CommandRequest
    from bot.config import Settings
    from storage.models import Job
    from storage.usage import Hold

LOG_FORMATS = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# httpx's and httpcore's INFO lines are request URLs (tokens, capability paths); alembic's
# plugins announce themselves at every start. Warnings only, from these.
QUIET = ("httpx", "httpcore", "alembic.runtime.plugins")
SECONDS = {"duration": 1, "predict_time": 2}  # fields in seconds, and the decimals shown

jobs_log = logging.getLogger("conjure.jobs")
commands_log = logging.getLogger("conjure.commands")
log = logging.getLogger("conjure")

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^\s/?#'\"<>]*)([^\s?#'\"<>]*)(\?[^\s#'\"<>]*)?")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_NEEDS_QUOTES = re.compile(r'[\s"=]').search
_SECRET_SEGMENT = 16  # a path segment this long is taken for a token or a signature


def _redact_url(match: re.Match[str]) -> str:
    scheme, netloc, path, query = match.group(1), match.group(2), match.group(3), match.group(4)
    host = netloc.rpartition("@")[2]
    segments = ["…" if len(part) >= _SECRET_SEGMENT else part for part in path.split("/")]
    return f"{scheme}://{host}{'/'.join(segments)}{'?…' if query else ''}"


def redact(text: str) -> str:
    """`text` with every URL cut to what is safe to keep (see the module's docstring)."""
    return _URL.sub(_redact_url, text) if "://" in text else text


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(PLAIN)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and a job event's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(getattr(record, "conjure", None) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, default=str, ensure_ascii=False))


def configure(log_format: str = "plain", level: int = logging.INFO) -> None:
    """Send every log line to stderr in `log_format`, from `level` up (httpx: warnings only)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


# ---- job events --------------------------------------------------------------------------


def _plain_value(value: Any) -> str:
    text = str(value)
    if type(value) in (int, float):  # most fields: nothing to quote, no search needed
        return text
    return json.dumps(text, ensure_ascii=False) if not text or _NEEDS_QUOTES(text) else text


def job_event(
    job: Job,
    event: str,
    *,
    level: int = logging.INFO,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log one transition of `job`: `job <id> <event> platform=… user=… key=value …`.

    `cost` and `reserved` are in micro-dollars (shown as dollars), `duration` and
    `predict_time` in seconds; None values are left out. Never pass a prompt, a body, a token
    or a URL here."""
    data: dict[str, Any] = {
        "event": event,
        "job": job.id,
        "platform": job.platform,
        "workspace": job.workspace,
        "user": job.user_id,
        "command": job.command,
        "model": job.model,
    }
    for key, value in fields.items():
        if value is None:
            continue
        if key in ("cost", "reserved"):
            value = format_usd(value)
        elif key in SECONDS:
            value = round(float(value), SECONDS[key])
        data[key] = value
    shown = " ".join(
        f"{key}={_plain_value(value)}{'s' if key in SECONDS else ''}"
        for key, value in data.items()
        if key not in ("event", "job")
    )
    jobs_log.log(
        level, "job %s %s %s", job.id, event, shown, extra={"conjure": data}, exc_info=exc_info
    )


def _id(value: str) -> str:
    """An id as a platform writes it (U0123, 8035111022467891), else "?": a request refused
    for bad input may carry anything, and what it carries is not echoed into the log."""
    return value if _ID.fullmatch(value) else "?"


def command_event(request: CommandRequest, event: str, *, known: bool, **fields: Any) -> None:
    """Log what became of a command that has no job (refused before one was recorded):
    `command /imagine refused platform=… user=… reason=…`. Never the text typed, nor a command
    name that is not one of the catalog's (`known`) or an id that does not look like one."""
    command = request.command if known else "?"
    data: dict[str, Any] = {
        "event": event,
        "platform": request.platform,
        "workspace": _id(request.workspace),
        "user": _id(request.user_id),
        "command": command,
        **{key: value for key, value in fields.items() if value is not None},
    }
    shown = " ".join(
        f"{key}={_plain_value(value)}" for key, value in data.items() if key != "event"
    )
    commands_log.info("command /%s %s %s", command, event, shown, extra={"conjure": data})


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    if (start.tzinfo is None) != (end.tzinfo is None):
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return max(0.0, (end - start).total_seconds())


def limit_reason(hold: Hold) -> str:
    """Which limit refused a job, as `user jobs_per_day 5`."""
    kind = getattr(hold.kind, "value", hold.kind)
    return f"{hold.scope} {kind} limit {'none' if hold.limit is None else hold.limit}"


# ---- start-up ----------------------------------------------------------------------------


def database_summary(url: str) -> str:
    """The database's kind, host and name: never its user, password or query."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return "unknown"
    kind = parsed.get_backend_name()
    if kind == "sqlite":
        return f"sqlite:{parsed.database or 'memory'}"
    host = parsed.host or "localhost"
    if "@" in host:  # a password's unescaped '@': what follows it is read as the host
        return "unknown"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{kind}://{host}{port}/{parsed.database or ''}"


def startup_summary(
    settings: Settings, platforms: Iterable[str], commands: int, models: int, listen: str
) -> dict[str, Any]:
    """What `conjure serve` says once started: platforms, database, webhooks or polling."""
    public = settings.public_url
    updates = (
        f"webhooks at {redact(public)}/webhooks/replicate"
        if public
        else f"polling every {settings.conjure_poll_interval:g}s"
    )
    return {
        "event": "started",
        "listen": listen,
        "platforms": ",".join(platforms),
        "database": database_summary(settings.conjure_database_url),
        "updates": updates,
        "commands": commands,
        "models": models,
    }


def log_startup(summary: dict[str, Any]) -> None:
    shown = " ".join(
        f"{key}={_plain_value(value)}" for key, value in summary.items() if key != "event"
    )
    log.info("conjure started %s", shown, extra={"conjure": summary})
