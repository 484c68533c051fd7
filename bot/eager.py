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
import contextlib
import contextvars
from collections.abc import Coroutine, Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run `coro` until it first suspends, now; the rest as a task. Returns a future of its
    result: already done when it never suspended, else the task. As in a task (and as 3.12
    does it), the coroutine runs in a copy of the caller's context and as the current task
    (what `asyncio.timeout`, aiohttp's timeouts and anyio's cancel scopes cancel), and an
    exception it raises goes into the future, not to the caller."""
    loop = asyncio.get_running_loop()
    eager_factory = getattr(asyncio, "eager_task_factory", None)
    if eager_factory is not None:  # Python 3.12 and later
        return eager_factory(loop, coro)
    context = contextvars.copy_context()
    # The task exists before the first step, to be its current task. Its coroutine hands it
    # what the first step awaits, then drives the rest (or forwards a cancellation to it).
    rest = _Rest(coro)
    task = loop.create_task(rest, context=context)
    try:
        with _running_as(loop, task):
            rest.awaited = context.run(coro.send, None)
    except StopIteration as stop:
        return _settled(rest, task, result=stop.value)
    except (KeyboardInterrupt, SystemExit):
        rest.finished = True
        task.cancel()
        raise
    except BaseException as exc:
        return _settled(rest, task, error=exc)
    return task


def _settled(
    rest: _Rest[Any],
    task: asyncio.Task[Any],
    result: Any = None,
    error: BaseException | None = None,
) -> asyncio.Future[Any]:
    """The outcome of a first step that finished: a done future; the task, which never ran a
    step, is cancelled (it finds its coroutine finished and ends at once)."""
    rest.finished = True
    task.cancel()
    done: asyncio.Future[Any] = task.get_loop().create_future()
    if isinstance(error, asyncio.CancelledError):
        done.cancel()
    elif error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
    return done


@contextlib.contextmanager
def _running_as(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> Iterator[None]:
    """`task` as the loop's current task meanwhile, the caller's (if any) set aside: what
    3.12's eager start does with the same two calls, private in 3.11."""
    caller = asyncio.current_task(loop)
    if caller is not None:
        asyncio.tasks._leave_task(loop, caller)  # type: ignore[attr-defined]
    asyncio.tasks._enter_task(loop, task)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        asyncio.tasks._leave_task(loop, task)  # type: ignore[attr-defined]
        if caller is not None:
            asyncio.tasks._enter_task(loop, caller)  # type: ignore[attr-defined]


class _Rest(Coroutine[Any, Any, T]):
    """The coroutine of the task that goes on from a first step run eagerly: its first send
    hands the task the future that step awaits (the task then waits on it, and can cancel
    it, as if it had run the step itself); every later send and throw goes to the coroutine,
    so that a cancellation, even before the task's first turn, reaches it where it waits."""

    __slots__ = ("_coro", "_handed", "awaited", "finished")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._handed = False
        self.awaited: Any = None
        self.finished = False  # the first step ended it: the task only ends, cancelled

    def send(self, value: Any) -> Any:
        if not self._handed:
            self._handed = True
            return self.awaited
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self._handed = True
        if self.finished:  # a finished coroutine would answer "cannot reuse", not the error
            raise exc[0] if len(exc) == 1 else exc[1]
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:  # pragma: no cover - a task's, never awaited
        raise TypeError("driven by its task only")
