"""Budgets that hold against Replicate's bill: every run reserves its cost ceiling, Replicate is
told to stop it there (Cancel-After), and what it billed is settled, overruns included.

The sandbox bills the real seconds a prediction ran, and enforces Cancel-After on the same
clock, so these tests describe whisper in the sandbox's time: at speed 0.25 a transcription runs
8 steps of 0.025 s, 0.2 s, which the catalog below expects; priced at $0.12 a second that is
$0.024 a run, as the built-in whisper's 20 s at $0.0012 is. Its ceiling is 3 x 0.2 s = 0.6 s,
$0.072. Before ceilings, 25 such runs taking 4x as long under a $0.50 budget admitted 20 and
spent $1.92.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import insert, select

from bot.adapter import CommandRequest
from bot.catalog import default_catalog, load_catalog
from bot.cli.main import main
from bot.commands.conjure import models_text
from bot.money import usd_to_micros
from bot.quotas.limits import Limits
from bot.quotas.windows import day_window, month_window
from bot.replicate.client import ReplicateClient, go_duration
from storage.engine import create_engine, write
from storage.jobs import user_subject
from storage.migrate import migrate
from storage.models import Job, JobStatus, QuotaOverride, utcnow
from storage.quotas import QuotaStore
from storage.usage import Hold, HoldKind, LimitReached, reserve, settle
from tests.cli_harness import process_state_restored
from tests.harness import Conjure, all_jobs, running_conjure
from tests.harness import settle as settle_all

PRICE = Decimal("0.12")  # dollars a second, in the sandbox's time
CEILING = 72_000  # 3 x 0.2 s x $0.12, in micro-dollars
AUDIO = "https://example.com/talk.mp3"
CATALOG = f"""
[models.whisper]
price_per_second = {PRICE}
expected_seconds = 0.2
"""


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "conjure.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.fixture
def whisper_sandbox(sandbox_server):  # type: ignore[no-untyped-def]
    sandbox_server.sandbox.config.speed = 0.25
    return sandbox_server


def transcribe(user: str = "you") -> CommandRequest:
    return CommandRequest("console", "local", "terminal", user, "transcribe", AUDIO, user_name=user)


def billed(sandbox_server, prediction_id: str) -> int:  # type: ignore[no-untyped-def]
    """What the sandbox billed for one prediction, in micro-dollars (rounded up, as Conjure
    rounds every amount)."""
    seconds = sandbox_server.sandbox.predictions[prediction_id]["metrics"].get("predict_time")
    return usd_to_micros(Decimal(str(seconds or 0)) * PRICE)


async def month_counter(conjure: Conjure, user: str = "you"):  # type: ignore[no-untyped-def]
    subject = user_subject("console", "local", user)
    return await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)


def test_the_catalog_in_these_tests_is_what_the_docstring_says(catalog_file: Path) -> None:
    price = load_catalog(catalog_file).models["whisper"].price
    assert price.estimate_micros(1) == 24_000 and price.ceiling_micros(1) == CEILING
    assert go_duration(price.deadline_seconds(1) or 0) == "0.6s"


def test_models_show_what_a_run_usually_costs_and_the_most_it_can() -> None:
    service = SimpleNamespace(catalog=default_catalog())
    text = models_text(service)  # type: ignore[arg-type]
    assert (
        "whisper (transcript): OpenAI Whisper speech recognition; $0.0012 per second, "
        "about $0.024 a run, at most $0.072 (stopped after 60 s)" in text
    )
    assert "sdxl (image): Stable Diffusion XL; $0.0023 per second, about $0.0184 an output" in text


async def test_25_concurrent_transcriptions_running_4x_long_stay_within_the_budget(
    whisper_sandbox, database_url: str, catalog_file: Path, tmp_path: Path
) -> None:
    whisper_sandbox.sandbox.faults.run_time_factor = 4
    async with running_conjure(
        whisper_sandbox,
        database_url,
        tmp_path / "out",
        conjure_config=catalog_file,
        conjure_user_usd_per_month=0.5,
    ) as conjure:
        replies = await asyncio.gather(
            *(conjure.runtime.commands.handle(transcribe()) for _ in range(25))
        )
        await settle_all(conjure, whisper_sandbox)
        accepted = [reply.job for reply in replies if reply.job is not None]
        refused = [str(reply.text) for reply in replies if reply.refused]
        # Six ceilings of $0.072 fit in $0.50 at once; a job that ends gives back what it did
        # not spend, so on a slow machine one or two more may start after it. Before ceilings,
        # twenty were admitted.
        assert 6 <= len(accepted) < 10 and len(accepted) + len(refused) == 25
        assert all("(about $0.024, up to $0.072 if it runs long)" in text for text in refused)
        assert all("would pass your monthly budget of $0.50" in text for text in refused)
        jobs = [await conjure.runtime.store.get(job.id) for job in accepted]
        sandbox_bill = 0
        for job in jobs:
            assert job is not None and job.prediction_id is not None
            # 4x its time is past its 3x ceiling: stopped there (canceled, billed to the
            # deadline), or aborted, unbilled, when a loaded machine started it after its deadline
            assert job.status in (JobStatus.CANCELED, JobStatus.ABORTED)
            assert job.estimated_micros == CEILING  # what was reserved
            assert job.actual_micros == billed(whisper_sandbox, job.prediction_id) <= CEILING
            sandbox_bill += job.actual_micros
        money = await month_counter(conjure)
        assert sandbox_bill <= 500_000
        assert money is not None
        assert money.spent_micros == sandbox_bill and money.reserved_micros == 0
        assert whisper_sandbox.sandbox.create_count == len(accepted)


async def test_a_run_30x_its_estimate_is_stopped_at_its_ceiling(
    whisper_sandbox, sqlite_url: str, catalog_file: Path, tmp_path: Path
) -> None:
    whisper_sandbox.sandbox.faults.run_time_factor = 30  # 6 s, ten times the 0.6 s ceiling
    async with running_conjure(
        whisper_sandbox, sqlite_url, tmp_path / "out", conjure_config=catalog_file
    ) as conjure:
        outcome = await conjure.console.run_line(f"/transcribe {AUDIO}")
        await settle_all(conjure, whisper_sandbox)
        [job] = await all_jobs(conjure.runtime.store)
        assert job.status == JobStatus.CANCELED and job.prediction_id is not None
        prediction = whisper_sandbox.sandbox.predictions[job.prediction_id]
        assert prediction["deadline"] > prediction["created_at"]
        assert (
            0 < prediction["metrics"]["predict_time"] < 0.6 <= prediction["metrics"]["total_time"]
        )
        assert job.actual_micros == billed(whisper_sandbox, job.prediction_id) <= CEILING
        money = await month_counter(conjure)
        assert money is not None and money.spent_micros == job.actual_micros
        assert money.reserved_micros == 0
    told = outcome.error or conjure.output.getvalue()
    assert "stopped at its cost ceiling" in told
    assert "still running after 0.6s" in told and "(at most $0.072)" in told


async def test_a_run_that_never_starts_before_its_deadline_is_aborted_and_free(
    whisper_sandbox, sqlite_url: str, catalog_file: Path, tmp_path: Path
) -> None:
    whisper_sandbox.sandbox.faults.slow_start = 1.0  # real seconds: past the 0.6 s deadline
    async with running_conjure(
        whisper_sandbox, sqlite_url, tmp_path / "out", conjure_config=catalog_file
    ) as conjure:
        outcome = await conjure.console.run_line(f"/transcribe {AUDIO}")
        await settle_all(conjure, whisper_sandbox)
        [job] = await all_jobs(conjure.runtime.store)
        assert job.status == JobStatus.ABORTED and job.actual_micros == 0
        subject = user_subject("console", "local", "you")
        day = await conjure.runtime.store.counter("user", subject, day_window(utcnow()).key)
        money = await month_counter(conjure)
        assert day is not None and day.jobs == 0  # the job is given back
        assert money is not None and money.spent_micros == 0 and money.reserved_micros == 0
    told = outcome.error or conjure.output.getvalue()
    assert "aborted before it started" in told and "nothing was charged" in told


async def test_a_per_output_model_has_no_deadline_and_reserves_n_times_its_price(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        assert (await conjure.console.run_line("/imagine two foxes --n 2")).ok
        await settle_all(conjure, sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)
        assert job.estimated_micros == job.actual_micros == 6_000
        assert "deadline" not in sandbox_server.sandbox.predictions[job.prediction_id]


async def test_the_client_sends_cancel_after_in_go_syntax(sandbox_server) -> None:  # type: ignore[no-untyped-def]
    async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
        prediction = await client.create_prediction(
            model="black-forest-labs/flux-schnell", input={"prompt": "x"}, cancel_after=90
        )
    created = sandbox_server.sandbox.runs[prediction.id]
    assert created.deadline is not None
    assert created.deadline - created.created == pytest.approx(90)  # loop times are floats
    assert [go_duration(s) for s in (90, 1.5, 0.6, 3600.0004)] == ["90s", "1.5s", "0.6s", "3600s"]
    with pytest.raises(ValueError):
        go_duration(0)
    await sandbox_server.sandbox.aclose()


async def test_a_settled_overrun_counts_as_spent_and_blocks_the_next_job(
    database_url: str,
) -> None:
    """Replicate may bill a little past the deadline: what it billed is spent, even past the
    limit, and the next reservation is refused."""
    engine = create_engine(database_url)
    await migrate(engine)
    subject = user_subject("slack", "T1", "U1")
    holds = [Hold(HoldKind.USD, "user", subject, month_window(utcnow()).key, 100_000)]
    try:
        async with write(engine) as conn:
            await reserve(conn, holds, 72_000)
        async with write(engine) as conn:
            await settle(conn, holds, estimate=72_000, actual=120_000, give_back_job=False)
        with pytest.raises(LimitReached):
            async with write(engine) as conn:
                await reserve(conn, holds, 1)
        counter = await QuotaStore(engine).counters("user", subject, [holds[0].period])
        assert counter[holds[0].period].spent_micros == 120_000
        assert counter[holds[0].period].reserved_micros == 0
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- limits in words


async def test_zero_blocks_unlimited_unblocks_and_nonsense_is_refused_in_chat(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server,
        database_url,
        tmp_path / "out",
        conjure_admins="console:boss",
        conjure_user_jobs_per_day=5,
    ) as conjure:
        console = conjure.console

        async def admin(text: str) -> str:
            console.user = "boss"
            try:
                answer = await console.run_line(text)
            finally:
                console.user = "you"
            return str(answer.text)

        assert "jobs 0/day, budget unlimited/month" in await admin(
            "/conjure quota <@you> jobs=0/day usd=unlimited/month"
        )
        blocked = await console.run_line("/imagine a fox")
        assert not blocked.ok and blocked.error is not None
        assert "Your daily job limit is 0, so no job can start." in blocked.error
        assert "jobs unlimited/day" in await admin("/conjure quota <@you> jobs=unlimited")
        assert (await console.run_line("/imagine a fox")).ok
        assert "budget $0.00/month" in await admin("/conjure quota <@you> usd=0/month")
        broke = await console.run_line("/imagine another fox")
        assert broke.error is not None and "Your monthly budget is $0" in broke.error
        assert "jobs 5/day" in await admin("/conjure quota <@you> jobs=default")
        for setting, reason in (
            ("usd=nan", "usd=nan: not a number"),
            ("usd=inf", "usd=inf: at most 1,000,000; for no limit write unlimited"),
            ("usd=-1", "usd=-1: cannot be negative"),
            ("usd=0.0000004", "usd=0.0000004: finer than a millionth of a dollar"),
            ("jobs=-1/day", "jobs=-1: cannot be negative"),
            ("jobs=2.5/day", "jobs=2.5: must be a whole number"),
            ("inflight=lots", "inflight=lots: not a number"),
        ):
            assert (await admin(f"/conjure quota <@you> {setting}")).startswith(reason), setting
        await settle_all(conjure, sandbox_server)
        stored = await conjure.service.quotas.store.override("user", "console:local:you")
        # In the table: NULL = the default, 0 = unlimited (as it always was), -1 = none allowed.
        assert stored is not None
        assert (stored.jobs_per_day, stored.usd_per_month_micros) == (None, -1)
        [last, *_] = await conjure.service.quotas.store.audit()
        assert last.detail["jobs_per_day"] == "default"


async def test_overrides_written_before_zero_meant_none_keep_their_meaning(
    database_url: str,
) -> None:
    """A 0 in the override table has always meant unlimited, and still does; so does a 0 in a
    job's stored holds. "None allowed" is stored as -1."""
    engine = create_engine(database_url)
    await migrate(engine)
    try:
        async with write(engine) as conn:
            await conn.execute(
                insert(QuotaOverride).values(
                    scope="user",
                    subject="slack:T1:U1",
                    jobs_per_day=0,
                    usd_per_month_micros=-1,
                    max_in_flight=None,
                    updated_at=utcnow(),
                )
            )
        override = await QuotaStore(engine).override("user", "slack:T1:U1")
        defaults = Limits(jobs_per_day=10, usd_per_month_micros=5, max_in_flight=2)
        assert defaults.with_override(override) == Limits(None, 0, 2)
        async with engine.connect() as conn:
            assert (await conn.execute(select(Job.__table__))).all() == []
    finally:
        await engine.dispose()
    old = {"kind": "jobs", "scope": "user", "subject": "s", "period": "day:x", "limit": 0}
    assert Hold.from_json(old).limit is None
    assert Hold.from_json(Hold(HoldKind.JOBS, "user", "s", "day:x", 0).as_json()).limit == 0
    assert Hold(HoldKind.JOBS, "user", "s", "day:x", 0).as_json()["limit"] == -1


