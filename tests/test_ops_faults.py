"""Operators' and admins' tools fed odd input: each gets a clear answer (never a 500 or a
traceback) and leaves the data as it was. The admin page over real HTTP on loopback, /conjure
through the console adapter, the CLI through its `main`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.startup_errors import UNREADABLE_DATABASE_URL
from bot.commands.handler import INTERNAL_ERROR
from bot.logs import database_summary
from storage.urls import normalize_database_url
from tests.cli_harness import run_conjure
from tests.harness import all_jobs, running_conjure
from tests.test_admin import BEARER, TOKEN, _signed_in

WHERE = {"platform": "console", "workspace": "local"}


async def test_a_cookie_with_characters_outside_ascii_is_not_a_session_not_a_500(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        # Latin-1 bytes in a Cookie header: "²" counts as a digit to str.isdigit, "é" is not
        # ASCII; whoever sends them is not signed in (sent raw, as a browser or a script may).
        for value in (b"a.\xb2.b", b"\xe9.1.b", b"a.1.\xe9"):
            response = await conjure.http.get(
                "/admin/jobs", headers=[(b"cookie", b"conjure_admin=" + value)]
            )
            assert response.status_code == 303, (value, response.status_code)
            assert response.headers["location"] == "/admin/login"


async def test_a_form_with_too_many_fields_is_a_400_not_a_500(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        many = {f"f{n}": "x" for n in range(30)}
        login = await conjure.http.post("/admin/login", data={"token": TOKEN, **many})
        assert login.status_code == 400 and "set-cookie" not in login.headers
        quota = await conjure.http.post(
            "/admin/quotas", data={**WHERE, "user": "u", "jobs": "5", **many}, headers=BEARER
        )
        assert quota.status_code == 400
        assert await conjure.runtime.service.quotas.store.overrides() == []


async def test_removing_a_rule_by_an_odd_id_on_the_page_says_so(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        http = conjure.http
        csrf = await _signed_in(http)
        added = await http.post(
            "/admin/safety", data={**WHERE, "csrf": csrf, "kind": "word", "value": "fox"}
        )
        assert added.status_code == 200
        for odd in ("²", "٣", "99999999999999999999999", "-1", "1e3"):
            response = await http.post("/admin/safety", data={**WHERE, "csrf": csrf, "remove": odd})
            assert response.status_code == 400, (odd, response.status_code)
            assert "rule" in response.text
        assert [r.value for r in await conjure.runtime.service.safety.list("console", "local")] == [
            "fox"
        ]


async def test_removing_a_rule_by_an_odd_id_in_chat_says_so(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admins="console:you"
    ) as conjure:
        assert (await conjure.console.run_line("/conjure safety ban fox")).ok
        for odd in ("²", "#99999999999999999999999"):
            outcome = await conjure.console.run_line(f"/conjure safety remove {odd}")
            said = outcome.text or outcome.error or ""
            assert "internal error" not in said.lower(), said
            assert "rule" in said.lower() or "usage" in said.lower(), said
        assert len(await conjure.runtime.service.safety.list("console", "local")) == 1


async def test_the_page_refuses_a_subject_too_long_to_store_or_an_unknown_platform(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL enforces the columns' lengths (SQLite does not): a name too long to store is
    refused with a reason, on both, and so is a platform Conjure does not serve (an override or
    rule under a typo would never apply)."""
    async with running_conjure(
        sandbox_server, database_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        http = conjure.http
        for form in (
            {**WHERE, "user": "U" * 300, "jobs": "5"},
            {**WHERE, "workspace": "T" * 300, "scope": "workspace", "jobs": "5"},
            {**WHERE, "platform": "slackk", "user": "U1", "jobs": "5"},
        ):
            response = await http.post("/admin/quotas", data=form, headers=BEARER)
            assert response.status_code == 400, (form, response.status_code)
        for form in (
            {**WHERE, "workspace": "T" * 300, "kind": "word", "value": "fox"},
            {**WHERE, "platform": "slackk", "kind": "word", "value": "fox"},
        ):
            response = await http.post("/admin/safety", data=form, headers=BEARER)
            assert response.status_code == 400, (form, response.status_code)
        assert await conjure.runtime.service.quotas.store.overrides() == []
        assert await conjure.runtime.service.quotas.store.audit() == []


async def test_a_quota_for_a_mention_too_long_to_store_says_so_in_chat(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, database_url, tmp_path / "out", conjure_admins="console:you"
    ) as conjure:
        outcome = await conjure.console.run_line(f"/conjure quota <@{'U' * 300}> jobs=5")
        said = outcome.text or outcome.error or ""
        assert "not a user mention" in said, said
        assert await conjure.runtime.service.quotas.store.overrides() == []


# ---- the CLI --------------------------------------------------------------------------------


def test_a_database_url_with_a_bad_port_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    url = "postgresql://nobody:hunter2@127.0.0.1:notaport/x"
    for args in (["migrate"], ["jobs"], ["quota", "show"]):
        result = run_conjure(*args, cwd=tmp_path, env={"CONJURE_DATABASE_URL": url})
        assert result.returncode != 0
        [line] = result.stderr.splitlines()  # one line, no traceback
        assert line.startswith("conjure: CONJURE_DATABASE_URL: "), line
        assert "hunter2" not in result.stderr


def test_a_password_with_an_unescaped_at_sign_is_never_shown_as_the_host(tmp_path: Path) -> None:
    """SQLAlchemy ends the password at its first '@': the rest of it was read as the host and
    printed, "cannot reach the database at secr3t@127.0.0.1:1", on the terminal."""
    url = "postgresql://nobody:hunter2@secr3t@127.0.0.1:1/x"
    for args in (["migrate"], ["jobs"], ["quota", "show"]):
        result = run_conjure(*args, cwd=tmp_path, env={"CONJURE_DATABASE_URL": url})
        assert result.returncode != 0
        [line] = result.stderr.splitlines()
        assert line == f"conjure: {UNREADABLE_DATABASE_URL}", line
    assert database_summary(normalize_database_url(url)) == "unknown"


def test_cli_values_out_of_range_are_named_not_blamed_on_the_database(
    database_url: str, tmp_path: Path
) -> None:
    env = {"CONJURE_DATABASE_URL": database_url}
    cases = {
        ("jobs", "--since", "99999999d"): "--since",
        ("jobs", "--since", "9999-12-31T23:59:59-05:00"): "--since",
        ("jobs", "--limit", "99999999999999999999"): "--limit",
        ("report", "--month", "9999-12"): "--month",
        ("safety", "remove", "--platform", "slack", "--workspace", "T1", "99999999999999"): "id",
        ("safety", "remove", "--platform", "slack", "--workspace", "T1", "²"): "id",
        ("quota", "set", "--platform", "slack", "--workspace", "T1", "--user", "U" * 300,
         "--jobs-per-day", "5"): "--user",
        ("quota", "set", "--platform", "slack", "--workspace", "T" * 300,
         "--jobs-per-day", "5"): "--workspace",
        ("safety", "ban", "--platform", "slack", "--workspace", "T" * 300, "fox"): "--workspace",
        # "$TEAM" unset: a rule for no workspace, reported as added
        ("safety", "ban", "--platform", "slack", "--workspace", "", "fox"): "--workspace",
        ("safety", "pattern", "--platform", "slack", "--workspace", " ", "fo+x"): "--workspace",
    }  # fmt: skip
    for args, named in cases.items():
        result = run_conjure(*args, cwd=tmp_path, env=env)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert named in lines[-1] and "CONJURE_DATABASE_URL" not in lines[-1], (args, lines)
    shown = run_conjure("quota", "show", cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "T1" not in shown.stdout, shown.stdout


def test_a_user_typed_as_a_mention_in_the_cli_is_the_user(
    database_url: str, tmp_path: Path
) -> None:
    """`--user @U0ADA` (or a pasted `<@U0ADA|ada>`) once made an override for a user named
    "@U0ADA", which never applied to anyone; it is U0ADA's."""
    env = {"CONJURE_DATABASE_URL": database_url}
    where = ("--platform", "slack", "--workspace", "T1")
    for typed, jobs in (("@U0ADA", "3"), ("<@U0ADA|ada>", "4")):
        ran = run_conjure("quota", "set", *where, "--user", typed, "--jobs-per-day", jobs,
                          cwd=tmp_path, env=env)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        shown = run_conjure("quota", "show", *where, "--user", "U0ADA", cwd=tmp_path, env=env)
        assert (
            shown.stdout.startswith("user slack:T1:U0ADA: ") and f"jobs {jobs}/day" in shown.stdout
        )


# ---- parsing --------------------------------------------------------------------------------


async def test_a_whole_number_too_long_for_python_is_a_usage_answer(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """Python refuses to read an int of more than 4,300 digits (ValueError, not a UsageError):
    a Discord prompt (6,000 characters) can carry one in `--seed`."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a fox --seed " + "9" * 4400)
        said = outcome.error or outcome.text or ""
        assert not outcome.ok and "--seed" in said, said
        assert sandbox_server.sandbox.create_count == 0


async def test_input_no_check_foresaw_is_answered_not_raised(
    sandbox_server, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands.handle never raises: a command whose reading fails in a way no check foresaw
    (as the 4,300 digits above once did) gets the internal-error answer, and nothing starts."""

    def broken(*args: object) -> object:
        raise ValueError("a case nobody foresaw")

    monkeypatch.setattr("bot.commands.handler.parse_invocation", broken)
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a fox")
    assert not outcome.ok and outcome.error == INTERNAL_ERROR
    assert sandbox_server.sandbox.create_count == 0


async def test_a_prompt_with_a_nul_in_it_runs_without_it(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    """A NUL pasted into a prompt shows as nothing; PostgreSQL stores none in text, so the
    command was refused as "Conjure cannot reach its database". It runs, without the NUL."""
    async with running_conjure(sandbox_server, database_url, tmp_path / "out") as conjure:
        outcome = await conjure.console.run_line("/imagine a fox\x00 in the snow")
        [job] = await all_jobs(conjure.runtime.store)
    assert outcome.ok and job.prompt == "a fox in the snow"


# ---- the audit trail ------------------------------------------------------------------------


async def test_a_rule_removed_from_two_places_at_once_is_removed_and_audited_once(
    database_url: str,
) -> None:
    """Two admins (or instances) remove the same rule at the same moment: one removes it, the
    others are told there is no such rule, and the audit trail says it once."""
    import asyncio

    from sqlalchemy import select

    from bot.safety import SafetyRules
    from storage.engine import create_engine
    from storage.models import AuditEntry

    engines = [create_engine(database_url) for _ in range(2)]
    try:
        places = [SafetyRules(engine) for engine in engines]
        for attempt in range(5):
            rule = await places[0].add("slack", "T1", "word", f"fox{attempt}", "cli")
            removed = await asyncio.gather(
                *(places[n % 2].remove("slack", "T1", rule.id, f"admin{n}") for n in range(8))
            )
            assert removed.count(True) == 1, (attempt, removed)
        async with engines[0].connect() as conn:
            actions = (
                await conn.execute(
                    select(AuditEntry.__table__.c.action).where(
                        AuditEntry.__table__.c.action == "safety.remove"
                    )
                )
            ).all()
        assert len(actions) == 5
    finally:
        for engine in engines:
            await engine.dispose()
