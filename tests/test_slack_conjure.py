"""`/conjure` in Slack: private answers, in the ack when quick, mentions kept as mentions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.slack import listener as slack_commands
from tests.slack_harness import running_slack_conjure


async def test_conjure_usage_models_and_help_answer_privately_in_the_ack(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_user_jobs_per_day=3
    ) as conjure:
        await conjure.slash("/imagine", "a hat")
        await conjure.settle(sandbox_server)
        usage = (await conjure.slash("/conjure", "usage")).ack
        models = (await conjure.slash("/conjure", "models")).ack
        helped = (await conjure.slash("/conjure", "")).ack
        other = (await conjure.slash("/conjure", "usage", user_id="U0EVE")).ack

        assert {a["response_type"] for a in (usage, models, helped, other)} == {"ephemeral"}
        assert "Jobs today: 1 of 3; 2 left" in usage["text"] and "$0.003" in usage["text"]
        assert "Jobs today: 0 of 3; 3 left" in other["text"]
        assert "flux-schnell" in models["text"] and "$0.003 per output" in models["text"]
        # Slack would read a bare <prompt> as markup and swallow it.
        assert "• /imagine &lt;prompt&gt; [--ar " in helped["text"]
        assert "/conjure usage" in helped["text"]
        assert len(conjure.fake.channel_messages("C0GENERAL")) == 1  # only the /imagine
        assert conjure.fake.responses == []


async def test_admin_subcommands_keep_slack_mentions_as_mentions(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_admins="slack:U0ADA"
    ) as conjure:
        # /conjure has should_escape: Slack sends the typed "@eve" as <@U0EVE|eve>.
        set_quota = "quota <@U0EVE|eve> jobs=5/day"
        done = (await conjure.slash("/conjure", wire_text=set_quota)).ack
        refused = (await conjure.slash("/conjure", wire_text=set_quota, user_id="U0EVE")).ack
        await conjure.slash("/imagine", "a hat", user_id="U0EVE")
        await conjure.settle(sandbox_server)
        report = (await conjure.slash("/conjure", "report")).ack

        assert done["text"].startswith("<@U0EVE> now has limits: jobs 5/day")
        assert refused["text"].startswith("Only Conjure admins can do that.")
        assert "<@U0EVE>: 1 job, $0.003" in report["text"]
        usage = (await conjure.slash("/conjure", "usage", user_id="U0EVE")).ack
        assert "Jobs today: 1 of 5; 4 left" in usage["text"]


async def test_a_budget_alert_reaches_the_admin_channel_with_a_real_mention(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(
        sandbox_server,
        sqlite_url,
        conjure_user_usd_per_month=0.003,
        conjure_alert_channels="slack:C0ADMINS",
    ) as conjure:
        await conjure.slash("/imagine", "an expensive hat")
        await conjure.settle(sandbox_server)
        alerts = [m.text for m in conjure.fake.channel_messages("C0ADMINS")]
        assert alerts and all(text.startswith("Budget alert: <@U0ADA> has") for text in alerts)
        assert any("100% of the monthly budget" in text for text in alerts)


async def test_a_slow_conjure_answer_is_acked_at_once_and_sent_through_response_url(
    sandbox_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slack_commands, "CONJURE_ACK_BUDGET", 0.01)
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        commands = conjure.runtime.commands
        answer_now = commands.handle

        async def slow_answer(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.1)  # longer than the budget: the ack cannot carry the answer
            return await answer_now(*args, **kwargs)

        monkeypatch.setattr(commands, "handle", slow_answer)
        sent = await conjure.slash("/conjure", "usage")
        await conjure.service.wait_idle()
        assert sent.response.status_code == 200 and sent.response.content == b""
        [answer] = conjure.fake.responses_to(sent.response_id)
        assert answer.response_type == "ephemeral"
        assert answer.text.startswith("Jobs today: 0 (no limit)")
