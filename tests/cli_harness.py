"""`conjure ARGS` run inside the test process: `bot.cli.main.main`, as the console script calls it.

A subprocess costs an interpreter and every import again (a second or more of CPU per run on a
busy machine), which is most of what a test of a command's output was paying for. Here `main`
runs with the environment and working directory it would have had as a process (no developer
variable, `env` added), its stdout and stderr captured, and what `main` changes for a process's
whole life put back afterwards: the root logger's handlers and every logger's level (it
configures logging), and the garbage collector (it disables it during start-up; a long-running
command freezes the start-up heap and enables it).

What only a real process shows (the exit status the shell sees, a traceback printed by the
interpreter, import-time failures, output at exit) stays with the subprocess tests in
tests/test_cli.py and tests/test_startup_errors.py.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFIXES = ("CONJURE_", "SLACK_", "DISCORD_", "REPLICATE_")


@dataclass(frozen=True)
class Ran:
    """What `subprocess.run(..., capture_output=True, text=True)` would have given."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def process_state_restored() -> Iterator[None]:
    """Logging (handlers, levels) and the garbage collector as they were before the block,
    whatever `main` in it did to them."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    loggers = {
        name: (logger.level, logger.disabled, list(logger.handlers), logger.propagate)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    gc_enabled, frozen, thresholds = gc.isenabled(), gc.get_freeze_count(), gc.get_threshold()
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(root_level)
        for name, logger in logging.Logger.manager.loggerDict.items():
            if not isinstance(logger, logging.Logger):
                continue
            if name in loggers:
                level, disabled, kept, propagate = loggers[name]
                logger.setLevel(level)
                logger.disabled, logger.propagate = disabled, propagate
                logger.handlers[:] = kept
        if not frozen and gc.get_freeze_count():
            gc.unfreeze()
        gc.set_threshold(*thresholds)
        (gc.enable if gc_enabled else gc.disable)()


def run_conjure(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> Ran:
    """`conjure *args` in `cwd` with `env` (and no CONJURE_/SLACK_/DISCORD_/REPLICATE_ variable
    of this process), in this process. Call it from a test that is not itself on an event loop:
    `main` runs one of its own."""
    from bot.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, process_state_restored():
        for name in list(os.environ):
            if name.startswith(PREFIXES):
                patch.delenv(name)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        patch.chdir(cwd)
        patch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code: object = main(list(args))
            except SystemExit as exc:  # argparse: --help, --version, a usage error
                code = exc.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)  # as the interpreter does with SystemExit("...")
                code = 1
    return Ran(int(code or 0), stdout.getvalue(), stderr.getvalue())
