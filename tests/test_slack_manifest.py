"""manifest.yml and `conjure manifest`: the Slack app for exactly the configured commands, asking
for exactly the scopes the bot uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from adapters.slack.manifest import manifest_data, render_manifest
from bot.catalog import default_catalog, load_catalog
from tests.cli_harness import run_conjure
from tests.slack_harness import running_slack_conjure

ROOT = Path(__file__).resolve().parents[1]
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
    settings = manifest["settings"]
    assert settings["interactivity"] == {"is_enabled": True, "request_url": url}
    assert settings["socket_mode_enabled"] is False


def test_conjure_manifest_prints_the_manifest_for_the_configured_commands(
    tmp_path: Path,
) -> None:
    config = tmp_path / "conjure.toml"
    config.write_text(
        "[commands.transcribe]\nenabled = false\n\n"
        '[commands.paint]\nmodel = "sdxl"\nmodels = ["sdxl", "flux-dev"]\n'
        'description = "Paint with SDXL"\nprompt_label = "scene"\n',
        encoding="utf-8",
    )
    result = run_conjure(
        "manifest", "--url", "https://x/", cwd=tmp_path, env={"CONJURE_CONFIG": str(config)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_manifest(load_catalog(config), "https://x")
    manifest = yaml.safe_load(result.stdout)
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert list(commands) == ["/imagine", "/ask", "/video", "/paint", "/conjure"]  # no /transcribe
    # The new command as Slack will offer it: its hint names the prompt and the models to pick.
    assert commands["/paint"] == {
        "command": "/paint",
        "url": "https://x/slack/events",
        "description": "Paint with SDXL",
        "usage_hint": "<scene> [--model sdxl|flux-dev]",
        "should_escape": False,
    }
    assert {c["url"] for c in commands.values()} == {"https://x/slack/events"}
    shortcuts = [s["callback_id"] for s in manifest["features"]["shortcuts"]]
    assert shortcuts == ["conjure_vary", "conjure_ask_image"]  # no Transcribe with Conjure


def test_message_shortcuts_give_a_message_file_to_a_command() -> None:
    manifest = manifest_data(default_catalog(), PLACEHOLDER)
    shortcuts = manifest["features"]["shortcuts"]
    assert [(s["name"], s["type"], s["callback_id"]) for s in shortcuts] == [
        ("Vary with Conjure", "message", "conjure_vary"),
        ("Ask Conjure about this image", "message", "conjure_ask_image"),
        ("Transcribe with Conjure", "message", "conjure_transcribe"),
    ]
    assert all(s["description"] for s in shortcuts)
    assert "files:read" in manifest["oauth_config"]["scopes"]["bot"]  # the file, with the token
    # Shortcuts arrive at the same URL as commands and button presses.
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


# The bot-token scope each Web API method needs (Slack's method reference); None: no scope.
# A method missing here fails the test below: add it, and its scope to the manifest.
SCOPE_OF_METHOD = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "chat.startStream": "chat:write",  # an answer written as it comes
    "chat.appendStream": "chat:write",
    "chat.stopStream": "chat:write",
    "conversations.open": "im:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "files.info": "files:read",
}
# Scopes used only off this path: files.info, when a delivery taken over from a dead instance
# checks whether its files were already shared (tests/test_delivery.py), and when an Upscale or
# Variations button reads back a delivered image (tests/test_slack_buttons.py).
TAKEOVER_SCOPES = {"files:read"}


async def test_the_manifest_asks_for_exactly_the_scopes_the_bot_uses(
    sandbox_server, sqlite_url: str
) -> None:
    """Everything the bot does in Slack, end to end (a status and its edits, an image in a
    thread, an answer, a result DMed from a channel the bot is not in): every Web API method it
    called is allowed by the manifest's scopes, and every scope asked for is used."""
    async with running_slack_conjure(sandbox_server, sqlite_url) as bot:
        bot.fake.cannot_post["C0RANDOM"] = "not_in_channel"
        await bot.slash("/imagine", "a red fox")
        await bot.slash("/ask", "what is a fox?")
        await bot.slash("/imagine", "a heron", channel_id="C0RANDOM")
        await bot.settle(sandbox_server)
        called = {call.method for call in bot.fake.calls}

    assert called >= {"chat.update", "conversations.open", "files.completeUploadExternal"}
    assert called <= set(SCOPE_OF_METHOD), called - set(SCOPE_OF_METHOD)
    used = {SCOPE_OF_METHOD[method] for method in called} - {None} | {"commands"} | TAKEOVER_SCOPES
    asked = manifest_data(default_catalog(), PLACEHOLDER)["oauth_config"]["scopes"]["bot"]
    assert sorted(asked) == sorted(used)
