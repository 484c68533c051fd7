"""manifest.yml and `conjure manifest`: the Slack app for exactly the configured commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from adapters.slack.manifest import BOT_SCOPES, render_manifest
from bot.catalog import default_catalog, load_catalog

ROOT = Path(__file__).resolve().parents[1]
CONJURE = str(Path(sys.executable).parent / "conjure")
PLACEHOLDER = "https://conjure.example.com"


def test_manifest_yml_is_the_rendered_manifest_for_the_built_in_commands() -> None:
    text = (ROOT / "manifest.yml").read_text(encoding="utf-8")
    catalog = default_catalog()
    assert text == render_manifest(catalog, PLACEHOLDER)

    manifest = yaml.safe_load(text)
    url = f"{PLACEHOLDER}/slack/events"
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert list(commands) == [f"/{name}" for name in catalog.commands] + ["/conjure"]
    for name, spec in catalog.commands.items():
        entry = commands[f"/{name}"]
        assert entry["description"] == spec.description
        assert entry["usage_hint"] == spec.usage_hint()
    assert commands["/conjure"]["usage_hint"] == "help | usage | models"
    for entry in commands.values():
        assert entry["url"] == url and entry["description"] and len(entry["command"]) <= 32
    # Prompts arrive as typed; /conjure quota needs Slack's <@U…|name> form of a mention.
    assert [c["should_escape"] for c in commands.values()] == [False] * len(catalog.commands) + [
        True
    ]
    assert len(manifest["display_information"]["name"]) <= 35
    assert manifest["features"]["bot_user"]["display_name"]
    assert manifest["oauth_config"]["scopes"]["bot"] == list(BOT_SCOPES)
    assert set(BOT_SCOPES) == {"commands", "chat:write", "files:write", "im:write"}
    settings = manifest["settings"]
    assert settings["interactivity"] == {"is_enabled": True, "request_url": url}
    assert settings["socket_mode_enabled"] is False


def test_conjure_manifest_prints_the_manifest_for_the_configured_commands(
    tmp_path: Path,
) -> None:
    config = tmp_path / "conjure.toml"
    config.write_text(
        "[commands.transcribe]\nenabled = false\n\n"
        '[commands.paint]\nmodel = "sdxl"\ndescription = "Paint with SDXL"\n',
        encoding="utf-8",
    )
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONJURE_", "SLACK_", "DISCORD_", "REPLICATE_"))
    }
    environment["CONJURE_CONFIG"] = str(config)
    result = subprocess.run(
        [CONJURE, "manifest", "--url", "https://x/"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_manifest(load_catalog(config), "https://x")
    manifest = yaml.safe_load(result.stdout)
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == ["/imagine", "/ask", "/paint", "/conjure"]
    assert {c["url"] for c in manifest["features"]["slash_commands"]} == {"https://x/slack/events"}
