"""`conjure jobs` and `conjure jobs show ID`: the jobs an operator would otherwise read with SQL.

As in bot/cli/operator.py, the database layer is imported when a command runs, never when the
parser is built. What is printed keeps the destination's capabilities (a Slack response_url, a
Discord interaction token: whoever holds one can post as Conjure) redacted, and abbreviates
`data:` URLs (an attached file, inline) to their type and size.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot.cli.existing import require_recorded
from bot.config import PLATFORMS, ConfigError, load_settings
from bot.money import format_usd

if TYPE_CHECKING:
    from storage.jobs import JobStore
    from storage.models import Job

EXIT_OK, EXIT_NOT_FOUND = 0, 1
DEFAULT_LIMIT = 50
MAX_LIMIT = 1_000_000  # more is a typo (20 digits are past what a database's LIMIT takes)
REDACTED = "<redacted>"
# Keys of a destination that are capabilities, besides storage.jobs.CAPABILITY_KEYS (read when
# a command runs): anything named like a token, secret or webhook is never printed either.
_SECRET_KEY = re.compile(r"token|secret|response_url|webhook|password", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    jobs = commands.add_parser(
        "jobs", help="list recent jobs (newest first), or show one: conjure jobs show ID"
    )
    jobs.add_argument("--platform", choices=PLATFORMS)  # a typo must not read as "no jobs"
    jobs.add_argument("--workspace", help="Slack team ID or Discord guild ID")
    jobs.add_argument("--user", help="a user ID")
    jobs.add_argument("--status", help="queued, starting, processing, succeeded, failed, ...")
    jobs.add_argument("--since", help="a date (2026-12-01, local) or a duration back (2h, 3d)")
    jobs.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="at most N jobs (50)")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    jobs.set_defaults(run=_list)
    actions = jobs.add_subparsers(title="actions")
    show = actions.add_parser("show", help="one job, whole (capabilities redacted)")
    show.add_argument("id", help="the job's id")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=_show)


# ---- parsing the filters --------------------------------------------------------------------


def parse_since(text: str, zone: ZoneInfo, now: datetime) -> datetime:
    """`2026-12-01` (midnight there, in `zone`), `2026-12-01T08:00`, or `2h`/`30m`/`3d`/`1w` back
    from `now`. Raises ConfigError, one line, for anything else."""
    value = text.strip()
    try:
        found = _DURATION.match(value.lower())
        if found:
            return now - timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    except OverflowError:  # 99999999d back, or a moment at the calendar's very edge
        raise ConfigError(f"--since: {text!r} is out of range") from None
    except ValueError:
        raise ConfigError(
            f"--since: {text!r} is neither a date (2026-12-01) nor a duration (2h, 3d)"
        ) from None


def _status(text: str | None) -> str | None:
    from storage.models import JobStatus

    if text is None:
        return None
    known = [status.value for status in JobStatus]
    if text.lower() not in known:
        raise ConfigError(f"--status: {text!r} is not one of {', '.join(known)}")
    return text.lower()


# ---- the commands ---------------------------------------------------------------------------


async def _open() -> tuple[JobStore, Any]:
    from storage import clock
    from storage.engine import create_engine
    from storage.jobs import JobStore
    from storage.migrate import migrate

    settings = load_settings()
    require_recorded(settings.conjure_database_url)  # never a new, empty file that says "no jobs"
    engine = create_engine(settings.conjure_database_url)
    await migrate(engine)
    # The jobs' times are the database's clock (storage.clock): "2h" back and a running job's
    # age are counted by it too, not by this machine's.
    await clock.sync_or_say(engine)
    return JobStore(engine), engine


async def _list(args: argparse.Namespace) -> int:
    from bot.commands.names import user_id_of  # @U0ADA, <@U0ADA|ada>: as conjure quota reads
    from storage.models import utcnow

    settings = load_settings()
    zone = settings.timezone
    status = _status(args.status)
    if args.since:
        parse_since(args.since, zone, datetime.now(UTC))  # a mistake is said before connecting
    if not 1 <= args.limit <= MAX_LIMIT:
        raise ConfigError(f"--limit: must be from 1 to {MAX_LIMIT:,}, not {args.limit}")
    store, engine = await _open()
    try:
        now = utcnow()
        since = parse_since(args.since, zone, now) if args.since else None
        jobs = await store.search(
            platform=args.platform,
            workspace=args.workspace,
            user_id=user_id_of(args.user) if args.user is not None else None,
            status=status,
            since=since,
            limit=args.limit,
        )
    finally:
        await engine.dispose()
    if args.json:
        for job in jobs:
            print(json.dumps(row_json(job, now), ensure_ascii=False))
        return EXIT_OK
    print(render_table(jobs, zone, settings.conjure_timezone, now))
    return EXIT_OK


async def _show(args: argparse.Namespace) -> int:
    from storage.models import utcnow

    settings = load_settings()
    store, engine = await _open()
    try:
        job = await store.get(args.id)
    finally:
        await engine.dispose()
    if job is None:
        print(f"conjure jobs show: no job with id {args.id!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    now = utcnow()
    if args.json:
        print(json.dumps(detail_json(job, now), ensure_ascii=False, indent=2))
        return EXIT_OK
    print(render_detail(job, settings.timezone, settings.conjure_timezone, now))
    return EXIT_OK


# ---- rendering ------------------------------------------------------------------------------

COLUMNS = ("id", "when", "where", "user", "command", "model", "status", "cost", "duration")


def _cost(job: Job) -> str:
    """The actual cost once known; before that, the most it may cost (what is reserved)."""
    if job.actual_micros is not None:
        return format_usd(job.actual_micros)
    return f"≤{format_usd(job.estimated_micros)}"


def _seconds(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _duration(job: Job, now: datetime) -> str:
    if job.duration_seconds is not None:
        return _seconds(job.duration_seconds)
    if job.status_rank >= 3:  # terminal without a completion time: nothing to measure
        return "-"
    return f"{_seconds((now - job.created_at).total_seconds())} so far"


def _user(job: Job) -> str:
    return f"{job.user_id} ({job.user_name})" if job.user_name else job.user_id


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    return "-" if moment is None else f"{moment.astimezone(zone):%Y-%m-%d %H:%M:%S}"


def render_table(jobs: list[Job], zone: ZoneInfo, zone_name: str, now: datetime) -> str:
    header = [c.upper() for c in COLUMNS]
    header[1] = f"WHEN ({zone_name})"
    rows = [
        [
            job.id,
            f"{job.created_at.astimezone(zone):%Y-%m-%d %H:%M}",
            f"{job.platform}:{job.workspace}",
            _user(job),
            job.command,
            job.model,
            job.status,
            _cost(job),
            _duration(job, now),
        ]
        for job in jobs
    ]
    if not rows:
        return "(no jobs)"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def row_json(job: Job, now: datetime) -> dict[str, Any]:
    """One job as `conjure jobs --json` prints it: these keys, always, in this order."""
    return {
        "id": job.id,
        "created_at": _iso(job.created_at),
        "platform": job.platform,
        "workspace": job.workspace,
        "channel": job.channel,
        "user_id": job.user_id,
        "user_name": job.user_name,
        "command": job.command,
        "model": job.model,
        "status": job.status,
        "actual_usd_micros": job.actual_micros,
        "reserved_usd_micros": job.estimated_micros,
        "duration_seconds": job.duration_seconds,
        "parent_id": job.parent_id,
        "followup": job.followup,
    }


def detail_json(job: Job, now: datetime) -> dict[str, Any]:
    """Every column of the job, capabilities redacted and data: URLs abbreviated."""
    values = job.model_dump()
    values["input"] = abbreviate(job.input)
    values["output"] = abbreviate(job.output)
    values["destination"] = redact(job.destination)
    for key, value in values.items():
        if isinstance(value, datetime):
            values[key] = _iso(value)
    return values


def abbreviate(value: Any) -> Any:
    """`value` with every `data:` URL in it (however deep) replaced by its type and size."""
    if isinstance(value, str):
        return _abbreviate_url(value)
    if isinstance(value, dict):
        return {key: abbreviate(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [abbreviate(item) for item in value]
    return value


def _abbreviate_url(text: str) -> str:
    found = _DATA_URL.match(text[:300])
    if not found:
        return text
    payload = len(text) - found.end()
    base64 = ";base64" in found.group(2).lower()
    size = payload * 3 // 4 - text.rstrip().count("=", len(text) - 2) if base64 else payload
    return f"<data: {found.group(1) or 'text/plain'}, {_bytes(size)}>"


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def redact(destination: dict[str, Any]) -> dict[str, Any]:
    """The destination with each capability's value replaced: where the messages are stays."""
    from storage.jobs import CAPABILITY_KEYS

    return {
        key: (
            REDACTED
            if value is not None and (key in CAPABILITY_KEYS or _SECRET_KEY.search(key))
            else abbreviate(value)
        )
        for key, value in destination.items()
    }


