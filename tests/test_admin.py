"""The admin page over HTTP, through the real app on loopback: off without its token; nothing
shown without a session or Bearer; a wrong token refused; a change without the CSRF token is
403 and changes nothing; a quota changed there is audited as `admin-page` and in force."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import httpx

from storage.jobs import user_subject
from tests.harness import running_conjure, settle

TOKEN = "admin-token-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PAGES = ("/admin", "/admin/jobs", "/admin/quotas", "/admin/audit", "/admin/audit.csv")


async def _signed_in(http: httpx.AsyncClient) -> str:
    """Sign in through the form; the CSRF token the quotas page carries."""
    response = await http.post("/admin/login", data={"token": TOKEN})
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin" in cookie
    page = await http.get("/admin/quotas")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


async def test_without_the_token_set_the_admin_page_is_not_there(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        for path in (*PAGES, "/admin/login"):
            assert (await conjure.http.get(path, headers=BEARER)).status_code == 404


async def test_nothing_is_shown_without_a_session_and_a_wrong_token_is_refused(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        assert (await conjure.console.run_line("/imagine a secret fox")).ok
        await settle(conjure, sandbox_server)
        http = conjure.http
        for path in PAGES:
            response = await http.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/admin/login"
            assert "fox" not in response.text
            wrong = await http.get(path, headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401 and "fox" not in wrong.text
        cookies = {"conjure_admin": "a.1.b"}
        async with httpx.AsyncClient(base_url=conjure.url, cookies=cookies) as forger:
            assert (await forger.get("/admin/jobs")).status_code == 303
        login = await http.post("/admin/login", data={"token": TOKEN + "x"})
        assert login.status_code == 401 and "set-cookie" not in login.headers
        assert "not the admin token" in login.text
        refused = await http.post("/admin/quotas", data={"platform": "console"})
        assert refused.status_code == 401


async def test_a_script_reads_every_page_with_bearer_and_gets_the_audit_as_csv(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        assert (await conjure.console.run_line("/imagine a bearer fox")).ok
        await settle(conjure, sandbox_server)
        http = conjure.http
        spend = await http.get("/admin", headers=BEARER)
        assert spend.status_code == 200 and "<svg" in spend.text and 'class="bar"' in spend.text
        assert "default-src 'none'" in spend.headers["content-security-policy"]
        jobs = await http.get("/admin/jobs", params={"user": "you"}, headers=BEARER)
        assert "a bearer fox" in jobs.text and "succeeded" in jobs.text
        nobody = await http.get("/admin/jobs", params={"user": "nobody"}, headers=BEARER)
        assert "a bearer fox" not in nobody.text
        # A script changes a quota without a CSRF field: Bearer carries nothing ambient.
        changed = await http.post(
            "/admin/quotas",
            data={"scope": "user", "platform": "console", "workspace": "local", "user": "you",
                  "inflight": "3"},
            headers=BEARER,
        )  # fmt: skip
        assert changed.status_code == 200 and "now has limits" in changed.text
        exported = await http.get("/admin/audit.csv", headers=BEARER)
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert rows[0]["actor"] == "admin-page" and rows[0]["action"] == "quota.set"


async def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        http = conjure.http
        csrf = await _signed_in(http)
        form = {"scope": "user", "platform": "console", "workspace": "local", "user": "you",
                "jobs": "0"}  # fmt: skip
        for bad in ({}, {"csrf": "forged"}, {"csrf": csrf[:-1]}):
            response = await http.post("/admin/quotas", data={**form, **bad})
            assert response.status_code == 403
        subject = user_subject("console", "local", "you")
        quotas = conjure.service.quotas
        assert await quotas.store.override("user", subject) is None
        assert await quotas.store.audit() == []


async def test_a_quota_changed_on_the_page_is_audited_and_enforced(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        http = conjure.http
        csrf = await _signed_in(http)
        form = {"csrf": csrf, "scope": "user", "platform": "console", "workspace": "local",
                "user": "you"}  # fmt: skip
        bad = await http.post("/admin/quotas", data={**form, "jobs": "-1"})
        assert bad.status_code == 400 and "cannot be negative" in bad.text
        ok = await http.post("/admin/quotas", data={**form, "jobs": "0", "usd": "$2"})
        assert ok.status_code == 200 and "now has limits" in ok.text
        [entry] = await conjure.service.quotas.store.audit()
        assert entry.actor == "admin-page" and entry.action == "quota.set"
        assert (
            entry.detail["jobs_per_day"] == 0 and entry.detail["usd_per_month_micros"] == 2_000_000
        )
        refused = await conjure.console.run_line("/imagine one more")
        assert not refused.ok and "daily job limit is 0" in (refused.error or "")
        audit = await http.get("/admin/audit")
        assert "admin-page" in audit.text and "quota.set" in audit.text
        out = await http.post("/admin/logout", data={"csrf": csrf})
        assert out.status_code == 303
        assert (await http.get("/admin/audit")).status_code == 303


async def test_safety_rules_set_on_the_page_refuse_the_next_prompt_and_are_audited(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        http = conjure.http
        csrf = await _signed_in(http)
        where = {"platform": "console", "workspace": "local"}
        forged = await http.post("/admin/safety", data={**where, "kind": "word", "value": "fox"})
        assert forged.status_code == 403  # no CSRF token: nothing added
        assert await conjure.service.safety.list("console", "local") == []
        bad = await http.post(
            "/admin/safety", data={**where, "csrf": csrf, "kind": "pattern", "value": "(a+)+"}
        )
        assert bad.status_code == 400 and 'role="alert"' in bad.text
        added = await http.post(
            "/admin/safety", data={**where, "csrf": csrf, "kind": "word", "value": "fox"}
        )
        assert (
            added.status_code == 200 and "added" in added.text and "<code>fox</code>" in added.text
        )
        refused = await conjure.console.run_line("/imagine a red fox")
        assert not refused.ok and "isn't allowed in this workspace" in (refused.error or "")
        assert sandbox_server.sandbox.create_count == 0
        actions = [(e.actor, e.action) for e in await conjure.service.quotas.store.audit()]
        assert ("admin-page", "safety.add") in actions
        assert any(action == "safety.refused" for _, action in actions)
        [rule] = await conjure.service.safety.list("console", "local")
        removed = await http.post(
            "/admin/safety", data={**where, "csrf": csrf, "remove": str(rule.id)}
        )
        assert removed.status_code == 200 and "No rules" in removed.text
        listed = await http.get("/admin/safety", params=where, headers=BEARER)
        assert listed.status_code == 200 and "No rules" in listed.text
