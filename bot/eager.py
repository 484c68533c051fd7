"""Tasks that start in the caller's turn of the event loop: Python 3.12's eager tasks, on 3.11.

`asyncio.create_task` runs nothing of its coroutine until the loop's next turn, behind every
callback already ready; on a busy loop a turn lasts tens of milliseconds. A Slack command is
acked only once its job is recorded, and the recording runs as a task of its own (so that the
ack can still go when the database is slow): as a plain task that is two turns more before the
ack, one to start the task and one to wake the listener. Started eagerly, the recording runs at
once, in the listener's own turn, and usually finishes there (SQLite never suspends it); only
what is left when it first suspends becomes a task.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run `coro` until it first suspends, now; the rest as a task. Returns a future of its
    result: already done when it never suspended, else the task. As with a task, the
    coroutine runs in a copy of the caller's context, and an exception it raises goes into
    the future, not to the caller."""
    loop = asyncio.get_running_loop()
    eager_factory = getattr(asyncio, "eager_task_factory", None)
    if eager_factory is not None:  # Python 3.12 and later
        return eager_factory(loop, coro)
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except asyncio.CancelledError:
        cancelled: asyncio.Future[T] = loop.create_future()
        cancelled.cancel()
        return cancelled
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return loop.create_task(_rest(_Resumed(coro, awaited)), context=context)


async def _rest(resumed: _Resumed[T]) -> T:
    return await resumed


class _Resumed(Generic[T]):
    """The rest of a coroutine already started: its first await handed to the task (which
    waits on it, and can cancel it, as if the task had started the coroutine itself), then
    every send and throw passed through, as `yield from` would."""

    def __init__(self, coro: Coroutine[Any, Any, T], awaited: Any) -> None:
        self._coro = coro
        self._awaited = awaited

    def __await__(self) -> Generator[Any, None, T]:
        coro, awaited = self._coro, self._awaited
        while True:
            try:
                yield awaited
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: a cancellation
                try:
                    awaited = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    awaited = coro.send(None)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
