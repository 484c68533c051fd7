"""The job path's database work, counted: a Slack /imagine from command to delivered result.

A regression here is CPU on every command (see README, Performance): the statements a command
makes, and on SQLite that each runs as SQL compiled once (storage/compiled_once.py), not through
SQLAlchemy's execution path.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from storage.engine import statement_engines
from tests.slack_harness import running_slack_conjure

STATEMENTS_PER_COMMAND = 19  # the counters' 6 reservations and 4 settlements are half
# Besides those, a job's reads and progress writes depend on timing: a job still running 0.3 s
# after its status message gets a delayed status edit, which reads its row (and may write its
# progress) once more, and a loaded machine makes jobs that slow. Counted apart, with room.
TIMED_PER_COMMAND = 4
_TIMED = ("SELECT job.", "UPDATE job SET progress=")


async def test_a_command_makes_its_statements_and_each_is_compiled_once(
    sandbox_server: Any, sqlite_url: str
) -> None:
    async with running_slack_conjure(sandbox_server, sqlite_url, progress_interval=60) as conjure:
        await conjure.slash("/imagine", "the day's first job creates the counters")
        await conjure.settle(sandbox_server)
        compiled: list[str] = []
        through_sqlalchemy: list[str] = []

        def note(_c: Any, _cur: Any, sql: str, _p: Any, context: Any, _m: Any) -> None:
            (compiled if context is None else through_sqlalchemy).append(sql)

        for engine in statement_engines(conjure.runtime.engine):
            event.listen(engine, "before_cursor_execute", note)
        for i in range(3):
            await conjure.slash("/imagine", f"a red fox {i}")
        await conjure.settle(sandbox_server)
        assert len(conjure.fake.shared_uploads()) == 4  # every result delivered

    assert through_sqlalchemy == []
    timed = [sql for sql in compiled if sql.startswith(_TIMED)]
    fixed = [sql for sql in compiled if not sql.startswith(_TIMED)]
    assert len(fixed) <= 3 * STATEMENTS_PER_COMMAND, "\n".join(fixed)
    assert len(timed) <= 3 * TIMED_PER_COMMAND, "\n".join(timed)
