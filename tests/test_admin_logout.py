"""Logging out of the admin page ends the session on the server, not only in the browser.

A copy of the cookie taken before the logout (a shared computer, a proxy's log, a profile backup)
is refused afterwards, on this instance and on any other on the same database, and a change sent
with it changes nothing; a session signed in separately is untouched. A database that cannot be
read to check a cookie refuses the cookie's requests (503): reads and changes alike.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.admin.throttle import MAX_FAILURES, WINDOW, SignInThrottle
from storage.admin_sessions import KEPT_AFTER, EndedSessions
from storage.engine import create_engine, write
from storage.jobs import user_subject
from storage.models import EndedAdminSession, utcnow
from tests.harness import Conjure, database_not_answering, running_conjure

TOKEN = "admin-token-for-logout-tests-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
COOKIE = "conjure_admin"
SUBJECT = user_subject("console", "local", "you")
QUOTA = {"scope": "user", "platform": "console", "workspace": "local", "user": "you"}


def with_admin_page(
    sandbox: Any, database_url: str, output_dir: Path
) -> contextlib.AbstractAsyncContextManager[Conjure]:
    """Conjure serving its admin page, whose admin token is TOKEN."""
    return running_conjure(sandbox, database_url, output_dir, conjure_admin_token=TOKEN)


async def _signed_in(http: httpx.AsyncClient) -> str:
    """Sign in through the form, as a person does; the CSRF token the quotas page carries."""
    response = await http.post("/admin/login", data={"token": TOKEN})
    assert response.status_code == 303, response.text
    page = await http.get("/admin/quotas")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _client(conjure: Conjure, cookie: str | None = None) -> httpx.AsyncClient:
    """A browser of its own; with `cookie`, one holding a copy of someone's session cookie."""
    cookies = {COOKIE: cookie} if cookie is not None else None
    return httpx.AsyncClient(base_url=conjure.url, cookies=cookies)


async def _jobs_per_day(conjure: Conjure) -> int | None:
    override = await conjure.service.quotas.store.override("user", SUBJECT)
    return None if override is None else override.jobs_per_day


async def _refused(copy: httpx.AsyncClient, csrf: str) -> None:
    """Every page answers the copied cookie as it answers someone signed out, and a change
    made with it (its CSRF token and all) is refused."""
    for path in ("/admin", "/admin/quotas", "/admin/audit.csv"):
        page = await copy.get(path)
        assert page.status_code == 303 and page.headers["location"] == "/admin/login", path
    change = await copy.post("/admin/quotas", data={**QUOTA, "csrf": csrf, "jobs": "0"})
    assert change.status_code == 401


