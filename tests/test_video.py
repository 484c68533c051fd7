"""Video out: `/video` runs the sandbox's minimax/video-01, shows progress, and the MP4 is
uploaded where the platform takes it, or linked (with when Replicate's link dies) where it is
too large, without downloading it whole just to fail. Asking first is off here (its own tests
are in test_confirm.py)."""

from __future__ import annotations

import struct

from bot.catalog import default_catalog
from bot.commands.parsing import parse_invocation
from bot.quotas.windows import month_window
from bot.replicate.progress import progress_from_logs
from bot.sandbox.video import render_video
from storage.jobs import user_subject
from storage.models import Delivery, utcnow
from tests.discord_harness import GUILD_ID, USER_ID, running_discord_conjure
from tests.fakes.slack_api import TEAM_ID
from tests.slack_harness import running_slack_conjure

CHANNEL = "C0GENERAL"
VIDEO_MICROS = 500_000  # $0.50 a video, as Replicate prices minimax/video-01
NO_ASKING = {"conjure_confirm_above_usd": "0"}


def boxes(data: bytes) -> list[bytes]:
    """The top-level MP4 boxes, in order."""
    kinds, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        kinds.append(kind)
        offset += size
    assert offset == len(data)
    return kinds


async def spent(conjure, platform: str, workspace: str, user_id: str) -> int:
    subject = user_subject(platform, workspace, user_id)
    counter = await conjure.runtime.store.counter("user", subject, month_window(utcnow()).key)
    return 0 if counter is None else counter.spent_micros


def test_video_is_priced_per_video_as_replicate_prices_it() -> None:
    invocation = parse_invocation(default_catalog(), "video", "a fox in the snow")
    assert invocation.model.ref == "minimax/video-01" and invocation.model.kind == "video"
    assert invocation.estimate_micros() == invocation.ceiling_micros() == VIDEO_MICROS
    assert invocation.deadline_seconds() is None  # per output: no run time raises the cost


def test_the_sandbox_video_is_a_small_real_mp4_that_can_be_padded() -> None:
    video = render_video("a fox")
    assert boxes(video) == [b"ftyp", b"mdat", b"moov"] and len(video) < 64 * 1024
    assert b"mp4v" in video and b"avc1" not in video
    padded = render_video("a fox", size=3_000_000)
    assert len(padded) == 3_000_000 and boxes(padded) == [b"ftyp", b"mdat", b"moov", b"free"]


