"""`conjure jobs` and `conjure jobs show ID`, as an operator runs them: the console script's
`main` (in this process: tests/cli_harness.py) on a migrated database seeded through the real
store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.cli.jobs import abbreviate, parse_since, redact
from bot.config import ConfigError
from storage.engine import create_engine
from storage.jobs import JobStore
from storage.models import Job, JobStatus, utcnow
from storage.usage import Hold, HoldKind
from tests.cli_harness import Ran, run_conjure

DISCORD_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXQtdG9rZW4"
RESPONSE_URL = "https://hooks.slack.com/commands/T1/123/s3cr3tR3sp0nse"
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(2044)).decode()


def make_job(job_id: str, minutes_ago: float, **values: object) -> Job:
    fields: dict[str, object] = {
        "id": job_id,
        "platform": "slack",
        "workspace": "T1",
        "channel": "C1",
        "user_id": "U1",
        "command": "imagine",
        "model": "flux-schnell",
        "model_ref": "black-forest-labs/flux-schnell",
        "prompt": "a red fox",
        "input": {"prompt": "a red fox"},
        "usage_period": "day:2026-12-06",
        "estimated_micros": 3000,
        "created_at": utcnow() - timedelta(minutes=minutes_ago),
    }
    fields.update(values)
    return Job(**fields)  # type: ignore[arg-type]


async def seed(url: str) -> dict[str, Job]:
    engine = create_engine(url)
    store = JobStore(engine)
    jobs = {
        "old": make_job("a0old", 60 * 24 * 5, user_id="U2", user_name="bob"),
        "done": make_job(
            "b1done",
            30,
            platform="discord",
            workspace="G9",
            command="ask",
            model="llama-3-8b",
            input={"prompt": "why", "image": PNG},
            destination={
                "application_id": "42",
                "token": DISCORD_TOKEN,
                "channel_id": "77",
                "message_id": "88",
            },
            parent_id="a0old",
            followup="reroll",
            request_key="discord:555",
        ),
        "failed": make_job("c2failed", 10, user_id="U2"),
        "running": make_job(
            "d3running", 1, destination={"response_url": RESPONSE_URL, "channel": "C1"}
        ),
    }
    for job in jobs.values():
        await store.reserve_and_insert(job, [])
    created = jobs["done"].created_at
    await store.update_fields(
        "b1done",
        status=JobStatus.SUCCEEDED,
        status_rank=3,
        prediction_id="pred-123",
        actual_micros=1250,
        started_at=created + timedelta(seconds=1),
        completed_at=created + timedelta(seconds=12.5),
        delivery="delivered",
        delivery_attempts=2,
        holds=[{"kind": "jobs", "scope": "user", "subject": "discord:G9:U1", "period": "x"}],
    )
    await store.update_fields(
        "c2failed", status=JobStatus.FAILED, status_rank=3, error="NSFW content detected"
    )
    await store.update_fields("d3running", status=JobStatus.PROCESSING, status_rank=2)
    await engine.dispose()
    return jobs


def test_conjure_jobs_lists_filters_and_shows(database_url: str, tmp_path: Path) -> None:
    asyncio.run(seed(database_url))  # `main` runs its own event loop: this test is not on one
    env = {"CONJURE_DATABASE_URL": database_url, "CONJURE_TIMEZONE": "Asia/Tokyo"}

    def run(*args: str) -> Ran:
        return run_conjure("jobs", *args, cwd=tmp_path, env=env)

    listed = run()
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "WHEN", "(Asia/Tokyo)"]
    assert [line.split()[0] for line in lines[1:]] == ["d3running", "c2failed", "b1done", "a0old"]
    done = next(line for line in lines if line.startswith("b1done"))
    assert "discord:G9" in done and "llama-3-8b" in done and "succeeded" in done
    assert "$0.00125" in done and "12.5s" in done
    assert "≤$0.003" in lines[1] and "so far" in lines[1]  # running: the reserved ceiling
    assert "U2 (bob)" in lines[4] and "5d00h so far" in lines[4]

    filtered = run("--user", "U2", "--status", "FAILED", "--since", "2h", "--json")
    assert filtered.returncode == 0, filtered.stderr
    rows = [json.loads(line) for line in filtered.stdout.splitlines()]
    assert [row["id"] for row in rows] == ["c2failed"]
    assert list(rows[0]) == [
        "id", "created_at", "platform", "workspace", "channel", "user_id", "user_name",
        "command", "model", "status", "actual_usd_micros", "reserved_usd_micros",
        "duration_seconds", "parent_id", "followup",
    ]  # fmt: skip
    assert rows[0]["status"] == "failed" and rows[0]["reserved_usd_micros"] == 3000

    week_ago = (datetime.now(UTC) - timedelta(days=7)).date().isoformat()
    some = run("--platform", "slack", "--since", week_ago, "--limit", "2", "--json")
    assert [json.loads(line)["id"] for line in some.stdout.splitlines()] == [
        "d3running",
        "c2failed",
    ]

    shown = run("show", "b1done")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert DISCORD_TOKEN not in out and '"token": "<redacted>"' in out
    assert '"message_id": "88"' in out  # where the message is stays
    assert "base64" not in out and "<data: image/png, 2.0 KiB>" in out
    for expected in (
        "pred-123",
        "a0old (reroll)",
        "$0.00125",
        "delivered",
        "delivery attempts: 2",
        "discord:G9:U1",
        "12.5s",
        "discord:555",
    ):
        assert expected in out, expected

    running = run("show", "d3running", "--json")
    detail = json.loads(running.stdout)
    assert RESPONSE_URL not in running.stdout
    assert detail["destination"] == {"response_url": "<redacted>", "channel": "C1"}
    assert detail["status"] == "processing" and detail["completed_at"] is None

    missing = run("show", "nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip() == "conjure jobs show: no job with id 'nope'"
    refused = run("--status", "done")  # --since's words: test_since_takes_...
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == (
        "conjure: --status: 'done' is not one of queued, starting, processing, succeeded, failed, "
        "canceled, aborted\n"
    )


def test_jobs_show_says_each_holds_limit_as_an_admin_writes_it(
    database_url: str, tmp_path: Path
) -> None:
    """A hold's limit is stored with 0 for unlimited and -1 for none allowed (storage.usage);
    shown raw, an unlimited counter read "limit=0", which everywhere else means none allowed."""
    holds = [
        Hold(HoldKind.JOBS, "user", "slack:T1:U1", "day:2026-12-06", None),
        Hold(HoldKind.USD, "user", "slack:T1:U1", "month:2026-12", 10_000_000),
        Hold(HoldKind.IN_FLIGHT, "workspace", "slack:T1", "live", 2),
    ]

    async def admitted() -> None:
        engine = create_engine(database_url)
        try:
            await JobStore(engine).reserve_and_insert(make_job("e4holds", 1), holds)
        finally:
            await engine.dispose()

    asyncio.run(admitted())
    shown = run_conjure(
        "jobs", "show", "e4holds", cwd=tmp_path, env={"CONJURE_DATABASE_URL": database_url}
    )
    assert shown.returncode == 0, shown.stderr
    lines = [
        line.split(None, 1)[1] for line in shown.stdout.splitlines() if line.startswith("hold:")
    ]
    assert lines == [
        "kind=jobs limit=unlimited period=day:2026-12-06 scope=user subject=slack:T1:U1",
        "kind=usd limit=$10.00 period=month:2026-12 scope=user subject=slack:T1:U1",
        "kind=in_flight limit=2 period=live scope=workspace subject=slack:T1",
    ]


def test_since_takes_a_local_date_a_moment_or_a_duration() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_since("2026-12-01", tokyo, now) == datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T09:30", tokyo, now) == datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert parse_since("2h", tokyo, now) == now - timedelta(hours=2)
    assert parse_since("3d", tokyo, now) == now - timedelta(days=3)
    assert parse_since("1w", tokyo, now) == now - timedelta(weeks=1)
    for bad in ("", "2", "h2", "2026-13-01", "-3d"):
        with pytest.raises(ConfigError):
            parse_since(bad, tokyo, now)


def test_data_urls_are_abbreviated_and_capabilities_redacted() -> None:
    assert abbreviate({"a": [PNG, "https://x/y.png"], "n": 3}) == {
        "a": ["<data: image/png, 2.0 KiB>", "https://x/y.png"],
        "n": 3,
    }
    assert abbreviate("data:,hello") == "<data: text/plain, 5 bytes>"
    assert redact({"token": "t", "webhook_url": "u", "guild_id": None, "thread_ts": "1.2"}) == {
        "token": "<redacted>",
        "webhook_url": "<redacted>",
        "guild_id": None,
        "thread_ts": "1.2",
    }


def test_conjure_jobs_on_a_machine_whose_clock_is_off_reads_by_the_databases_clock(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instances stamp jobs by the database's clock (storage.clock). An operator's machine
    ten minutes ahead of it asked for `--since 5m`, counted back from its own clock, and missed
    a job two minutes old; a running job's age was its machine's clock minus the database's."""
    import bot.cli.jobs
    from storage import clock

    asyncio.run(seed_one(postgres_url, make_job("r1recent", 2)))
    ahead = timedelta(minutes=10)

    class MachineClock(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz) + ahead

    real_local_now = clock.local_now
    monkeypatch.setattr(clock, "local_now", lambda: real_local_now() + ahead)
    monkeypatch.setattr(bot.cli.jobs, "datetime", MachineClock)
    monkeypatch.setattr(clock, "_offset", clock.offset())  # put back after the test
    env = {"CONJURE_DATABASE_URL": postgres_url}

    listed = run_conjure("jobs", "--since", "5m", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if line.startswith("r1recent")]
    assert re.search(r"\b2m\d\ds so far", line), line


