"""The life of a prediction: created `starting`, then `processing` with progress logs, then done.

Durations are nominal seconds multiplied by the sandbox speed (`slow_start` is not scaled: it is
a fault measured in real seconds). Failure is decided at creation (`fail_next`, or a prompt with
the word FAIL_ME) and shows after the steps, like a safety checker rejecting the result.

A `Cancel-After` deadline is counted on the clock `metrics.predict_time` is measured on, the
real one, and not scaled by speed: the deadline bounds what a run is billed, so the time billed
(what ran) can never pass it, at any speed. Reached while `starting`, the prediction ends
`aborted` with no predict_time (not billed); while `processing`, `canceled` with the time it ran.
"""

from __future__ import annotations

import asyncio
import random
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from bot.sandbox.images import ImageInputError, read_image, read_local
from bot.sandbox.models import FakeModel
from bot.sandbox.outputs import (
    file_url,
    image_outputs,
    llama_tokens,
    upscale_output,
    vision_tokens,
    whisper_output,
)
from bot.sandbox.predictions import (
    TERMINAL,
    WEBHOOK_EVENTS,
    new_id,
    new_prediction,
    rfc3339,
    tqdm_line,
)
from bot.sandbox.state import Run, Sandbox
from bot.sandbox.streams import EventLog, stream_url
from bot.sandbox.video import CONTENT_TYPE as VIDEO_TYPE
from bot.sandbox.video import render_video
from bot.sandbox.webhooks import PredictionWebhooks

STARTING_SECONDS = 0.3  # x speed: queueing and booting before `processing`
SPEECH_STEPS = 8
UPSCALE_STEPS = 10  # x the model's step_seconds: the run time billed by the second
VIDEO_STEPS = 10  # progress lines of a video run (a real one takes minutes)
_FAIL_WORD = re.compile(r"\bFAIL_ME\b")
# Images are drawn on two threads, not on asyncio's default pool (six on two cores): six
# drawing threads took the GIL from the sandbox's own event loop, whose answers to creates and
# webhooks then came late, as Replicate's do not while its GPUs are busy. In the bench's burst
# of 500 the creates ended at 1.5 s instead of 2.3-2.5 s; two threads still draw faster than
# "2 s" runs need.
DRAWING_THREADS = 2
_drawing = ThreadPoolExecutor(DRAWING_THREADS, thread_name_prefix="sandbox-drawing")


def create_prediction(
    sandbox: Sandbox,
    *,
    model: FakeModel,
    version: str,
    raw_input: dict[str, Any],
    inputs: dict[str, Any],
    webhook: str | None,
    events_filter: list[str] | None,
    base_url: str,
    cancel_after: float | None = None,
) -> Run:
    """Create a prediction and start running it in the background, stopped `cancel_after`
    seconds from now if it has not finished by then."""
    if webhook is not None and events_filter is None:
        events_filter = list(WEBHOOK_EVENTS)
    prediction = new_prediction(
        prediction_id=new_id(),
        base_url=base_url,
        model=model.ref,
        version=version,
        input=raw_input,
        webhook=webhook,
        webhook_events_filter=events_filter,
        cancel_after=cancel_after,
    )
    if model.kind == "image" and "seed" not in inputs:
        inputs["seed"] = random.randrange(2**16)
    fail_error = sandbox.faults.take_failure()
    if fail_error is None and _FAIL_WORD.search(str(inputs.get("prompt", ""))):
        fail_error = sandbox.faults.fail_error
    loop = asyncio.get_running_loop()
    now = loop.time()
    run = Run(prediction, model, inputs, base_url, fail_error, created=now)
    run.deadline = None if cancel_after is None else now + cancel_after
    run.time_factor = sandbox.faults.run_time_factor
    run.run_seconds = sandbox.faults.run_seconds
    if model.kind == "text":  # language models stream their tokens, as on Replicate
        run.stream = EventLog()
        prediction["urls"]["stream"] = stream_url(base_url, prediction["id"])
    sandbox.add(run)
    if webhook is not None:
        run.hooks = PredictionWebhooks(sandbox, prediction, webhook, events_filter or [])
        run.hooks.start()
    run.task = sandbox.spawn(_lifecycle(sandbox, run))
    return run


def cancel_prediction(run: Run) -> None:
    """Move a running prediction to `canceled` (no-op when it is already terminal)."""
    if run.prediction["status"] in TERMINAL:
        return
    _finish(run, "canceled")
    if run.task is not None and not run.task.done():
        run.task.cancel()


async def _lifecycle(sandbox: Sandbox, run: Run) -> None:
    """Run the prediction; at its deadline stop it where it is, as Replicate does."""
    try:
        async with asyncio.timeout_at(run.deadline):
            await _run(sandbox, run)
    except TimeoutError:
        # Stopped at the deadline, as Replicate does: a loop that woke late (a busy machine)
        # does not bill past it, and a run that had not really started by then is aborted.
        deadline = run.deadline
        started = run.started is not None and deadline is not None and run.started < deadline
        _finish(run, "canceled" if started else "aborted", at=deadline)


