"""Start-up failures as an operator meets them: one line on stderr naming what to fix.

Most cases run `conjure`'s `main` in this process (tests/cli_harness.py); a real subprocess where
only a process shows it: a start-up failure's exit status and whole stderr, the traceback
--debug lets the interpreter print, and a server's log while it runs. Every address is a closed
or held loopback port, so a failure is immediate (connection refused) and nothing waits on DNS.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_harness import run_conjure
from tests.test_cli import CONJURE, run

PREFIXES = ("CONJURE_", "SLACK_", "DISCORD_", "REPLICATE_")

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: refused at once
SERVE = {"REPLICATE_API_TOKEN": "r8_secrettoken", "REPLICATE_BASE_URL": CLOSED}
DISCORD = {"DISCORD_TOKEN": "discord-secret-token", "DISCORD_API_URL": f"{CLOSED}/api"}


@pytest.fixture(scope="module")
def held_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


CASES = {
    "database": (
        ["serve", "--port", "0"],
        {**SERVE, **DISCORD, "CONJURE_DATABASE_URL": "postgresql://nobody:hunter2@127.0.0.1:1/x"},
        "conjure: CONJURE_DATABASE_URL: cannot reach the database at 127.0.0.1:1 "
        "(connection refused)",
    ),
    "migrate-database": (
        ["migrate"],
        {"CONJURE_DATABASE_URL": "postgresql://nobody:hunter2@127.0.0.1:1/x"},
        "conjure: CONJURE_DATABASE_URL: cannot reach the database at 127.0.0.1:1 "
        "(connection refused)",
    ),
    "database-file": (
        ["migrate"],
        {"CONJURE_DATABASE_URL": "sqlite+aiosqlite:////nonexistent/dir/conjure.db"},
        "conjure: CONJURE_DATABASE_URL: the database file /nonexistent/dir/conjure.db: unable",
    ),
    "discord": (
        ["serve", "--port", "0"],
        {**SERVE, **DISCORD},
        "conjure: DISCORD_API_URL: cannot reach Discord at 127.0.0.1:1 (connection refused)",
    ),
    "config": (
        ["serve", "--port", "0"],
        {**SERVE, **DISCORD, "CONJURE_CONFIG": "/nonexistent.toml"},
        "conjure: CONJURE_CONFIG: /nonexistent.toml: cannot read",
    ),
    "manifest-config": (
        ["manifest", "--url", "https://bot.example"],
        {"CONJURE_CONFIG": "/nonexistent.toml"},
        "conjure: CONJURE_CONFIG: /nonexistent.toml: cannot read",
    ),
    "slack-secret": (
        ["serve", "--port", "0"],
        {**SERVE, "SLACK_BOT_TOKEN": "xoxb-secret-token"},
        "conjure: SLACK_SIGNING_SECRET: required with SLACK_BOT_TOKEN",
    ),
    "demo-speed": (
        ["demo", "/imagine a fox", "--speed", "-1"],
        {},
        "conjure: --speed: must be 0 or more",
    ),
    # nan failed the job ("cannot convert float NaN to integer"), inf never finished it
    "demo-speed-nan": (["demo", "/imagine a fox", "--speed", "nan"], {}, "conjure: --speed: "),
    "demo-speed-inf": (["demo", "/imagine a fox", "--speed", "inf"], {}, "conjure: --speed: "),
    "sandbox-speed": (["sandbox", "--port", "0", "--speed", "nan"], {}, "conjure: --speed: "),
    # named before anything starts, not as "OverflowError: bind(): port must be 0-65535."
    "serve-port": (
        ["serve", "--port", "65536"],
        {**SERVE, **DISCORD},
        "conjure: --port: must be from 0 to 65535",
    ),
    "sandbox-port": (["sandbox", "--port", "-1"], {}, "conjure: --port: must be from 0 to 65535"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_start_up_failure_is_one_line_naming_what_to_fix(tmp_path: Path, case: str) -> None:
    args, env, expected = CASES[case]
    result = run_conjure(*args, cwd=tmp_path, env=env)
    assert result.returncode != 0
    [line] = result.stderr.splitlines()  # exactly one line, and no traceback
    assert line.startswith(expected), line
    for secret in ("hunter2", "r8_secrettoken", "discord-secret-token", "xoxb-secret-token"):
        assert secret not in result.stderr


def test_a_start_up_failure_in_a_real_process_is_one_line_and_exit_status_1(
    tmp_path: Path,
) -> None:
    args, env, expected = CASES["database"]  # serve: the most that starts before it fails
    result = run(*args, cwd=tmp_path, env=env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(expected), line
    assert "hunter2" not in result.stderr and result.stdout == ""


def test_a_port_in_use_is_named(tmp_path: Path, held_port: int) -> None:
    # Slack over HTTP starts even when Slack is unreachable, so the port is what fails.
    slack = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": CLOSED}
    result = run_conjure(
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(held_port),
        cwd=tmp_path,
        env={**SERVE, **slack},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"conjure: --host/--port: cannot listen on 127.0.0.1:{held_port} "
        "(address already in use); choose another --port"
    ]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run(
        "--debug",
        "manifest",
        "--url",
        "https://bot.example",
        cwd=tmp_path,
        env={"CONJURE_CONFIG": "/nonexistent.toml"},
    )
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "/nonexistent.toml" in result.stderr


def test_version_names_the_package(tmp_path: Path) -> None:
    result = run_conjure("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("conjure ")
    assert result.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize(
    "url", ["bot.example", "http://bot.example", "https://bot.example/slack?x=1"]
)
def test_manifest_refuses_a_url_that_is_not_https_host(tmp_path: Path, url: str) -> None:
    result = run_conjure("manifest", "--url", url, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("conjure: --url: must be https://host")


def test_manifest_takes_http_on_loopback_for_tests(tmp_path: Path) -> None:
    result = run_conjure("manifest", "--url", "http://127.0.0.1:8080/", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:8080/slack/events" in result.stdout


def test_socket_mode_offline_logs_one_line_per_attempt_with_backoff(tmp_path: Path) -> None:
    env = {
        **SERVE,
        "SLACK_BOT_TOKEN": "xoxb-secret-token",
        "SLACK_APP_TOKEN": "xapp-secret-token",
        "SLACK_API_URL": f"{CLOSED}/api/",
    }
    environment = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    process = subprocess.Popen(
        [CONJURE, "serve", "--port", "0"],
        cwd=tmp_path,
        env={**environment, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:  # until the first retry is announced (the backoff's
            lines.append(line)  # doubling: tests/test_slack_platform.py, in-process)
            if "retrying in " in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=10)
    text = "".join(lines)
    attempts = [line for line in lines if "Slack Socket Mode: SLACK_API_URL unreachable" in line]
    assert [a.rsplit("retrying in ", 1)[1].strip() for a in attempts] == ["2 s"], text
    assert "Traceback" not in text
    assert "secret-token" not in text
