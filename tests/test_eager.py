"""bot.eager: a coroutine started in the caller's turn of the event loop, the rest as a task,
with a task's results, errors, cancellation and context."""

from __future__ import annotations

import asyncio
import contextvars
import gc

import pytest

from bot.eager import start_eagerly


async def waits_forever(cleaned: list[str]) -> None:
    """Waits on a future nobody resolves; notes when its `finally` ran."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        cleaned.append("finally")


where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="caller")


async def test_a_coroutine_that_never_suspends_is_done_before_the_call_returns() -> None:
    steps: list[str] = []

    async def record() -> str:
        steps.append("ran")
        return "job-1"

    future = start_eagerly(record())
    assert steps == ["ran"] and future.done()
    assert await future == "job-1"


async def test_the_first_step_runs_now_and_the_rest_after_what_it_awaits() -> None:
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def job() -> int:
        steps.append("recorded")
        value = await gate
        steps.append("announced")
        await asyncio.sleep(0)
        return value + 1

    future = start_eagerly(job())
    assert steps == ["recorded"] and not future.done()
    await asyncio.sleep(0.01)
    assert steps == ["recorded"]  # still waiting on the gate, as a task would
    gate.set_result(41)
    assert await future == 42
    assert steps == ["recorded", "announced"]


async def test_errors_go_into_the_future_before_and_after_a_suspension() -> None:
    async def refuse_now() -> None:
        raise ValueError("bad input")

    async def refuse_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("gone")

    now = start_eagerly(refuse_now())  # the caller is not raised into
    later = start_eagerly(refuse_later())
    with pytest.raises(ValueError, match="bad input"):
        await now
    with pytest.raises(KeyError):
        await later


async def test_cancelling_the_rest_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []

    future = start_eagerly(waits_forever(cleaned))
    await asyncio.sleep(0)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert cleaned == ["finally"] and future.cancelled()


async def test_it_runs_in_a_copy_of_the_callers_context() -> None:
    seen: list[str] = []

    async def job() -> None:
        seen.append(where.get())
        where.set("job")
        await asyncio.sleep(0)
        seen.append(where.get())

    await start_eagerly(job())
    assert seen == ["caller", "job"]
    assert where.get() == "caller"  # what the job set stayed in its own context


async def test_its_first_step_runs_as_the_task_that_goes_on_with_it() -> None:
    """What cancels "the current task" (asyncio.timeout, aiohttp's timeouts, anyio's scopes)
    must reach the eagerly started work, not the caller that started it."""
    caller = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def job() -> None:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)
        seen.append(asyncio.current_task())

    future = start_eagerly(job())
    assert asyncio.current_task() is caller  # given back to the caller
    await future
    assert seen == [future, future] and future is not caller


async def test_a_timeout_entered_in_the_first_step_cancels_the_work_not_the_caller() -> None:
    async def slow_download() -> str:
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timed out"
        return "finished"

    future = start_eagerly(slow_download())
    await asyncio.sleep(0.2)  # the caller lives on, uncancelled
    assert await future == "timed out"


async def test_a_cancel_before_the_rest_has_had_a_turn_reaches_the_coroutine() -> None:
    """Shutdown cancels every job task, maybe one whose first step has only just run: the
    coroutine is cancelled where it waits (its `finally` runs), not left to the collector."""
    cleaned: list[str] = []

    future = start_eagerly(waits_forever(cleaned))
    future.cancel()  # in the same turn
    with pytest.raises(asyncio.CancelledError):
        await future
    assert cleaned == ["finally"]


async def test_a_first_step_that_finished_leaves_nothing_for_the_loop_to_report() -> None:
    """The task made for the rest ends quietly when there is no rest: no "Task exception was
    never retrieved", whether the coroutine returned or raised."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def answers() -> str:
        return "bad input"

    async def breaks() -> None:
        raise ValueError("no")

    assert await start_eagerly(answers()) == "bad input"
    with pytest.raises(ValueError):
        await start_eagerly(breaks())
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert reported == []
