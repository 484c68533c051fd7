"""Webhooks that come after their job's outcome: they change nothing, now or later."""

from __future__ import annotations

import time
from pathlib import Path

from bot.sandbox.webhooks import encode_body, signed_headers
from tests.harness import running_conjure, settle
from tests.sandbox_fixtures import SandboxServer

# At 3 edits a minute, one job alone in its workspace is shown every 20 s, before flux-schnell's
# 30 s run limit: its `start` and `logs` are worth asking for. With a second job followed, every
# 40 s: only its outcome is (bot.updates.FollowedJobs.status_worth_asking).
EDITS_PER_MINUTE = 3.0


def _events_asked(sandbox: SandboxServer) -> list[list[str] | None]:
    predictions = sorted(sandbox.sandbox.predictions.values(), key=lambda p: p["created_at"])
    return [p["webhook_events_filter"] for p in predictions]


async def test_a_late_processing_webhook_does_not_cost_the_next_job_its_status_edits(
    sandbox_server: SandboxServer, sqlite_url: str, tmp_path: Path
) -> None:
    """A `processing` webhook of a job already delivered (a retry, out of order) made Conjure
    follow that job again, for good: the workspace's status edits were then shared with a job
    that never ends, and, a few such webhooks on, its new jobs were no longer shown running."""
    async with running_conjure(
        sandbox_server,
        sqlite_url,
        tmp_path / "out",
        conjure_status_edits_per_minute=EDITS_PER_MINUTE,
    ) as conjure:
        first = await conjure.console.run_line("/imagine an owl", timeout=20)
        await settle(conjure, sandbox_server)
        assert first.ok
        [done] = sandbox_server.sandbox.predictions.values()
        late = {**done, "status": "processing", "output": None, "completed_at": None}
        body = encode_body(late)
        headers = signed_headers(sandbox_server.webhook_secret, "msg_late", int(time.time()), body)
        path = done["webhook"].removeprefix(conjure.url)
        response = await conjure.http.post(path, content=body, headers=headers)
        assert response.status_code == 200

        second = await conjure.console.run_line("/imagine a second owl", timeout=20)
        await settle(conjure, sandbox_server)
        assert second.ok
    first_events, second_events = _events_asked(sandbox_server)
    assert first_events is not None and "logs" in first_events
    assert second_events == first_events
