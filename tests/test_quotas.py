"""Quotas and budgets end to end: limits that hold under concurrency, settle and release, alerts,
admin commands and the operator CLI."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from bot.adapter import CommandRequest
from bot.config import ConfigError, Settings, load_settings
from bot.quotas.limits import Limits, QuotaConfigError, default_limits
from bot.quotas.windows import day_window, month_window
from storage.jobs import user_subject, workspace_subject
from storage.models import Delivery, JobStatus, utcnow
from tests.cli_harness import Ran, run_conjure
from tests.harness import Conjure, all_jobs, running_conjure, settle
from tests.sandbox_fixtures import impatient_replicate, lose_the_next_create

ROOT = Path(__file__).resolve().parent.parent


def request(user: str = "you", text: str = "a fox") -> CommandRequest:
    return CommandRequest("console", "local", "terminal", user, "imagine", text, user_name=user)


async def submit_many(conjure: Conjure, count: int, user: str = "you") -> list[str]:
    async def one() -> str:
        reply = await conjure.runtime.commands.handle(request(user))
        if reply.refused:
            return str(reply.text)
        return "accepted"

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def counter(conjure: Conjure, scope: str, subject: str, period: str):
    return await conjure.runtime.store.counter(scope, subject, period)


async def test_200_concurrent_submits_against_a_limit_of_5_create_exactly_5(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, database_url, tmp_path / "out", conjure_user_jobs_per_day=5
    ) as conjure:
        results = await submit_many(conjure, 200)
        await settle(conjure, sandbox_server)
        assert results.count("accepted") == 5
        refusals = [r for r in results if r != "accepted"]
        assert all("all 5 of your jobs for today" in r for r in refusals)
        assert sandbox_server.sandbox.create_count == 5
        assert await conjure.runtime.store.count() == 5


async def test_two_processes_with_their_own_engines_cannot_pass_the_limit(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    # database_url is migrated already (tests/db_fixtures.py): the two processes race on the
    # counters, not on migrations.
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.concurrent_submitter",
            sandbox_server.url,
            sandbox_server.token,
            sandbox_server.webhook_secret,
            database_url,
            "100",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"ready"
    for process in processes:  # release both at once
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        await process.stdin.drain()
    outputs = [await asyncio.wait_for(p.communicate(), 120) for p in processes]
    results = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    assert all(p.returncode == 0 for p in processes)
    assert sum(r["accepted"] for r in results) == 5
    assert sum(r["refused"] for r in results) == 195
    await sandbox_server.sandbox.wait_idle()
    assert sandbox_server.sandbox.create_count == 5


async def test_monthly_budget_refuses_the_job_that_would_pass_it(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_usd_per_month=0.01
    ) as conjure:
        big = await conjure.console.run_line("/imagine four foxes --n 4")
        assert not big.ok and big.error is not None
        assert "about $0.012" in big.error and "monthly budget of $0.01" in big.error
        assert "resets on 1 " in big.error
        results = await submit_many(conjure, 10)
        await settle(conjure, sandbox_server)
        assert results.count("accepted") == 3  # 3 x $0.003 fit in $0.01, a 4th would not
        assert sandbox_server.sandbox.create_count == 3
        subject = user_subject("console", "local", "you")
        money = await counter(conjure, "user", subject, month_window(utcnow()).key)
        assert money is not None and money.spent_micros == 9000 and money.reserved_micros == 0


async def test_jobs_in_flight_limit_refuses_where_queueing_is_off(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.5
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_user_max_in_flight=1,
        conjure_user_max_queued=0,  # see tests/test_queue.py for the queue
    ) as conjure:
        results = await submit_many(conjure, 3)
        assert results.count("accepted") == 1
        assert any("already have 1 job running" in r for r in results)
        await settle(conjure, sandbox_server)
        live = await counter(conjure, "user", user_subject("console", "local", "you"), "live")
        assert live is not None and live.jobs == 0
        again = await submit_many(conjure, 1)
        assert again == ["accepted"]
        await settle(conjure, sandbox_server)


async def test_workspace_limit_applies_across_users(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_workspace_jobs_per_day=2
    ) as conjure:
        first = await submit_many(conjure, 1, user="ann")
        second = await submit_many(conjure, 1, user="bob")
        third = await submit_many(conjure, 1, user="cyd")
        await settle(conjure, sandbox_server)
        assert first == second == ["accepted"]
        assert "This workspace has used all 2 of its jobs for today" in third[0]
        ws = await counter(
            conjure, "workspace", workspace_subject("console", "local"), day_window(utcnow()).key
        )
        assert ws is not None and ws.jobs == 2


async def test_canceled_job_is_charged_what_ran_and_keeps_its_count(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.faults.slow_start = 0.3
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        job = (await conjure.runtime.commands.handle(request(text="a slow fox --model sdxl"))).job
        assert job is not None and job.prediction_id is not None
        await conjure.service.replicate.cancel_prediction(job.prediction_id)
        await settle(conjure, sandbox_server)
        stored = await conjure.runtime.store.get(job.id)
        assert stored is not None and stored.status == JobStatus.CANCELED
        assert stored.actual_micros is not None
        predict_time = sandbox_server.sandbox.predictions[job.prediction_id]["metrics"].get(
            "predict_time"
        )
        assert stored.actual_micros == round((predict_time or 0) * 0.0023 * 1_000_000) or (
            abs(stored.actual_micros - (predict_time or 0) * 2300) <= 1
        )
        subject = user_subject("console", "local", "you")
        day = await counter(conjure, "user", subject, day_window(utcnow()).key)
        assert day is not None and day.jobs == 1
        assert "canceled" in conjure.output.getvalue()


async def test_late_result_of_a_given_up_job_is_charged_once_and_delivered_after_all(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The create's answer was lost and the lookup failed, so the job was given up (the person
    was told) and its reservation released; then Replicate's webhook shows the prediction did
    run. It is charged once, and its image is delivered: it was paid for."""
    lose_the_next_create(sandbox_server)
    out = tmp_path / "out"
    async with running_conjure(sandbox_server, sqlite_url, out) as conjure:
        async with impatient_replicate(conjure.service, sandbox_server):
            outcome = await conjure.console.run_line("/imagine a ghost")
            await settle(conjure, sandbox_server)
        assert not outcome.ok  # what the person was told first
        assert sandbox_server.sandbox.create_count == 1
        [job] = await all_jobs(conjure.runtime.store)
        assert job.status == JobStatus.SUCCEEDED and job.prediction_id is not None
        assert job.delivery == Delivery.DELIVERED and job.actual_micros == 3000
        [saved] = list(out.iterdir())
        assert saved.read_bytes() == await output_bytes(sandbox_server, job.prediction_id)
        subject = user_subject("console", "local", "you")
        day = await counter(conjure, "user", subject, day_window(utcnow()).key)
        money = await counter(conjure, "user", subject, month_window(utcnow()).key)
        assert day is not None and day.jobs == 0  # the job count stays given back
        assert money is not None and money.spent_micros == 3000 and money.reserved_micros == 0
        # Replaying the terminal webhook charges and delivers nothing more.
        last = sandbox_server.sandbox.webhook_deliveries[-1]
        path = last.url.removeprefix(conjure.url)
        assert (await conjure.http.post(path, content=last.body, headers=last.headers)).is_success
        await settle(conjure, sandbox_server)
        money = await counter(conjure, "user", subject, month_window(utcnow()).key)
        assert money is not None and money.spent_micros == 3000
        assert list(out.iterdir()) == [saved]


