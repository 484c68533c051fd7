"""Safety rules: an admin's banned words and patterns refuse a prompt before anything is spent,
with a neutral answer and an audit row; the rules' own checks; the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from bot.followups.service import IMAGE_NOT_YET_READ
from bot.safety import REFUSED, RuleError, SafetyRules, prompt_texts, validate_pattern
from storage.engine import create_engine
from storage.migrate import migrate
from storage.models import Job, UsageCounter
from tests.cli_harness import Ran, run_conjure
from tests.fakes.slack_api import TEAM_ID
from tests.harness import running_conjure, settle
from tests.slack_harness import running_slack_conjure

ADMIN_ONLY = "Only Conjure admins can do that."


async def count(conjure: Any, table: Any) -> int:
    async with conjure.runtime.store.reader.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def nothing_spent(conjure: Any, sandbox_server: Any) -> None:
    assert await count(conjure, Job.__table__) == 0
    assert await count(conjure, UsageCounter.__table__) == 0
    assert sandbox_server.sandbox.create_count == 0


async def test_a_banned_word_refuses_the_prompt_neutrally_spends_nothing_and_is_audited(
    sandbox_server, database_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, database_url, tmp_path / "out", conjure_admins="console:boss"
    ) as conjure:
        console = conjure.console
        console.user = "boss"
        added = await console.run_line("/conjure safety ban Crown")
        assert added.text is not None and "Added rule #" in added.text
        console.user = "you"
        for prompt in ("a golden CROWN on a hill", "a \uff23\uff32\uff2f\uff37\uff2e", "crown."):
            refused = await console.run_line(f"/imagine {prompt}")
            assert not refused.ok and refused.error == REFUSED, prompt
            assert "crown" not in (refused.error or "").lower()
        await nothing_spent(conjure, sandbox_server)

        entries = [
            e for e in await conjure.service.quotas.store.audit() if e.action != "safety.add"
        ]
        assert len(entries) == 3
        [rule] = await conjure.service.safety.list("console", "local")
        entry = entries[-1]
        assert entry.action == "safety.refused" and entry.actor == "console:local:you"
        assert entry.detail["rule"] == rule.id and entry.detail["command"] == "imagine"
        assert "crown" not in str(entry.detail).lower()  # a hash, not the prompt
        assert len(entry.detail["prompt_sha256"]) == 16

        # A whole word only; another workspace has its own (no) rules.
        assert (await console.run_line("/imagine crowned heads")).ok
        console.workspace = "elsewhere"
        assert (await console.run_line("/imagine a crown")).ok
        await settle(conjure, sandbox_server)
        assert sandbox_server.sandbox.create_count == 2


async def test_patterns_non_admins_bad_regexes_list_and_remove(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_admins="console:boss"
    ) as conjure:
        console = conjure.console
        refused = await console.run_line("/conjure safety ban crown")
        assert refused.text is not None and refused.text.startswith(ADMIN_ONLY)
        listed = await console.run_line("/conjure safety")
        assert listed.text is not None and listed.text.startswith(ADMIN_ONLY)

        console.user = "boss"
        bad = await console.run_line("/conjure safety pattern (unclosed")
        assert bad.text is not None and "not a valid regular expression" in bad.text
        slow = await console.run_line("/conjure safety pattern (a+)+b")
        assert slow.text is not None and "could be very slow" in slow.text
        added = await console.run_line(r"/conjure safety pattern \bx\d{3}\b")
        assert added.text is not None and "Added rule #" in added.text
        again = await console.run_line(r"/conjure safety pattern \bx\d{3}\b")
        assert again.text is not None and "already has that pattern" in again.text
        listed = await console.run_line("/conjure safety")
        assert listed.text is not None and r"pattern: \bx\d{3}\b" in listed.text

        console.user = "you"
        refused_job = await console.run_line("/imagine a robot named X123")
        assert refused_job.error == REFUSED
        # The negative prompt is checked too.
        refused_neg = await console.run_line("/imagine a robot --no x999 --model sdxl")
        assert refused_neg.error == REFUSED, refused_neg
        await nothing_spent(conjure, sandbox_server)

        console.user = "boss"
        [rule] = await conjure.service.safety.list("console", "local")
        removed = await console.run_line(f"/conjure safety remove {rule.id}")
        assert removed.text == f"Removed rule #{rule.id}."
        missing = await console.run_line(f"/conjure safety remove {rule.id}")
        assert missing.text == f"This workspace has no rule #{rule.id}."
        console.user = "you"
        assert (await console.run_line("/imagine a robot named X123")).ok  # seen at once
        actions = [e.action for e in await conjure.service.quotas.store.audit()]
        assert actions.count("safety.add") == 1 and actions.count("safety.remove") == 1


async def test_a_slack_slash_command_with_a_banned_word_is_refused_privately(
    sandbox_server, sqlite_url: str
) -> None:
    async with running_slack_conjure(
        sandbox_server, sqlite_url, conjure_admins="slack:U0ADA"
    ) as conjure:
        done = (await conjure.slash("/conjure", "safety ban crown")).ack
        assert done["text"].startswith("Added rule #")
        sent = await conjure.slash("/imagine", "a Crown of thorns", user_id="U0EVE")
        assert sent.ack["response_type"] == "ephemeral" and sent.ack["text"] == REFUSED
        assert conjure.fake.channel_messages("C0GENERAL") == []
        assert sandbox_server.sandbox.create_count == 0
        [entry] = [
            e for e in await conjure.service.quotas.store.audit() if e.action == "safety.refused"
        ]
        assert entry.actor == f"slack:{TEAM_ID}:U0EVE" and entry.detail["command"] == "imagine"


async def test_a_change_on_another_instance_is_seen_within_the_ttl(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        await migrate(engine)
        now = [0.0]
        mine = SafetyRules(engine, ttl=0.2, clock=lambda: now[0])
        theirs = SafetyRules(engine, ttl=0.2)
        assert await mine.check("slack", "T1", ["a crown"]) is None  # cached: no rules
        await theirs.add("slack", "T1", "word", "crown", actor="cli")
        now[0] = 0.19
        assert await mine.check("slack", "T1", ["a crown"]) is None  # still cached
        now[0] = 0.21
        rule = await mine.check("slack", "T1", ["a crown"])
        assert rule is not None and rule.value == "crown"
        assert await mine.check("slack", "T2", ["a crown"]) is None
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "pattern", ["(a+)+", "(a*)*b", "(a|ab)*c", ".*.*.*x", r"(a)\1", "x" * 201, "[a-", ""]
)
def test_risky_or_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(RuleError):
        validate_pattern(pattern)


@pytest.mark.parametrize("pattern", [r"\bfoo\d+", "(cat|dog)s?", "a{1,3}b", r"^kill\s+all"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


async def test_a_reroll_is_checked_against_rules_added_since(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        assert (await conjure.console.run_line("/imagine a crown")).ok
        await settle(conjure, sandbox_server)
        await conjure.service.safety.add("console", "local", "word", "crown", actor="cli")
        again = await conjure.console.run_line("/reroll")
        assert not again.ok and again.error == REFUSED
        assert await count(conjure, Job.__table__) == 1
        assert sandbox_server.sandbox.create_count == 1


@pytest.mark.parametrize("button", ["/upscale 1", "/vary 1"])
async def test_an_upscale_or_variation_is_checked_before_its_image_is_read_or_uploaded(
    sandbox_server, sqlite_url: str, tmp_path: Path, button: str
) -> None:
    """A rule added since the image was made refuses its Upscale and Variation before anything
    is done with the image: it is neither read back nor uploaded to Replicate's Files API (the
    person's image sent to Replicate for a job that will never run)."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        made = await conjure.console.run_line("/imagine a crown")
        assert made.ok
        await settle(conjure, sandbox_server)
        [saved] = made.files  # over the size sent inline: an Upscale uploads it
        noise = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
        noise.save(saved, format="PNG")
        await conjure.service.safety.add("console", "local", "word", "crown", actor="cli")
        refused = await conjure.console.run_line(button)
        assert not refused.ok and refused.error == REFUSED
        assert sandbox_server.sandbox.uploads._files == {}
        assert await count(conjure, Job.__table__) == 1
        assert sandbox_server.sandbox.create_count == 1
    # What stands for the image while it is checked is not text to the rules (as the image is not)
    assert prompt_texts("a crown", {"image": IMAGE_NOT_YET_READ}) == ["a crown"]