def _hold_value(hold: dict[str, Any], key: str) -> Any:
    """A hold's field as shown; its limit as an admin writes one ("unlimited", 0 for none
    allowed, dollars for a budget), not as stored (0 is unlimited there, -1 none allowed)."""
    from bot.quotas.words import UNLIMITED
    from storage.usage import HoldKind, load_limit

    if key != "limit" or not isinstance(hold[key], int):
        return hold[key]
    limit = load_limit(hold[key])
    if limit is None:
        return UNLIMITED
    return format_usd(limit) if hold.get("kind") == HoldKind.USD else limit


def render_detail(job: Job, zone: ZoneInfo, zone_name: str, now: datetime) -> str:
    lines: list[str] = []

    def field(name: str, value: Any) -> None:
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        lines.append(f"{name + ':':<18} {'-' if value is None or value == '' else value}")

    field("job", job.id)
    field("status", job.status + (f" ({job.progress}%)" if job.progress is not None else ""))
    field("where", f"{job.platform}:{job.workspace} channel {job.channel}")
    field("user", _user(job))
    field("command", f"/{job.command}")
    field("model", f"{job.model} ({job.model_ref})")
    field("prompt", job.prompt)
    field("input", abbreviate(job.input))
    field("outputs expected", job.outputs_expected)
    field("output", abbreviate(job.output))
    field("error", job.error)
    field("prediction", job.prediction_id)
    field("parent", f"{job.parent_id} ({job.followup})" if job.parent_id else None)
    field("request key", job.request_key)
    field("destination", redact(job.destination))
    lines.append("")
    field("cost", format_usd(job.actual_micros) if job.actual_micros is not None else None)
    field("reserved", f"{format_usd(job.estimated_micros)} (the cost ceiling)")
    field("usage period", job.usage_period)
    field("reservation", job.reservation)
    if not job.holds:
        field("holds", None)
    for hold in job.holds:
        field("hold", " ".join(f"{key}={_hold_value(hold, key)}" for key in sorted(hold)))
    if job.waiting_since is not None:
        field("waiting since", _local(job.waiting_since, zone))
        field("queue ahead", job.queue_ahead)
    lines.append("")
    field("delivery", job.delivery)
    field("delivery attempts", job.delivery_attempts)
    field("delivery error", job.delivery_error)
    field("delivery claimed", _local(job.delivery_claimed_at, zone))
    field("delivery lease", _local(job.delivery_lease_until, zone))
    lines.append("")
    field("times in", zone_name)
    field("created", _local(job.created_at, zone))
    field("started", _local(job.started_at, zone))
    field("completed", _local(job.completed_at, zone))
    field("delivered", _local(job.delivered_at, zone))
    field("updated", _local(job.updated_at, zone))
    field("duration", _duration(job, now))
    field("predict time", f"{job.predict_time:.1f}s" if job.predict_time is not None else None)
    return "\n".join(lines)
