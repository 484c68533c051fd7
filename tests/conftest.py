"""Shared fixtures: settings isolated from the developer's environment, and loopback servers."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.sandbox_fixtures", "tests.db_fixtures"]

_PREFIXES = ("CONJURE_", "REPLICATE_", "SLACK_", "DISCORD_")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """No developer variable (a real token, a quota) leaks into a test; no .env is read."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) and name != "CONJURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
