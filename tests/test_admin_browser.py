"""The admin page in a real headless browser: Debian's chromium driven by Playwright.

Sign in through the form, see today's spend as a bar in the SVG chart, set a user's jobs per
day to 0 through the quotas form, and see that user's next command refused naming the limit.
The browser is the system's (`executable_path`); `playwright install` is never run. Skipped only
where chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.quotas.windows import day_window
from storage.models import utcnow
from tests.harness import running_conjure, settle

CHROMIUM = shutil.which("chromium")
TOKEN = "browser-admin-token-0123456789"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


async def test_sign_in_see_the_chart_change_a_quota_and_see_it_enforced(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admin_token=TOKEN
    ) as conjure:
        assert (await conjure.console.run_line("/imagine a fox in the snow")).ok
        await settle(conjure, sandbox_server)
        today = day_window(utcnow(), conjure.service.quotas.zone).start.date().isoformat()

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{conjure.url}/admin")
                assert page.url.endswith("/admin/login")  # nothing shown before signing in
                await page.fill("input[name=token]", TOKEN)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{conjure.url}/admin")

                bar = page.locator(f"#spend-chart rect.bar[data-day='{today}']")
                assert await bar.count() == 1
                assert float(await bar.get_attribute("height") or 0) > 0
                assert await page.locator("#spend-chart rect.bar").count() == 1

                await page.click("a[href='/admin/quotas']")
                form = page.locator("#quota-form")
                await form.locator("select[name=scope]").select_option("user")
                await form.locator("input[name=platform]").fill("console")
                await form.locator("input[name=workspace]").fill("local")
                await form.locator("input[name=user]").fill("you")
                await form.locator("input[name=jobs]").fill("0")
                async with page.expect_navigation():
                    await form.locator("button[type=submit]").click()
                assert "now has limits" in await page.locator("[role=status]").inner_text()
                assert "console:local:you" in await page.locator("#overrides").inner_text()
            finally:
                await browser.close()

        refused = await conjure.console.run_line("/imagine another fox")
        assert not refused.ok
        assert "daily job limit is 0" in (refused.error or "")