async def test_zero_blocks_and_unlimited_unblocks_from_the_cli(
    sandbox_server,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CONJURE_DATABASE_URL", database_url)
    subject = ["--platform", "console", "--workspace", "local", "--user", "you"]

    async def cli(*flags: str) -> tuple[int, str, str]:
        with process_state_restored():  # main configures logging and turns the collector off
            code = await asyncio.to_thread(main, ["quota", "set", *subject, *flags])
        out, err = capsys.readouterr()
        return code, out, err

    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        code, out, _ = await cli("--jobs-per-day", "0", "--usd-per-month", "unlimited")
        assert code == 0 and "jobs 0/day, budget unlimited/month" in out
        blocked = await conjure.console.run_line("/imagine a fox")
        assert blocked.error is not None and "daily job limit is 0" in blocked.error
        code, out, _ = await cli("--jobs-per-day", "unlimited")
        assert code == 0 and "jobs unlimited/day" in out
        assert (await conjure.console.run_line("/imagine a fox")).ok
        for flag, value, reason in (
            ("--usd-per-month", "nan", "not a number"),
            ("--usd-per-month", "-1", "cannot be negative"),
            ("--usd-per-month", "0.0000004", "finer than a millionth of a dollar"),
            ("--max-in-flight", "1.5", "must be a whole number"),
        ):
            code, _, err = await cli(flag, value)
            assert code == 2 and f"{flag}: {value}: {reason}" in err, err
        await settle_all(conjure, sandbox_server)
