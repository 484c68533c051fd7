"""Follow-ups on the console (the buttons a chat shows, as commands) and the job service's cancel:
through the real app, the sandbox on loopback and a real database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from PIL import Image

from adapters.console import Outcome
from bot.followups.buttons import Action, Button
from bot.followups.service import Press
from bot.money import usd_to_micros
from bot.quotas.windows import month_window
from bot.sandbox.faults import HttpFault
from bot.sandbox.outputs import llama_tokens
from storage.jobs import user_subject
from storage.models import Delivery, Job, JobStatus, utcnow
from tests.harness import Conjure, running_conjure, settle

FLUX_SCHNELL_MICROS = 3000


async def only(conjure: Conjure, **where: str) -> list[Job]:
    jobs = await conjure.runtime.store.unfinished() + await finished(conjure)
    return [job for job in jobs if all(getattr(job, k) == v for k, v in where.items())]


async def finished(conjure: Conjure) -> list[Job]:
    store = conjure.runtime.store
    return [job for job in [await store.get(i) for i in conjure.console._jobs] if job is not None]


def size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


async def test_a_result_offers_its_follow_ups_and_reroll_runs_it_again_with_a_new_seed(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        first = await conjure.console.run_line("/imagine a lighthouse --n 2 --seed 7")
        assert first.ok and len(first.files) == 2
        assert "follow up with /reroll, /upscale 1-2, /vary 1-2" in conjure.output.getvalue()

        again = await conjure.console.run_line("/reroll")
        assert again.ok and len(again.files) == 2
        await settle(conjure, sandbox_server)
        parent, child = [await conjure.runtime.store.get(i) for i in conjure.console._jobs]
        assert parent is not None and child is not None
        assert (child.parent_id, child.followup, child.command) == (parent.id, "reroll", "imagine")
        assert child.input["seed"] != 7
        assert {**child.input, "seed": 7} == parent.input
        assert child.actual_micros == 2 * FLUX_SCHNELL_MICROS


async def test_upscale_sends_the_delivered_image_not_replicates_expired_link(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """U2 runs the upscaler on the second image as it was delivered (here: the saved file),
    after Replicate's link has died: the upscale of a file replaced on disk has its size."""
    out = tmp_path / "out"
    async with running_conjure(sandbox_server, sqlite_url, out) as conjure:
        made = await conjure.console.run_line("/imagine two boats --n 2")
        assert made.ok
        [job_id] = conjure.console._jobs
        await conjure.runtime.store.update_fields(
            job_id, completed_at=utcnow() - timedelta(hours=2)
        )
        parent = await conjure.runtime.store.get(job_id)
        gone = HttpFault(status=404, count=99, path_prefix=f"/files/{parent.prediction_id}/")
        sandbox_server.sandbox.faults.http.append(gone)
        Image.new("RGB", (120, 80), "navy").save(made.files[1], format="PNG")

        upscaled = await conjure.console.run_line("/upscale 2")
        assert upscaled.ok, upscaled.error
        [picture] = upscaled.files
        assert size(picture) == (240, 160)  # conjure.toml's default: scale 2
        [child] = [j for j in await finished(conjure) if j.followup == "upscale:2"]
        assert child.model == "real-esrgan" and child.input["scale"] == 2
        assert child.input["image"].startswith("data:image/png;base64,")  # what is on disk
        assert "follow up" not in conjure.output.getvalue().split("upscale")[-1]  # final