def test_operator_cli_bans_lists_and_removes(tmp_path: Path) -> None:
    def run(*args: str) -> Ran:  # on ./conjure.db, the default database, as an operator would
        return run_conjure(
            "safety", *args, "--platform", "slack", "--workspace", "T1", cwd=tmp_path
        )

    done = run("ban", "crown")
    assert done.returncode == 0 and "added rule 1 (word): crown" in done.stdout, done.stderr
    assert run("pattern", r"\bx\d+").returncode == 0
    bad = run("pattern", "(a+)+")
    assert bad.returncode == 2 and "could be very slow" in bad.stderr
    listed = run("list")
    assert "1\tword\tcrown\tcli" in listed.stdout and "2\tpattern" in listed.stdout
    assert run("remove", "1").stdout.strip() == "removed rule 1"
    gone = run("remove", "1")
    assert gone.returncode == 2 and "has no rule 1" in gone.stderr


async def test_discord_admins_set_rules_with_the_safety_subcommand(
    sandbox_server, sqlite_url: str
) -> None:
    from tests.discord_harness import USER_ID, running_discord_conjure

    admin = 1_100_000_000_000_000_777
    async with running_discord_conjure(
        sandbox_server, sqlite_url, conjure_admins=f"discord:{admin}"
    ) as conjure:
        fake = conjure.discord

        def answer(sent: Any) -> str:
            return fake.original(sent.token)["content"]

        refused = await conjure.interact(
            "conjure", {"action": "ban", "value": "lantern"}, subcommand="safety"
        )
        assert answer(refused).startswith(ADMIN_ONLY)
        done = await conjure.interact(
            "conjure", {"action": "ban", "value": "lantern"}, subcommand="safety", user_id=admin
        )
        assert answer(done).startswith("Added rule #")
        listed = await conjure.interact("conjure", subcommand="safety", user_id=admin)
        assert "word: lantern" in answer(listed)
        job = await conjure.interact("imagine", {"prompt": "a paper Lantern"}, user_id=USER_ID)
        calls = [c for c in fake.calls if c.method in ("POST", "PATCH") and job.token in c.path]
        assert any(REFUSED in str(c.payload) for c in calls)
        assert sandbox_server.sandbox.create_count == 0