async def seed_one(url: str, job: Job) -> None:
    engine = create_engine(url)
    try:
        await JobStore(engine).reserve_and_insert(job, [])
    finally:
        await engine.dispose()


@pytest.mark.parametrize("command", [("jobs",), ("jobs", "--json"), ("report",)])
@pytest.mark.parametrize("platform", ["Slack", "slak", ""])
def test_a_platform_that_is_none_of_conjures_is_refused_not_reported_empty(
    database_url: str, tmp_path: Path, command: tuple[str, ...], platform: str
) -> None:
    """`--platform Slack` matched no job, so `conjure jobs` said "(no jobs)" and the report
    showed no spend, however many jobs Slack had run."""
    asyncio.run(seed(database_url))
    env = {"CONJURE_DATABASE_URL": database_url}
    ran = run_conjure(*command, "--platform", platform, cwd=tmp_path, env=env)
    assert ran.returncode == 2 and ran.stdout == "", ran.stdout
    assert (
        "--platform: invalid choice" in ran.stderr and "'slack', 'discord', 'console'" in ran.stderr
    )


@pytest.mark.parametrize("typed", ["@U2", "<@U2|bob>", "<@U2>"])
def test_jobs_of_a_user_typed_as_a_mention_are_that_users(
    database_url: str, tmp_path: Path, typed: str
) -> None:
    """As `conjure quota` reads --user: a mention pasted from the chat matched no job, and
    `conjure jobs` answered that the user had run none."""
    asyncio.run(seed(database_url))
    env = {"CONJURE_DATABASE_URL": database_url}
    ran = run_conjure("jobs", "--user", typed, "--json", cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    assert [json.loads(line)["id"] for line in ran.stdout.splitlines()] == ["c2failed", "a0old"]


@pytest.mark.parametrize("args", [("jobs",), ("jobs", "show", "abc123"), ("report",)])
def test_a_report_run_where_serve_never_ran_says_so_and_makes_no_database(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """In another directory, without CONJURE_DATABASE_URL: it made a new, empty conjure.db there
    and said "(no jobs)" or no spend, however much serve had run."""
    ran = run_conjure(*args, cwd=tmp_path)
    assert ran.returncode == 2 and ran.stdout == ""  # a setting to fix, as every other
    assert ran.stderr == (
        f"conjure: CONJURE_DATABASE_URL: no database at {tmp_path / 'conjure.db'} (nothing has "
        "been served with it): run this where conjure serve runs, or set CONJURE_DATABASE_URL "
        "to its\n"
    )
    assert not (tmp_path / "conjure.db").exists()
