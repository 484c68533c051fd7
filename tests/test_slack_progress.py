"""Progress reaches the thread parent, but a burst of webhooks edits it at most every 2 s."""

from __future__ import annotations

import itertools

from tests.slack_harness import running_slack_conjure

INTERVAL = 2.0
JITTER = 0.1  # the throttle stamps before the call; arrival at the fake may differ a little


async def test_a_burst_of_progress_webhooks_edits_the_parent_at_most_every_two_seconds(
    sandbox_server, sqlite_url: str
) -> None:
    # At speed 1 flux-dev runs 28 steps over ~3 s: a logs webhook every 0.5 s.
    sandbox_server.sandbox.config.speed = 1.0
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=INTERVAL
    ) as conjure:
        await conjure.slash("/imagine", "a slow lighthouse --model flux-dev")
        await conjure.settle(sandbox_server)

        progress_webhooks = [
            d
            for d in sandbox_server.sandbox.webhook_deliveries
            if d.event == "logs" and d.status == "processing"
        ]
        updates = conjure.fake.calls_to("chat.update")
        running = [call for call in updates if "🎨 running" in call.args["text"]]
        before_done = [call for call in updates if "✅ done" not in call.args["text"]]

        assert len(progress_webhooks) >= 4
        assert running, "the person saw progress"
        assert any("%" in call.args["text"] for call in running)
        assert len(before_done) < len(progress_webhooks)
        for earlier, later in itertools.pairwise(before_done):
            assert later.at - earlier.at >= INTERVAL - JITTER
        # The terminal update is never throttled: the parent ends as done.
        assert "✅ done" in updates[-1].args["text"]