def test_a_safety_checker_failure_is_explained_plainly_with_its_charge() -> None:
    from bot.jobs import failure_message
    from storage.models import JobStatus

    flagged = Job(
        id="j1",
        platform="console",
        workspace="local",
        channel="c",
        user_id="you",
        command="imagine",
        model="sdxl",
        model_ref="x/y",
        prompt="a cat",
        status=JobStatus.FAILED,
        error="NSFW content detected. Try running it again, or try a different prompt.",
        actual_micros=2300,
    )
    assert failure_message(flagged) == (
        "The model's safety checker flagged the result, so nothing was shown. "
        "Try rewording the prompt. It was charged $0.0023."
    )
    flagged.actual_micros = 0
    assert failure_message(flagged).endswith("Nothing was charged.")
    flagged.error = "CUDA out of memory"
    assert failure_message(flagged) == "The model could not finish: CUDA out of memory"


async def test_discord_sends_flagged_images_as_spoilers_outside_age_restricted_channels(
    sandbox_server, sqlite_url: str
) -> None:
    from tests.discord_harness import running_discord_conjure

    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:

        async def names(channel_nsfw: bool, flagged: bool) -> list[str]:
            sandbox_server.sandbox.faults.flag_nsfw_next = 1 if flagged else 0
            sent = await conjure.interact(
                "imagine", {"prompt": "a statue", "n": 2}, channel_nsfw=channel_nsfw
            )
            await conjure.settle()
            message = conjure.discord.original(sent.token)
            assert message is not None
            return [a["filename"] for a in message["attachments"]]

        spoilers = await names(channel_nsfw=False, flagged=True)
        assert len(spoilers) == 2 and all(n.startswith("SPOILER_") for n in spoilers)
        plain = await names(channel_nsfw=True, flagged=True)
        assert len(plain) == 2 and not any(n.startswith("SPOILER_") for n in plain)
        unflagged = await names(channel_nsfw=False, flagged=False)
        assert len(unflagged) == 2 and not any(n.startswith("SPOILER_") for n in unflagged)
        jobs = await conjure.runtime.store.count()
        assert jobs == 3


def test_flagged_outputs_are_read_from_the_models_own_fields() -> None:
    from bot.replicate.outputs import output_flagged, split_output

    urls = ["https://x.example/a.png", "https://x.example/b.png"]
    flagged = {"images": urls, "has_nsfw_concepts": [False, True]}
    assert split_output(flagged) == (urls, None) and output_flagged(flagged)
    assert not output_flagged({"images": urls, "has_nsfw_concepts": [False, False]})
    assert not output_flagged(urls) and not output_flagged("text")
    assert output_flagged({"output": urls, "nsfw": True})


async def test_a_text_input_that_starts_with_http_is_checked_too(
    sandbox_server: Any, sqlite_url: str, tmp_path: Path
) -> None:
    """Only a value that is one URL (a file's) is not text to check: `--no "http crown"`
    slipped past a ban on "crown" and ran."""
    async with running_conjure(sandbox_server, sqlite_url, tmp_path / "out") as conjure:
        await conjure.service.safety.add("console", "local", "word", "crown", actor="cli")
        for no in ("a crown", "http crown", "https:// crown"):
            refused = await conjure.console.run_line(f'/imagine a red fox --model sdxl --no "{no}"')
            assert not refused.ok and refused.error == REFUSED, no
        await settle(conjure, sandbox_server)
        assert sandbox_server.sandbox.create_count == 0