async def test_vary_runs_the_variation_model_with_the_prompt_and_the_image(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        assert (await conjure.console.run_line("/imagine a red barn")).ok
        varied = await conjure.console.run_line("/vary 1")
        assert varied.ok, varied.error
        [child] = [j for j in await finished(conjure) if j.followup == "vary:1"]
        assert child.model == "flux-dev" and child.prompt == "a red barn"
        assert child.input["prompt"] == "a red barn" and child.input["prompt_strength"] == 0.75
        assert child.input["image"].startswith("data:image/")


async def test_two_quick_presses_make_one_job(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        assert (await conjure.console.run_line("/imagine a comet")).ok
        [job_id] = conjure.console._jobs
        press = conjure.console._press(Button(Action.REROLL, job_id))
        replies = await asyncio.gather(*(conjure.runtime.followups.press(press) for _ in range(5)))
        await settle(conjure, sandbox_server)
        assert sum(reply.job is not None for reply in replies) == 1
        assert all(reply.text is None for reply in replies)  # the others say nothing
        assert sandbox_server.sandbox.create_count == 2


async def test_a_press_after_a_restart_works(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    async with running_conjure(sandbox_server, sqlite_url, out) as conjure:
        assert (await conjure.console.run_line("/imagine an owl --n 2")).ok
        [job_id] = conjure.console._jobs
    async with running_conjure(sandbox_server, sqlite_url, out) as restarted:
        upscaled = await restarted.console.run_line(f"/upscale {job_id} 1")
        assert upscaled.ok, upscaled.error
        [child] = [j for j in await finished(restarted) if j.parent_id == job_id]
        assert child.followup == "upscale:1"


async def test_anyone_may_follow_up_but_only_the_owner_or_an_admin_may_cancel(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    sandbox_server.sandbox.config.speed = 1.0  # llama runs ~3 s
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admins="console:boss"
    ) as conjure:
        console, store = conjure.console, conjure.runtime.store
        running = asyncio.create_task(console.run_line("/ask tell me a long story"))
        while not console._jobs or (await store.get(console._jobs[0])).status != "processing":
            await asyncio.sleep(0.02)  # running, so Replicate bills the time it ran
        [job_id] = console._jobs

        console.user = "bystander"
        refused = await console.run_line(f"/cancel {job_id[:6]}")
        assert not refused.ok and "Only the person who started this job" in (refused.error or "")
        assert (await store.get(job_id)).job_status is not JobStatus.CANCELED

        console.user = "you"
        canceled = await console.run_line("/cancel")
        assert canceled.ok
        outcome = await running
        assert not outcome.ok and outcome.error == "The job was canceled."
        await settle(conjure, sandbox_server)
        job = await store.get(job_id)
        prediction = sandbox_server.sandbox.predictions[job.prediction_id]
        assert job.job_status is JobStatus.CANCELED and prediction["status"] == "canceled"
        metrics = prediction["metrics"]
        # Billed for the tokens read and written before it was stopped, as Replicate bills.
        assert metrics["output_token_count"] < len(llama_tokens(prediction["input"]))
        used = metrics["input_token_count"], metrics["output_token_count"]
        assert job.actual_micros == usd_to_micros(
            (Decimal("0.05") * used[0] + Decimal("0.25") * used[1]) / 1_000_000
        )
        assert job.actual_micros > 0
        counter = await store.counter(
            "user", user_subject("console", "local", "you"), month_window(utcnow()).key
        )
        assert counter.spent_micros == job.actual_micros and counter.reserved_micros == 0

        console.user = "boss"  # an admin may cancel anyone's; this one is over (canceled)
        late = await console.run_line(f"/cancel {job_id}")
        assert not late.ok and "already canceled" in (late.error or "")


async def canceled_during_its_create(conjure: Conjure) -> tuple[str, asyncio.Task[Outcome]]:
    """A slow start's job, canceled by its owner while its create is on its way (the sandbox
    holds the create's answer): its id, and the command still waiting for its outcome."""
    running = asyncio.create_task(conjure.console.run_line("/imagine a slow start"))
    while not conjure.console._jobs:
        await asyncio.sleep(0.01)
    [job_id] = conjure.console._jobs
    job = await conjure.runtime.store.get(job_id)
    assert job is not None and job.prediction_id is None
    assert await conjure.service.cancel(job)
    return job_id, running


async def test_a_job_canceled_while_its_create_is_on_its_way_is_stopped_at_replicate(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    faults = sandbox_server.sandbox.faults
    faults.http.append(HttpFault(delay=0.5, method="POST", path_prefix="/v1/models/"))
    faults.slow_start = 2.0  # still starting when the late cancel reaches it
    faults.drop_webhooks = 1  # nor does its first webhook name the prediction before then
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        job_id, running = await canceled_during_its_create(conjure)

        outcome = await running
        assert outcome.error == "The job was canceled."
        await settle(conjure, sandbox_server)
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "canceled"  # the create answered after the cancel
        done = await conjure.runtime.store.get(job_id)
        assert done.job_status is JobStatus.CANCELED and done.actual_micros == 0
        assert done.delivery == Delivery.DELIVERED


async def test_a_follow_up_is_under_the_pressers_quota(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_user_jobs_per_day=1
    ) as conjure:
        assert (await conjure.console.run_line("/imagine a kite")).ok
        refused = await conjure.console.run_line("/reroll")
        assert not refused.ok and "all 1 of your jobs for today" in (refused.error or "")
        conjure.console.user = "friend"  # someone else's press is theirs to spend
        assert (await conjure.console.run_line("/reroll")).ok


async def test_buttons_that_conjure_did_not_make_are_refused(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        followups = conjure.runtime.followups
        for custom_id in (
            "conjure:reroll:zz:0",
            "other:thing",
            "conjure:upscale:" + "a" * 20 + ":0",
        ):
            press = Press("console", "local", "terminal", "you", custom_id)
            reply = await followups.press(press)
            assert reply.refused and "not one of Conjure's" in str(reply.text)
        gone = Press("console", "local", "terminal", "you", f"conjure:reroll:{'a' * 20}:0")
        assert "no longer knows" in str((await followups.press(gone)).text)
        nothing = await conjure.console.run_line("/upscale")
        assert not nothing.ok and "Which image?" in (nothing.error or "")


async def test_a_cancel_with_a_stale_copy_stops_the_prediction_its_webhook_named(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    """The create's answer is late but its first webhook has named the prediction: the cancel
    goes to Replicate (not just the row), so nothing runs on unbilled."""
    faults = sandbox_server.sandbox.faults
    faults.http.append(HttpFault(delay=0.5, method="POST", path_prefix="/v1/models/"))
    faults.slow_start = 2.0
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        store = conjure.runtime.store
        running = asyncio.create_task(conjure.console.run_line("/imagine a slow start"))
        while not conjure.console._jobs:
            await asyncio.sleep(0.01)
        [job_id] = conjure.console._jobs
        stale = await store.get(job_id)
        while (await store.get(job_id)).prediction_id is None:
            await asyncio.sleep(0.01)  # named by the "start" webhook, the create still held
        assert await conjure.service.cancel(stale)

        assert (await running).error == "The job was canceled."
        await settle(conjure, sandbox_server)
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["status"] == "canceled"
        done = await store.get(job_id)
        assert done.job_status is JobStatus.CANCELED and done.prediction_id == prediction["id"]