async def output_bytes(sandbox_server, prediction_id: str) -> bytes:  # type: ignore[no-untyped-def]
    [url] = sandbox_server.sandbox.predictions[prediction_id]["output"]
    async with httpx.AsyncClient() as http:
        return (await http.get(url)).content


async def test_budget_alerts_fire_once_per_threshold(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_user_usd_per_month=0.006,
        conjure_alert_channels="console:admins",
    ) as conjure:
        for _ in range(2):
            assert (await conjure.console.run_line("/imagine a coin")).ok
            await settle(conjure, sandbox_server)
        refused = await conjure.console.run_line("/imagine one more")
        assert not refused.ok
        await conjure.service.send_alerts()
        alerts = [line for line in conjure.output.getvalue().splitlines() if "[admins]" in line]
        assert len(alerts) == 2
        assert "<@you> has used 80%" in alerts[0] or "<@you> has used 80%" in alerts[1]
        assert any("has reached 100%" in line and "$0.006 of $0.006" in line for line in alerts)


async def test_quota_and_report_are_admin_only(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admins="console:boss"
    ) as conjure:
        assert (await conjure.console.run_line("/imagine a crown")).ok
        await settle(conjure, sandbox_server)
        refused = await conjure.console.run_line("/conjure quota <@you> jobs=1")
        assert refused.text is not None and "Only Conjure admins" in refused.text
        report = await conjure.console.run_line("/conjure report")
        assert report.text is not None and "Only Conjure admins" in report.text

        conjure.console.user = "boss"
        answer = await conjure.console.run_line(
            "/conjure quota <@you> jobs=1/day usd=$2/month inflight=2"
        )
        assert answer.text is not None
        assert "<@you> now has limits: jobs 1/day, budget $2.00/month, in flight 2" in answer.text
        workspace = await conjure.console.run_line("/conjure quota workspace")
        assert workspace.text is not None and "jobs unlimited/day" in workspace.text
        bad = await conjure.console.run_line("/conjure quota <@you> jobs=lots")
        assert bad.text is not None and "not a number" in bad.text
        report = await conjure.console.run_line("/conjure report")
        assert report.text is not None
        assert "<@you>: 1 job, $0.003" in report.text and "flux-schnell: 1 job" in report.text
        [entry] = await conjure.service.quotas.store.audit()
        assert entry.actor == "console:local:boss" and entry.detail["jobs_per_day"] == 1

        conjure.console.user = "you"
        over = await conjure.console.run_line("/imagine a second crown")
        assert not over.ok and over.error is not None and "all 1 of your jobs" in over.error
        usage = await conjure.console.run_line("/conjure usage")
        assert usage.text is not None and "Jobs today: 1 of 1; 0 left" in usage.text