async def _run(sandbox: Sandbox, run: Run) -> None:
    speed = sandbox.config.speed
    prediction = run.prediction
    model = run.model
    loop = asyncio.get_running_loop()
    drawing: asyncio.Future[Any] | None = None
    try:
        await asyncio.sleep(STARTING_SECONDS * speed + sandbox.faults.slow_start)
        prediction["status"] = "processing"
        prediction["started_at"] = rfc3339()
        run.started = loop.time()
        source: Image.Image | None = None
        image_url = run.inputs.get("image") if model.param("image") is not None else None
        if isinstance(image_url, str):
            try:  # read when the run starts, as a model does: a bad file fails the run
                source = await read_image(sandbox, image_url, run.base_url)
            except ImageInputError as exc:
                _finish(run, "failed", str(exc))
                return
        heard: bytes | None = None
        if model.kind == "speech":
            try:  # read as an image is: a file that cannot be fetched fails the run
                heard = await read_local(sandbox, str(run.inputs["audio"]), run.base_url)
            except ImageInputError as exc:
                _finish(run, "failed", str(exc).replace("image", "audio"))
                return
        tokens: list[str] | None = None
        if model.kind == "text":
            tokens = (
                vision_tokens(run.inputs, source)
                if source is not None
                else llama_tokens(run.inputs, thinks=model.thinks)
            )
        if tokens is not None:
            total = len(tokens)
        elif model.kind == "image":
            total = run.inputs["num_inference_steps"]
            _log(run, f"Using seed: {run.inputs['seed']}")
        elif model.kind == "upscale":
            total = UPSCALE_STEPS
        elif model.kind == "video":
            total = VIDEO_STEPS
        else:
            total = SPEECH_STEPS
        # An image is drawn while the steps run, as a model makes it during its run: a burst
        # of "2 s" runs (the run_seconds fault) then ends at 2 s, not 2 s plus a queue of
        # drawings. It is shown only once the steps are done.
        drawing = (
            asyncio.ensure_future(
                loop.run_in_executor(
                    _drawing,
                    image_outputs,
                    model,
                    run.inputs,
                    prediction["id"],
                    run.base_url,
                    source,
                    sandbox.config.image_side,
                )
            )
            if model.kind == "image"
            else None
        )
        if drawing is not None:  # a run canceled or failed meanwhile never looks at it
            drawing.add_done_callback(lambda done: done.cancelled() or done.exception())
        for step in range(1, total + 1):
            if run.run_seconds > 0:  # on the clock, so a busy loop does not add up delays
                await asyncio.sleep(
                    max(0.0, run.started + run.run_seconds * step / total - loop.time())
                )
            else:
                extra = sandbox.faults.token_seconds if tokens is not None else 0.0
                await asyncio.sleep(model.step_seconds * speed * run.time_factor + extra)
            if tokens is not None:
                prediction["output"] = [*(prediction["output"] or []), tokens[step - 1]]
                if run.stream is not None:
                    run.stream.output(tokens[step - 1])
                _changed(run, "output")
                await _paused(sandbox, step)
            _log(run, tqdm_line(step, total, loop.time() - run.started))
        if run.fail_error is not None:
            _finish(run, "failed", run.fail_error)
            return
        if drawing is not None:
            output, files = await drawing
            run.files.update(files)
            if sandbox.faults.take_nsfw_flag():
                output = {"images": output, "has_nsfw_concepts": [True] * len(output)}
            prediction["output"] = output
            _changed(run, "output")
        elif model.kind == "upscale" and source is not None:
            upscaled, files = await asyncio.to_thread(
                upscale_output, run.inputs, source, prediction["id"], run.base_url
            )
            run.files.update(files)
            prediction["output"] = upscaled
            _changed(run, "output")
        elif model.kind == "video":
            padded = sandbox.faults.video_bytes
            video = await asyncio.to_thread(render_video, str(run.inputs["prompt"]), 0, padded)
            run.files["output.mp4"] = (video, VIDEO_TYPE)
            prediction["output"] = file_url(run.base_url, prediction["id"], "output.mp4")
            _changed(run, "output")
        elif model.kind == "speech":
            output, files = whisper_output(run.inputs, prediction["id"], run.base_url, heard)
            run.files.update(files)
            prediction["output"] = output
            _changed(run, "output")
        _finish(run, "succeeded")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a sandbox bug must not leave a prediction running forever
        _finish(run, "failed", f"Sandbox error: {type(exc).__name__}: {exc}")
    finally:
        if drawing is not None and not drawing.done():
            drawing.cancel()


async def _paused(sandbox: Sandbox, tokens: int) -> None:
    """The fault `pause_after_tokens`: a run holds after that many tokens until it is cleared,
    so a test can look at a half-written answer without racing the model."""
    # A JSON-settable fault has no Event to wait on, hence the short sleeps.
    while sandbox.faults.pause_after_tokens and tokens == sandbox.faults.pause_after_tokens:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _log(run: Run, line: str) -> None:
    run.prediction["logs"] += line + "\n"
    _changed(run, "logs")


def _changed(run: Run, event: str) -> None:
    if run.hooks is not None:
        run.hooks.changed(event)


def _finish(run: Run, status: str, error: str | None = None, at: float | None = None) -> None:
    """End the prediction now, or as of `at` (its deadline) when it was stopped there."""
    prediction = run.prediction
    if prediction["status"] in TERMINAL:
        return
    now = asyncio.get_running_loop().time()
    if at is not None:
        now = min(now, at)
    metrics: dict[str, Any] = {
        "predict_time": round(now - run.started, 6) if run.started is not None else 0.0,
        "total_time": round(now - run.created, 6),
    }
    if status == "aborted":
        del metrics["predict_time"]  # it never ran, and is not billed
    if run.model.kind == "text" and status != "aborted":  # what it read and wrote is billed
        output = prediction["output"] or []
        metrics["input_token_count"] = len(str(run.inputs.get("prompt", "")).split())
        metrics["output_token_count"] = len(output)
    prediction.update(status=status, error=error, completed_at=rfc3339(), metrics=metrics)
    run.done.set()
    if run.stream is not None:
        run.stream.end(status, error)
    if run.hooks is not None:
        run.hooks.completed()