async def test_slack_video_is_uploaded_into_the_thread_with_progress_and_charged_once(
    sandbox_server, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.run_time_factor = 40  # long enough for a progress webhook
    async with running_slack_conjure(
        sandbox_server, sqlite_url, progress_interval=0, **NO_ASKING
    ) as conjure:
        await conjure.slash("/video", "a red fox running through the snow")
        await conjure.settle(sandbox_server)

        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["output"].endswith("/output.mp4")
        assert progress_from_logs(prediction["logs"]) == 100
        [parent] = conjure.fake.channel_messages(CHANNEL)
        assert any("%" in edit for edit in parent.edits)  # progress while it ran
        [upload] = conjure.fake.shared_uploads()
        assert upload.filename == "output.mp4" and upload.thread_ts == parent.ts
        assert upload.content is not None and boxes(upload.content)[0] == b"ftyp"
        assert upload.initial_comment == "<@U0ADA> here is your video."
        assert "✅ done" in parent.text and "$0.50" in parent.text
        job = await conjure.runtime.store.find_by_prediction(prediction["id"])
        assert job is not None and job.delivery == Delivery.DELIVERED
        assert job.actual_micros == VIDEO_MICROS
        assert await spent(conjure, "slack", TEAM_ID, "U0ADA") == VIDEO_MICROS


async def test_slack_video_over_the_cap_is_linked_with_its_expiry_not_uploaded(
    sandbox_server, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.video_bytes = 3_000_000
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_max_download_bytes=2_000_000, **NO_ASKING
    ) as conjure:
        await conjure.slash("/video", "a huge fox")
        await conjure.settle(sandbox_server)

        [prediction] = sandbox_server.sandbox.predictions.values()
        [parent] = conjure.fake.channel_messages(CHANNEL)
        [reply] = conjure.fake.replies(CHANNEL, parent.ts)
        assert reply.text.startswith("<@U0ADA>\n🔗 The video (3.0 MB) is larger than can be")
        assert "uploaded here (2.0 MB)" in reply.text and prediction["output"] in reply.text
        assert "It expires at " in reply.text and "UTC, an hour after the run" in reply.text
        assert conjure.fake.shared_uploads() == []
        assert "✅ done" in parent.text
        assert await spent(conjure, "slack", TEAM_ID, "U0ADA") == VIDEO_MICROS  # it ran


async def test_discord_video_is_attached_and_a_too_large_one_linked(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url, **NO_ASKING) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("video", {"prompt": "a fox on a skateboard"})
        await conjure.settle()
        message = fake.original(sent.token)
        assert message is not None
        assert [a["filename"] for a in message["attachments"]] == ["output.mp4"]
        assert "✅ done" in message["content"] and "$0.50" in message["content"]

        # The interaction says 1 MiB is all this server takes: a 2 MB video is linked (its
        # Content-Length says so before any of it is read).
        sandbox_server.sandbox.faults.video_bytes = 2_000_000
        big = await conjure.interact(
            "video", {"prompt": "a long fox"}, attachment_size_limit=1024 * 1024
        )
        await conjure.settle()
        linked = fake.original(big.token)
        assert linked is not None and linked["attachments"] == []
        output = list(sandbox_server.sandbox.predictions.values())[-1]["output"]
        assert (
            "🔗 The video (2.0 MB) is larger than can be uploaded here (1.0 MB)"
            in (linked["content"])
        )
        assert output in linked["content"] and "an hour after the run" in linked["content"]
        assert await spent(conjure, "discord", str(GUILD_ID), str(USER_ID)) == 2 * VIDEO_MICROS


def test_a_link_already_dead_is_not_offered() -> None:
    from datetime import timedelta

    from bot.adapter import LinkedOutput
    from bot.replicate.links import link_note

    link = LinkedOutput("https://replicate.delivery/x/output.mp4", 1, 30_000_000, 10_000_000)
    fresh = link_note(link, "video", utcnow(), several=False)
    assert fresh.startswith("🔗 The video (30.0 MB) is larger than can be uploaded here (10.0 MB)")
    assert link.url in fresh
    stale = link_note(link, "video", utcnow() - timedelta(hours=2), several=False)
    assert link.url not in stale and "expired at" in stale and "Run the command again" in stale


async def test_a_video_conjure_learns_of_late_is_linked_with_the_hour_replicate_keeps_it(
    sandbox_server, sqlite_url: str
) -> None:
    """Replicate deletes a run's files an hour after the run ended, not an hour after Conjure
    heard of it (a webhook lost, an outage ridden out): the note says when it really dies."""
    import asyncio
    from datetime import timedelta

    sandbox_server.sandbox.faults.video_bytes = 3_000_000
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000  # the result below is the test's
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_max_download_bytes=2_000_000, **NO_ASKING
    ) as conjure:
        await conjure.slash("/video", "a late fox")
        await conjure.service.wait_idle()
        [prediction_id] = sandbox_server.sandbox.predictions
        await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 30)
        final = await conjure.runtime.replicate.get_prediction(prediction_id)
        ended = utcnow() - timedelta(minutes=50)
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None
        await conjure.service.apply_prediction(
            job.id, final.model_copy(update={"completed_at": ended})
        )
        await conjure.settle(sandbox_server)

        [parent] = conjure.fake.channel_messages(CHANNEL)
        [reply] = conjure.fake.replies(CHANNEL, parent.ts)
        assert final.output in reply.text
        assert f"It expires at {ended + timedelta(hours=1):%H:%M} UTC" in reply.text

        # Past Replicate's hour (its file host still answering, for the test): not a dead link.
        await conjure.slash("/video", "a later fox")
        await conjure.service.wait_idle()
        [later_id] = [p for p in sandbox_server.sandbox.predictions if p != prediction_id]
        await asyncio.wait_for(sandbox_server.sandbox.runs[later_id].done.wait(), 30)
        final = await conjure.runtime.replicate.get_prediction(later_id)
        job = await conjure.runtime.store.find_by_prediction(later_id)
        assert job is not None
        update = {"completed_at": utcnow() - timedelta(minutes=70)}
        await conjure.service.apply_prediction(job.id, final.model_copy(update=update))
        await conjure.settle(sandbox_server)

        [_, parent] = conjure.fake.channel_messages(CHANNEL)
        [reply] = conjure.fake.replies(CHANNEL, parent.ts)
        assert final.output not in reply.text and "expired at" in reply.text
