"""The `conjure` console script as a user runs it: real output, real files.

The demo's one-shot run is a real subprocess (the console script, its exit status, its imports);
the other commands run `main` in this process (tests/cli_harness.py), which costs no interpreter
start-up. tests/test_startup_errors.py has the other real-process cases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.cli_harness import run_conjure

CONJURE = str(Path(sys.executable).parent / "conjure")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONJURE_", "SLACK_", "DISCORD_", "REPLICATE_"))
    }
    environment.update(env or {})
    return subprocess.run(
        [CONJURE, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_runs_one_command_and_saves_a_real_image(tmp_path: Path) -> None:
    result = run(
        "demo", "/imagine a red fox in the snow --ar 16:9", "--speed", "0.05", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    [saved] = (tmp_path / "conjure-output").iterdir()
    assert str(saved.relative_to(tmp_path)) in result.stdout
    with Image.open(saved) as image:
        assert image.format == "WEBP"
        assert image.width > image.height


def test_demo_reports_a_failure_with_a_non_zero_exit(tmp_path: Path) -> None:
    result = run_conjure("demo", "/imagine FAIL_ME please", "--speed", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "safety checker flagged the result" in result.stderr
    assert not (tmp_path / "conjure-output").exists()


def test_demo_bad_option_prints_the_usage(tmp_path: Path) -> None:
    result = run_conjure("demo", "/imagine a fox --ar 7:3", "--speed", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "Usage: /imagine" in result.stdout + result.stderr


def test_demo_reads_commands_from_standard_input(tmp_path: Path) -> None:
    process = run_conjure("demo", "--speed", "0", cwd=tmp_path, stdin="/ask what is a fox?\nexit\n")
    assert process.returncode == 0, process.stderr
    assert "fox" in process.stdout.lower()


def test_serve_without_a_platform_says_how_to_set_one_up(tmp_path: Path) -> None:
    result = run_conjure("serve", cwd=tmp_path, env={"REPLICATE_API_TOKEN": "r8_x"})
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr and "DISCORD_TOKEN" in result.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CONJURE_USER_JOBS_PER_DAY": "lots"}, "CONJURE_USER_JOBS_PER_DAY"),
        ({"CONJURE_DATABASE_URL": "mysql://x"}, "CONJURE_DATABASE_URL"),
        ({"CONJURE_WEBHOOK_SECRET": "hunter2-secret"}, "CONJURE_WEBHOOK_SECRET"),
    ],
)
def test_a_malformed_setting_is_named_and_its_value_never_shown(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = run_conjure("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr


def test_migrate_creates_the_database(tmp_path: Path) -> None:
    result = run_conjure("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "conjure.db").exists()
    assert result.stdout.startswith("applied ")
    assert "0001" in result.stdout  # the revisions it applied, by name
    again = run_conjure("migrate", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already at ")


def test_an_in_process_run_leaves_logging_and_the_collector_as_they_were(tmp_path: Path) -> None:
    """cli_harness's promise: `main` configures logging, disables the collector, and a demo
    freezes its start-up heap; none of it outlives the run."""
    import gc
    import logging

    root = logging.getLogger()
    handlers, level, frozen = list(root.handlers), root.level, gc.get_freeze_count()
    thresholds = gc.get_threshold()
    httpx = logging.getLogger("httpx").level
    assert gc.isenabled()
    result = run_conjure("demo", "/imagine FAIL_ME please", "--speed", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert root.handlers == handlers and root.level == level
    assert logging.getLogger("httpx").level == httpx
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert gc.get_threshold() == thresholds


def test_a_started_server_collects_young_objects_less_often() -> None:
    """freeze_startup_heap (serve, sandbox, demo): young collections after 10,000 new objects
    (bot.serving says why), the older generations' thresholds as they were."""
    import gc

    from bot.serving import YOUNG_COLLECTION_AFTER, freeze_startup_heap

    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, *thresholds[1:])
        assert YOUNG_COLLECTION_AFTER > thresholds[0]
    finally:
        gc.set_threshold(*thresholds)
        if not frozen:
            gc.unfreeze()