async def test_an_admin_of_one_server_is_not_an_admin_of_another(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """A Discord user id is the same in every server the bot is in: `discord:<server>/<user>`
    makes someone an admin of that server only; a bare `discord:<user>` of every one."""
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_admins="discord:G1/boss, discord:operator",
    ) as conjure:

        async def conjure_in(server: str, user: str, text: str) -> str:
            request = CommandRequest("discord", server, "C1", user, "conjure", text)
            return str((await conjure.runtime.commands.handle(request)).text)

        assert "now has limits: jobs 3/day" in await conjure_in("G1", "boss", "quota <@u1> jobs=3")
        assert "Only Conjure admins" in await conjure_in("G2", "boss", "quota <@u1> jobs=3")
        assert "Only Conjure admins" in await conjure_in("G2", "boss", "report")
        assert "now has limits: jobs 4/day" in await conjure_in(
            "G2", "operator", "quota <@u1> jobs=4"
        )
        actors = sorted(entry.actor for entry in await conjure.service.quotas.store.audit())
        assert actors == ["discord:G1:boss", "discord:G2:operator"]


@pytest.mark.parametrize("entry", ["discord:/boss", "discord:G1/", "teams:boss", "slack:"])
def test_a_malformed_admin_entry_stops_start_up(entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, conjure_admins=f"slack:U1,{entry}")
    assert "CONJURE_ADMINS: each entry must look like slack:T0123/U0123" in str(caught.value)


def test_defaults_come_from_the_environment_over_conjure_toml(tmp_path: Path) -> None:
    config = tmp_path / "conjure.toml"
    config.write_text("[quotas.user]\njobs_per_day = 20\nusd_per_month = 5\n")
    settings = Settings(_env_file=None, conjure_config=config, conjure_user_jobs_per_day=7)  # type: ignore[call-arg]
    limits = default_limits(settings)
    assert limits["user"].jobs_per_day == 7  # the environment wins
    assert limits["user"].usd_per_month_micros == 5_000_000  # the file fills in the rest
    assert limits["workspace"].jobs_per_day is None  # set nowhere: unlimited