async def test_a_copied_cookie_is_refused_after_logout_and_other_sessions_go_on(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    async with with_admin_page(sandbox_server, database_url, tmp_path / "out") as conjure:
        http = conjure.http
        csrf = await _signed_in(http)
        copied = http.cookies[COOKIE]
        async with _client(conjure) as colleague, _client(conjure, copied) as copy:
            other_csrf = await _signed_in(colleague)
            set_five = await http.post("/admin/quotas", data={**QUOTA, "csrf": csrf, "jobs": "5"})
            assert set_five.status_code == 200 and "now has limits" in set_five.text
            assert (await copy.get("/admin/quotas")).status_code == 200  # the copy works, so far

            out = await http.post("/admin/logout", data={"csrf": csrf})
            assert out.status_code == 303 and out.headers["location"] == "/admin/login"
            assert COOKIE not in http.cookies  # the browser forgot it, as before

            await _refused(copy, csrf)
            assert await _jobs_per_day(conjure) == 5  # the quota stays as it was
            audit = await conjure.service.quotas.store.audit()
            assert [entry.detail.get("jobs_per_day") for entry in audit] == [5]
            again = await copy.post("/admin/logout", data={"csrf": csrf})
            assert again.status_code == 401  # nothing left to log out of

            # The colleague's session, signed in separately, is untouched.
            assert (await colleague.get("/admin/audit")).status_code == 200
            theirs = await colleague.post(
                "/admin/quotas", data={**QUOTA, "csrf": other_csrf, "jobs": "7"}
            )
            assert theirs.status_code == 200 and "now has limits" in theirs.text
            assert await _jobs_per_day(conjure) == 7
            # Bearer has no session to end: a script goes on as before.
            assert (await http.get("/admin/audit.csv", headers=BEARER)).status_code == 200


async def test_a_logout_on_one_instance_ends_the_session_on_another(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    async with (
        with_admin_page(sandbox_server, database_url, tmp_path / "one") as one,
        with_admin_page(sandbox_server, database_url, tmp_path / "two") as two,
    ):
        csrf = await _signed_in(one.http)
        copied = one.http.cookies[COOKIE]
        async with _client(two, copied) as copy_on_two:
            assert (await copy_on_two.get("/admin/quotas")).status_code == 200
            out = await one.http.post("/admin/logout", data={"csrf": csrf})
            assert out.status_code == 303
            await _refused(copy_on_two, csrf)
        assert await _jobs_per_day(two) is None


async def test_a_session_that_cannot_be_checked_is_refused_and_changes_nothing(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    async with with_admin_page(sandbox_server, database_url, tmp_path / "out") as conjure:
        http = conjure.http
        csrf = await _signed_in(http)
        with database_not_answering(conjure.runtime.engine, "ended_admin_session"):
            change = await http.post("/admin/quotas", data={**QUOTA, "csrf": csrf, "jobs": "0"})
            assert change.status_code == 503 and "try again" in change.text
            page = await http.get("/admin/quotas")
            assert page.status_code == 503 and "csrf" not in page.text
            # Bearer is no session: it is not checked against the table.
            assert (await http.get("/admin/quotas", headers=BEARER)).status_code == 200
        assert await _jobs_per_day(conjure) is None
        assert await conjure.service.quotas.store.audit() == []
        assert (await http.get("/admin/quotas")).status_code == 200  # the database is back
        with database_not_answering(conjure.runtime.engine, "INSERT INTO ended_admin_session"):
            # A logout that cannot be recorded says so, and leaves the cookie to try again with.
            out = await http.post("/admin/logout", data={"csrf": csrf})
            assert out.status_code == 503 and "set-cookie" not in out.headers
        assert (await http.post("/admin/logout", data={"csrf": csrf})).status_code == 303
        assert (await http.get("/admin/quotas")).status_code == 303


async def test_a_logout_forgets_sessions_long_lapsed_and_may_come_twice(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        sessions, now = EndedSessions(engine), utcnow()
        old, recent, live = "a" * 64, "b" * 64, "c" * 64
        async with write(engine) as conn:  # ended long ago, before the last logout
            table = EndedAdminSession.__table__  # type: ignore[attr-defined]
            await conn.execute(
                table.insert().values(session_hash=old, valid_until=now - KEPT_AFTER * 2)
            )
        assert await sessions.ended(old)
        await sessions.end(recent, now - timedelta(hours=1))  # lapsed, but within the margin
        await sessions.end(live, now + timedelta(hours=11))
        await sessions.end(live, now + timedelta(hours=11))  # two logouts at once: no error
        assert not await sessions.ended(old)  # deleted by a later logout
        assert await sessions.ended(recent) and await sessions.ended(live)
        assert not await sessions.ended("d" * 64)
    finally:
        await engine.dispose()


async def test_a_cookie_made_from_the_pages_csrf_token_is_refused(
    sandbox_server: Any, database_url: str, tmp_path: Path
) -> None:
    """Every page shows its CSRF token (the logout form's hidden field), so a saved page or a
    proxy's log of form posts has it. Signed like a cookie, with the same key, it made one
    (`csrf:<id>.<issued>.<token>`): a session of its own, which outlived the logout of the
    session it came from and could change quotas."""
    async with with_admin_page(sandbox_server, database_url, tmp_path / "out") as conjure:
        async with _client(conjure) as admin:
            csrf = await _signed_in(admin)
            session_id, issued, _ = admin.cookies[COOKIE].split(".")
            await admin.post("/admin/logout", data={"csrf": csrf})
        async with _client(conjure, f"csrf:{session_id}.{issued}.{csrf}") as forged:
            await _refused(forged, csrf)
        assert await _jobs_per_day(conjure) is None


async def test_wrong_tokens_are_slowed_per_client_and_logged(
    sandbox_server: Any, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The admin token guards every quota and budget: a client that offers ten wrong tokens in
    a minute (the form or Bearer) is refused (429) until its oldest try is a minute old, the
    right token included; the tries are in the log. Five hundred guesses went through in
    under a second, unlogged."""
    async with with_admin_page(sandbox_server, database_url, tmp_path / "out") as conjure:
        async with _client(conjure) as guesser:
            answers = [
                (await guesser.post("/admin/login", data={"token": f"guess-{n:04d}-abcdefgh"}))
                for n in range(8)
            ] + [
                await guesser.get("/admin", headers={"Authorization": f"Bearer guess-{n}"})
                for n in range(2)
            ]
            assert [a.status_code for a in answers] == [401] * 10
            refused = await guesser.post("/admin/login", data={"token": TOKEN})
            assert refused.status_code == 429 and COOKIE not in guesser.cookies
            bearer = await guesser.get("/admin", headers=BEARER)
            assert bearer.status_code == 429
        assert "admin sign-in with a wrong token" in caplog.text


def test_a_throttled_client_may_try_again_once_its_oldest_wrong_token_is_a_minute_old() -> None:
    now = [0.0]
    throttle = SignInThrottle(clock=lambda: now[0])
    for _ in range(MAX_FAILURES):
        throttle.failed("198.51.100.7")
        now[0] += 1.0
    assert throttle.blocked("198.51.100.7") and not throttle.blocked("198.51.100.8")
    now[0] = WINDOW + 0.5  # the first wrong token is over a minute old
    assert not throttle.blocked("198.51.100.7")
