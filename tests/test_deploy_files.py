"""The deployment files stay true to the settings: every variable Conjure reads is in
.env.example, and the example holds no secret."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_names_every_setting_and_holds_no_secret():
    text = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    assert named == {name.upper() for name in Settings.model_fields}
    for line in text.splitlines():
        if line.startswith(("REPLICATE_API_TOKEN", "SLACK_", "DISCORD_TOKEN")):
            assert line.split("=", 1)[1].split("#", 1)[0].strip() == "", line


def test_the_dockerfile_runs_as_a_user_and_checks_health():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "constraints.txt" in text  # the same pinned set as every other install