def test_defaults_say_unlimited_and_zero_plainly(tmp_path: Path) -> None:
    config = tmp_path / "conjure.toml"
    config.write_text(
        '[quotas.user]\njobs_per_day = "unlimited"\nusd_per_month = 0\n'
        "[quotas.workspace]\nmax_in_flight = 3\nusd_per_month = 2.5\n"
    )
    settings = load_settings(
        _env_file=None,
        conjure_config=config,
        conjure_workspace_usd_per_month="unlimited",
        conjure_user_max_in_flight="0",
    )
    limits = default_limits(settings)
    assert limits["user"] == Limits(jobs_per_day=None, usd_per_month_micros=0, max_in_flight=0)
    assert limits["workspace"] == Limits(None, None, 3)  # the environment's unlimited wins
    assert default_limits(load_settings(_env_file=None)) == {
        "user": Limits(),
        "workspace": Limits(),
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("usd_per_month = nan", "nan: not a number"),
        ("usd_per_month = -1", "-1: cannot be negative"),
        ("usd_per_month = 0.0000004", "finer than a millionth of a dollar"),
        ('usd_per_month = "default"', "default: only clears an admin's override"),
        ("jobs_per_day = 2.5", "2.5: must be a whole number"),
        ("jobs_per_day = inf", "inf: at most 1,000,000; for no limit write unlimited"),
        ("max_in_flight = true", "not a number"),
    ],
)
def test_bad_default_limits_in_conjure_toml_are_refused_saying_why(
    tmp_path: Path, line: str, reason: str
) -> None:
    config = tmp_path / "conjure.toml"
    config.write_text(f"[quotas.user]\n{line}\n")
    with pytest.raises(QuotaConfigError) as caught:
        default_limits(Settings(_env_file=None, conjure_config=config))  # type: ignore[call-arg]
    key = line.split(" = ")[0]
    assert str(caught.value).startswith(f"{config}: quotas.user.{key}: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nan", "not a number"),
        ("-1", "cannot be negative"),
        ("0.0000004", "finer than a millionth of a dollar"),
        ("1e-9999999", "finer than a millionth of a dollar"),  # not rounded away to 0
        ("inf", "at most 1,000,000; for no limit write unlimited"),
    ],
)
def test_bad_default_limits_in_the_environment_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("CONJURE_WORKSPACE_USD_PER_MONTH", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert f"CONJURE_WORKSPACE_USD_PER_MONTH: {reason}" in str(caught.value)


def test_operator_cli_sets_shows_and_reports(tmp_path: Path) -> None:
    def run(*args: str) -> Ran:  # on ./conjure.db, the default database, as an operator would
        return run_conjure(*args, cwd=tmp_path)

    done = run("quota", "set", "--platform", "slack", "--workspace", "T1", "--user", "U1",
               "--jobs-per-day", "9", "--usd-per-month", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "jobs 9/day, budget $3.00/month" in done.stdout
    shown = run("quota", "show")
    assert "user slack:T1:U1: jobs 9/day" in shown.stdout
    report = run("report", "--json")
    assert report.returncode == 0 and json.loads(report.stdout)["users"] == []
    bad = run("quota", "set", "--platform", "slack", "--workspace", "T1", "--jobs-per-day", "x")
    assert bad.returncode == 2 and "not a number" in bad.stderr


@pytest.mark.parametrize("amount", ["1e-9999999", "1.00000000000000000000000000001"])
def test_a_budget_finer_than_a_micro_dollar_is_refused_not_rounded(
    tmp_path: Path, amount: str
) -> None:
    """However small the fraction: 1e-9999999 dollars had become $0, a budget that allows
    nothing, and a 30-digit amount was rounded to $1."""
    subject = ("--platform", "slack", "--workspace", "T1")
    refused = run_conjure("quota", "set", *subject, "--usd-per-month", amount, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout
    assert f"--usd-per-month: {amount}: finer than a millionth of a dollar" in refused.stderr
    shown = run_conjure("quota", "show", *subject, cwd=tmp_path)
    assert "budget unlimited/month" in shown.stdout  # nothing was set


@pytest.mark.parametrize("user", ["", " ", "@"])
def test_quota_set_with_an_empty_user_changes_nobody_not_the_workspace(
    tmp_path: Path, user: str
) -> None:
    """`--user "$ID"` with $ID unset named no user, and set the whole workspace's limit."""
    where = ("--platform", "slack", "--workspace", "T1")
    refused = run_conjure(
        "quota", "set", *where, "--user", user, "--jobs-per-day", "0", cwd=tmp_path
    )
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr == "conjure: --user: empty; give a user id, or leave --user out\n"
    shown = run_conjure("quota", "show", *where, cwd=tmp_path)
    assert shown.stdout == (
        "workspace slack:T1: jobs unlimited/day, budget unlimited/month, in flight unlimited\n"
    )


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--workspace", "T1"), "--platform: required with --workspace"),
        (("--platform", "slack", "--user", "U1"), "--workspace: required with --platform"),
        (("--platform", "slack", "--workspace", ""), "--workspace: empty; give a workspace id"),
    ],
)
def test_quota_show_for_a_subject_named_in_part_says_what_is_missing(
    tmp_path: Path, flags: tuple[str, ...], said: str
) -> None:
    """Not the defaults and every override, as if no subject had been asked about."""
    shown = run_conjure("quota", "show", *flags, cwd=tmp_path)
    assert shown.returncode == 2 and shown.stdout == "", shown.stdout
    assert shown.stderr == f"conjure: {said}\n"


@pytest.fixture(autouse=True)
def _quiet_output() -> io.StringIO:
    return io.StringIO()
