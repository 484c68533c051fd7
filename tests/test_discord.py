"""Discord end to end: real INTERACTION_CREATE payloads through discord.py, the real app, the
sandbox sending signed webhooks, and a fake Discord REST API recording what a person would see."""

from __future__ import annotations

import itertools
from datetime import timedelta

import discord
import httpx
import pytest

from adapters.discord.uploads import fit_files
from adapters.platforms import run_platform
from bot.adapter import JobResult, OutputFile
from bot.catalog import default_catalog
from bot.commands.parsing import MAX_PROMPT_CHARS
from bot.config import ConfigError
from bot.runtime import Runtime
from bot.sandbox import HttpFault, SandboxConfig, create_sandbox_app
from bot.serving import serve_app
from storage.models import Delivery, utcnow
from tests.discord_harness import (
    ALERT_CHANNEL_ID,
    CHANNEL_ID,
    GUILD_ID,
    USER_ID,
    DiscordConjure,
    UserOption,
    running_discord_conjure,
)
from tests.fakes.discord_api import APP_ID, EPHEMERAL, Call, FakeDiscord, running_fake_discord
from tests.harness import all_jobs, make_settings
from tests.sandbox_fixtures import (
    SMALL_IMAGES,
    SandboxServer,
    impatient_replicate,
    lose_the_next_create,
)

MENTION = f"<@{USER_ID}>"
ORIGINAL = r"/messages/@original$"


def webhook_calls(fake: FakeDiscord, token: str, method: str = "PATCH") -> list[Call]:
    return [c for c in fake.find(method, f"^/webhooks/{APP_ID}/") if token in c.path]


def callback(fake: FakeDiscord, token: str) -> Call:
    [call] = [c for c in fake.find("POST", "/callback$") if token in c.path]
    return call


async def output_bytes(sandbox: SandboxServer) -> list[bytes]:
    [prediction] = sandbox.sandbox.predictions.values()
    async with httpx.AsyncClient() as http:
        return [(await http.get(url)).content for url in prediction["output"]]


async def nothing_created(conjure: DiscordConjure) -> bool:
    return await conjure.runtime.store.count() == 0 and conjure.sandbox.sandbox.create_count == 0


# ---- the whole flow -------------------------------------------------------------------------


async def test_imagine_defers_then_edits_the_response_with_the_image(
    sandbox_server: SandboxServer, database_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, database_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact(
            "imagine", {"prompt": "a red fox in the snow", "ar": "16:9", "seed": 7}
        )
        await conjure.settle()

        # Deferred at once, publicly, with "thinking": the first thing the bot did.
        first = next(c for c in fake.calls if sent.token in c.path)
        assert first.path.endswith("/callback") and first.payload == {"type": 5}
        assert first.status == 200 and first.at - sent.dispatched_at < 1.0
        edits = webhook_calls(fake, sent.token)
        assert all(c.status == 200 and c.path.endswith("/messages/@original") for c in edits)
        assert all("authorization" not in c.headers for c in edits)  # the token is the auth
        assert "⏳ queued" in edits[0].payload["content"]

        # The final edit carries exactly the sandbox's image, and says done with the cost.
        final = edits[-1]
        [upload] = final.files
        assert upload.name == "files[0]" and upload.filename == "out-0.webp"
        assert final.payload["attachments"] == [{"id": 0, "filename": "out-0.webp"}]
        assert [upload.data] == await output_bytes(sandbox_server)
        assert final.payload["allowed_mentions"] == {"users": [USER_ID], "parse": []}
        message = fake.original(sent.token)
        assert message is not None
        assert message["content"].startswith(f"{MENTION} asked /imagine: “a red fox in the snow”")
        assert "✅ done in" in message["content"] and "$0.003" in message["content"]
        assert [a["filename"] for a in message["attachments"]] == ["out-0.webp"]

        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["input"]["aspect_ratio"] == "16:9" and prediction["input"]["seed"] == 7
        assert sandbox_server.sandbox.webhook_deliveries[-1].event == "completed"
        job = await conjure.runtime.store.find_by_prediction(prediction["id"])
        assert job is not None and job.delivery == Delivery.DELIVERED
        assert (job.platform, job.workspace, job.channel) == (
            "discord",
            str(GUILD_ID),
            str(CHANNEL_ID),
        )
        assert job.destination["message_id"] == message["id"]


async def test_progress_is_shown_at_most_every_two_seconds(sqlite_url: str) -> None:
    # A sandbox slow enough that flux-dev runs for about three seconds, sending logs twice a second.
    app = create_sandbox_app(SandboxConfig(speed=1.0, image_side=SMALL_IMAGES))
    sandbox = app.state.sandbox
    async with serve_app(app) as url:
        server = SandboxServer(url, sandbox.config.api_token, sandbox.config.secret, sandbox)
        async with running_discord_conjure(server, sqlite_url, progress_interval=2.0) as conjure:
            sent = await conjure.interact("imagine", {"prompt": "an owl", "model": "flux-dev"})
            await conjure.settle()

    edits = webhook_calls(conjure.discord, sent.token)
    announce, *updates, final = edits
    assert "queued" in announce.payload["content"] and final.files
    logs = [d for d in sandbox.webhook_deliveries if d.event == "logs"]
    assert len(logs) > len(updates) >= 2  # progress was shown, and some of it was held back
    assert any("%" in c.payload["content"] for c in updates)  # a progress bar
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert min(gaps) >= 1.9, gaps


@pytest.mark.parametrize("how", ["clock", "401"])
async def test_a_job_outliving_its_token_is_posted_in_the_channel(
    sandbox_server: SandboxServer, sqlite_url: str, how: str
) -> None:
    """After 15 minutes only the bot token works: reply to the response in the channel."""
    sandbox_server.sandbox.faults.slow_start = 0.5  # time to move the clocks mid-job
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a slow snail"})
        await fake.wait_for(  # the status was shown while the token lived
            lambda: any("starting" in c.payload["content"] for c in webhook_calls(fake, sent.token))
        )
        before = len(webhook_calls(fake, sent.token))
        if how == "clock":  # the job ends 16 minutes after the command
            later = timedelta(minutes=16)
            conjure.adapter.clock = lambda: utcnow() + later
            fake.clock_shift = later
        else:  # Discord says the token is no longer valid
            fake.expire_tokens = True
        fake.rate_limit("POST", f"^/channels/{CHANNEL_ID}/messages$", retry_after=0.2)
        await conjure.settle()

        late = webhook_calls(fake, sent.token)[before:]
        if how == "clock":
            assert late == []  # known dead: not even tried (invalid requests risk a ban)
        else:
            assert [c.status for c in late] == [401]
        posts = fake.find("POST", f"^/channels/{CHANNEL_ID}/messages$")
        assert [c.status for c in posts] == [429, 200]  # a 429 on the bot's route, honoured
        assert posts[1].headers["authorization"] == f"Bot {fake.bot_token}"
        assert posts[1].payload["message_reference"]["message_id"] == int(
            fake.original(sent.token)["id"]
        )
        [reply] = fake.channel_messages(CHANNEL_ID)
        assert reply["content"].startswith(MENTION) and "✅ done" in reply["content"]
        assert [a["data"] for a in reply["attachments"]] == await output_bytes(sandbox_server)
        job = await conjure.runtime.store.find_by_prediction(
            next(iter(sandbox_server.sandbox.predictions))
        )
        assert job is not None and job.delivery == Delivery.DELIVERED


async def test_a_429_on_the_response_edit_is_honoured_and_the_edit_lands_once(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        fake.rate_limit("PATCH", ORIGINAL, retry_after=0.4)
        sent = await conjure.interact("imagine", {"prompt": "a patient heron"})
        await conjure.settle()

        edits = webhook_calls(fake, sent.token)
        assert [c.status for c in edits[:2]] == [429, 200]
        assert edits[0].payload == edits[1].payload  # the same edit, retried
        assert edits[1].at - edits[0].at >= 0.4
        queued = [c for c in edits if c.status == 200 and "queued" in c.payload["content"]]
        assert len(queued) == 1
        message = fake.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert len(message["attachments"]) == 1


# ---- refusals and failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"prompt": "a fox", "model": "dall-e"}, "Model 'dall-e' is not available for /imagine"),
        ({"prompt": "--ar 16:9"}, "The prompt is missing."),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "the limit is 2,000"),
        ({"prompt": "a fox --ar 1:1", "ar": "16:9"}, "Option --ar is given more than once."),
        ({"prompt": "a fox", "n": 9}, "Option --n must be between 1 and 4, not 9."),
    ],
)
async def test_bad_options_get_a_private_answer_and_create_nothing(
    sandbox_server: SandboxServer, sqlite_url: str, options: dict, said: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact("imagine", options)
        answer = callback(conjure.discord, sent.token).payload
        assert answer["type"] == 4 and answer["data"]["flags"] == EPHEMERAL
        assert said in answer["data"]["content"]
        assert "Usage: /imagine <prompt>" in answer["data"]["content"]
        assert webhook_calls(conjure.discord, sent.token) == []
        assert await nothing_created(conjure)


async def test_over_quota_is_refused_privately(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(
        sandbox_server, sqlite_url, conjure_user_jobs_per_day=1
    ) as conjure:
        fake = conjure.discord
        await conjure.interact("imagine", {"prompt": "one"})
        await conjure.settle()
        sent = await conjure.interact("imagine", {"prompt": "two"})

        # Known before the interaction is deferred: the first response is the private answer.
        [callback] = fake.find("POST", f"/interactions/\\d+/{sent.token}/callback")
        assert callback.payload["type"] == 4
        assert callback.payload["data"]["flags"] == EPHEMERAL
        assert "used all 1 of your jobs for today" in callback.payload["data"]["content"]
        assert webhook_calls(fake, sent.token, "POST") == []
        assert webhook_calls(fake, sent.token, "DELETE") == []
        assert sandbox_server.sandbox.create_count == 1
        assert await conjure.runtime.store.count() == 1


async def test_a_failed_prediction_is_told_in_plain_words(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.fail_next = 1
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact("imagine", {"prompt": "a cat"})
        await conjure.settle()
        message = conjure.discord.original(sent.token)
        assert message is not None and message["attachments"] == []
        content = message["content"]
        assert content.startswith(MENTION) and "❌ failed" in content
        assert "The model's safety checker flagged the result, so nothing was shown." in content
        assert "Try rewording the prompt. Nothing was charged." in content
        assert "Traceback" not in content and "Error" not in content


async def test_a_replicate_error_is_answered_privately(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    sandbox_server.sandbox.faults.http.append(HttpFault(status=402, method="POST"))
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a tree"})
        await conjure.settle()
        [follow_up] = webhook_calls(fake, sent.token, "POST")
        assert follow_up.payload["flags"] == EPHEMERAL
        assert follow_up.payload["content"].startswith(MENTION)
        assert "credit" in follow_up.payload["content"]
        assert fake.original(sent.token) is None
        assert sandbox_server.sandbox.create_count == 0
        assert await conjure.runtime.store.unfinished() == []  # finished as failed, given back


async def test_a_job_given_up_after_a_lost_create_still_gets_its_late_image(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """The create's answer was lost and could not be found: the person is told privately and
    the public "thinking" goes; when the prediction turns out to have run, its image is posted
    in the channel, mentioning them."""

    lose_the_next_create(sandbox_server)
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        async with impatient_replicate(conjure.runtime.service, sandbox_server):
            sent = await conjure.interact("imagine", {"prompt": "a ghost"})
            await conjure.settle()
        fake = conjure.discord
        [told] = webhook_calls(fake, sent.token, "POST")
        assert told.payload["flags"] == EPHEMERAL
        [late] = fake.channel_messages(CHANNEL_ID)
        assert late["content"].startswith(MENTION) and "✅ done" in late["content"]
        assert [a["data"] for a in late["attachments"]] == await output_bytes(sandbox_server)
        [job] = await all_jobs(conjure.runtime.store)
        assert job.delivery == Delivery.DELIVERED
        assert sandbox_server.sandbox.create_count == 1


# ---- outputs --------------------------------------------------------------------------------


async def test_a_file_over_the_upload_limit_is_linked(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact(
            "imagine", {"prompt": "a huge mural"}, attachment_size_limit=1000
        )
        await conjure.settle()
        final = webhook_calls(conjure.discord, sent.token)[-1]
        assert final.files == []
        [prediction] = sandbox_server.sandbox.predictions.values()
        [url] = prediction["output"]
        content = final.payload["content"]
        assert "✅ done" in content
        # Linked before it is downloaded: the interaction's limit is known from the start.
        assert "🔗 The image (" in content and "larger than can be uploaded here" in content
        assert url in content and "UTC, an hour after the run" in content


async def test_a_text_answer_is_the_message_content(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact("ask", {"prompt": "why is the sky blue?", "max-tokens": 50})
        await conjure.settle()
        [prediction] = sandbox_server.sandbox.predictions.values()
        assert prediction["input"]["max_tokens"] == 50
        message = conjure.discord.original(sent.token)
        assert message is not None and message["attachments"] == []
        assert "✅ done" in message["content"]
        assert 'You asked: "why is the sky blue?"' in message["content"]


async def test_a_text_answer_too_long_for_a_message_is_attached(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url) as conjure:
        sent = await conjure.interact("ask", {"prompt": "tell me everything"})
        await conjure.settle()
        job = await conjure.runtime.store.find_by_prediction(
            next(iter(sandbox_server.sandbox.predictions))
        )
        assert job is not None
        # Posted again as if for the first time: a delivered row no longer holds the token.
        job.destination["token"] = sent.token
        essay = "All about it. " * 300  # 4,200 characters: more than one message holds
        await conjure.adapter.post_result(job, JobResult(text=essay))
        message = conjure.discord.original(sent.token)
        assert message is not None and "✅ done" in message["content"]
        assert "The answer is 4,200 characters long" in message["content"]
        # Its beginning stays in the message (what was shown while it was written), cut short.
        assert "\nAll about it. All about it." in message["content"]
        assert len(message["content"]) <= 2000 and "…" in message["content"]
        [attachment] = message["attachments"]
        assert attachment["filename"].endswith(".txt") and attachment["data"] == essay.encode()


# ---- commands -------------------------------------------------------------------------------


def _expected_options(name: str) -> list[dict]:
    spec = default_catalog().commands[name]
    # A file that stands for the prompt (/transcribe's audio file) makes the prompt optional.
    either = any(o.is_file and o.field == spec.prompt_field for o in spec.options)
    expected = [{"type": 3, "name": "prompt", "required": not either}]
    for option in spec.options:
        entry: dict = {"name": option.name, "required": False}
        if option.is_file:
            entry["type"] = 11  # ATTACHMENT
        elif option.type in ("choice", "model"):
            entry |= {"type": 3, "choices": [{"name": c, "value": c} for c in option.choices]}
        else:
            entry["type"] = {"int": 4, "float": 10, "bool": 5, "str": 3}[option.type]
            if option.minimum is not None:
                entry["min_value"] = option.minimum
            if option.maximum is not None:
                entry["max_value"] = option.maximum
        expected.append(entry)
    return expected


@pytest.mark.parametrize("guild", [True, False])
async def test_commands_are_synced_from_the_catalog(
    sandbox_server: SandboxServer, sqlite_url: str, guild: bool
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url, guild=guild) as conjure:
        fake = conjure.discord
        guild_path = f"^/applications/{APP_ID}/guilds/{GUILD_ID}/commands$"
        global_path = f"^/applications/{APP_ID}/commands$"
        [sync] = fake.find("PUT", guild_path if guild else global_path)
        assert fake.find("PUT", global_path if guild else guild_path) == []
        assert sync.headers["authorization"] == f"Bot {fake.bot_token}"
        commands = {c["name"]: c for c in sync.json}
        assert set(commands) == {"imagine", "ask", "transcribe", "video", "conjure"}
        for name in ("imagine", "ask", "transcribe"):
            options = [
                {k: v for k, v in option.items() if k != "description"}
                for option in commands[name]["options"]
            ]
            assert options == _expected_options(name)
            assert commands[name]["contexts"] == [0]  # servers only: quotas are per server
        imagine = {o["name"]: o for o in commands["imagine"]["options"]}
        assert imagine["n"]["min_value"] == 1 and imagine["n"]["max_value"] == 4
        assert imagine["ar"]["description"] == "Aspect ratio, width:height"
        subcommands = [(o["name"], o["type"]) for o in commands["conjure"]["options"]]
        assert sorted(subcommands) == [
            ("help", 1),
            ("models", 1),
            ("quota", 1),
            ("report", 1),
            ("safety", 1),
            ("usage", 1),
            ("workspace-quota", 1),
        ]

        # The synced commands answer, wherever they were synced.
        sent = await conjure.interact("conjure", subcommand="help")
        assert "/imagine <prompt>" in fake.original(sent.token)["content"]


async def test_conjure_usage_models_and_help_answer_privately(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(
        sandbox_server, sqlite_url, conjure_user_jobs_per_day=3
    ) as conjure:
        fake = conjure.discord
        await conjure.interact("imagine", {"prompt": "a hat"})
        await conjure.settle()
        answers = {}
        for word in ("usage", "models", "help"):
            sent = await conjure.interact("conjure", subcommand=word)
            deferral = callback(fake, sent.token).payload
            assert deferral == {"type": 5, "data": {"flags": EPHEMERAL}}
            message = fake.original(sent.token)
            assert message is not None and message["flags"] & EPHEMERAL
            answers[word] = message["content"]
        assert "1 of 3" in answers["usage"] and "$0.003" in answers["usage"]
        assert "flux-schnell" in answers["models"] and "$0.003 per output" in answers["models"]
        assert "/imagine <prompt>" in answers["help"]


async def test_quota_and_report_are_for_admins_only(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    admin, member = 1_100_000_000_000_000_777, USER_ID
    async with running_discord_conjure(
        sandbox_server, sqlite_url, conjure_admins=f"discord:{admin}"
    ) as conjure:
        fake = conjure.discord
        await conjure.interact("imagine", {"prompt": "a lantern"})
        await conjure.settle()

        def answer(sent) -> str:
            message = fake.original(sent.token)
            assert message is not None and message["flags"] & EPHEMERAL
            return message["content"]

        target = UserOption(member, "fox-lover")
        refused = await conjure.interact(
            "conjure", {"user": target, "jobs_per_day": "1"}, subcommand="quota", user_id=member
        )
        assert answer(refused).startswith("Only Conjure admins can do that.")
        report = await conjure.interact("conjure", subcommand="report", user_id=member)
        assert answer(report).startswith("Only Conjure admins can do that.")

        done = await conjure.interact(
            "conjure",
            {"user": target, "jobs_per_day": "1", "usd_per_month": "2.5", "inflight": "1"},
            subcommand="quota",
            user_id=admin,
        )
        assert f"<@{member}> now has limits: jobs 1/day, budget $2.50/month, in flight 1" in (
            answer(done)
        )
        server = await conjure.interact(
            "conjure",
            {"jobs_per_day": "100", "usd_per_month": "unlimited", "inflight": "0"},
            subcommand="workspace-quota",
            user_id=admin,
        )
        assert (
            "This workspace now has limits: jobs 100/day, budget unlimited/month, in flight 0"
            in answer(server)
        )
        nan = await conjure.interact(
            "conjure", {"usd_per_month": "nan"}, subcommand="workspace-quota", user_id=admin
        )
        assert answer(nan).startswith("usd=nan: not a number")
        server = await conjure.interact(
            "conjure", {"inflight": "default"}, subcommand="workspace-quota", user_id=admin
        )
        assert "in flight unlimited" in answer(server)
        report = await conjure.interact("conjure", subcommand="report", user_id=admin)
        assert f"<@{member}>: 1 job, $0.003" in answer(report)

        # The member's new limit holds: one job today already, so the next is refused.
        refused_job = await conjure.interact("imagine", {"prompt": "another lantern"})
        followups = [c for c in fake.calls if c.method == "POST" and refused_job.token in c.path]
        assert any("all 1 of your jobs for today" in str(c.payload) for c in followups)
        assert conjure.sandbox.sandbox.create_count == 1


# ---- the way `conjure serve` runs it --------------------------------------------------------


async def test_serve_gets_interactions_over_the_gateway_and_delivers(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(sandbox_server, sqlite_url, gateway=True) as conjure:
        fake = conjure.discord
        sent = await conjure.interact("imagine", {"prompt": "a lighthouse at dusk"})
        message = await fake.wait_for(
            lambda: (m := fake.original(sent.token)) and m["attachments"] and m
        )
        await conjure.settle()
        assert conjure.gateway is not None
        [identify] = conjure.gateway.identifies
        assert identify["token"] == fake.bot_token
        assert identify["intents"] == discord.Intents(guilds=True).value  # nothing privileged
        assert callback(fake, sent.token).payload == {"type": 5}
        assert "✅ done" in message["content"]
        assert [a["data"] for a in message["attachments"]] == await output_bytes(sandbox_server)


async def test_a_gateway_reconnect_resumes_the_session_and_interactions_keep_working(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    """Discord moves sessions between servers with RECONNECT; discord.py must RESUME (not
    IDENTIFY again) and the next /imagine must work as the first did."""
    async with running_discord_conjure(sandbox_server, sqlite_url, gateway=True) as conjure:
        fake, gateway = conjure.discord, conjure.gateway
        assert gateway is not None
        first = await conjure.interact("imagine", {"prompt": "before the move"})
        await fake.wait_for(lambda: (m := fake.original(first.token)) and m["attachments"])
        await gateway.ask_to_reconnect()
        await fake.wait_for(lambda: gateway.resumes and gateway.connected == 1)
        second = await conjure.interact("imagine", {"prompt": "after the move"})
        message = await fake.wait_for(
            lambda: (m := fake.original(second.token)) and m["attachments"] and m
        )
        await conjure.settle()
        assert len(gateway.identifies) == 1  # resumed, not identified again
        [resume] = gateway.resumes
        assert resume["token"] == fake.bot_token and resume["session_id"] == "fake-session"
        assert resume["seq"] >= 1  # it resumed from the events it had seen
        assert "✅ done" in message["content"]


async def test_budget_alerts_go_to_the_alert_channel_without_pinging(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_discord_conjure(
        sandbox_server,
        sqlite_url,
        conjure_user_usd_per_month=0.003,
        conjure_alert_channels=f"discord:{ALERT_CHANNEL_ID}",
    ) as conjure:
        await conjure.interact("imagine", {"prompt": "an expensive fox"})
        await conjure.settle()
        posts = conjure.discord.find("POST", f"^/channels/{ALERT_CHANNEL_ID}/messages$")
        assert posts and all(c.status == 200 for c in posts)
        assert all(c.payload["allowed_mentions"] == {"parse": []} for c in posts)
        texts = [m["content"] for m in conjure.discord.channel_messages(ALERT_CHANNEL_ID)]
        assert any(t.startswith(f"Budget alert: {MENTION} has reached 100%") for t in texts), texts


async def test_a_rejected_token_stops_start_up_with_a_plain_message(
    sandbox_server: SandboxServer, sqlite_url: str
) -> None:
    async with running_fake_discord() as fake:
        settings = make_settings(
            sandbox_server,
            sqlite_url,
            webhooks=False,
            discord_token="not-the-token",
            discord_api_url=fake.api_url,
        )
        runtime = await Runtime.start(settings)
        try:
            with pytest.raises(ConfigError, match="DISCORD_TOKEN: Discord rejected the token"):
                async with run_platform(runtime, "discord", connect_gateway=False):
                    pass
            assert "discord" not in runtime.service.adapters
        finally:
            await runtime.aclose()


def test_files_share_the_upload_limit_and_the_rest_are_linked() -> None:
    mb = 1024 * 1024
    files = [
        OutputFile(f"out-{i}.png", b"x" * size, "image/png", f"https://replicate.delivery/{i}")
        for i, size in enumerate([4 * mb, 4 * mb, 12 * mb, 1 * mb])
    ]
    attach, notes = fit_files(files, 10 * mb)
    assert [f.filename for f in attach] == ["out-0.png", "out-1.png", "out-3.png"]
    assert notes == [
        "📎 out-2.png (12 MB) is over this server's 10 MB upload limit; "
        "the link expires in an hour: <https://replicate.delivery/2>"
    ]
    attach, notes = fit_files(files[:2], 6 * mb)
    assert [f.filename for f in attach] == ["out-0.png"]
    assert notes[0].startswith("📎 out-1.png (4 MB) did not fit in this message's 6 MB")
    many = [OutputFile(f"{i}.png", b"x", "image/png") for i in range(11)]
    attach, notes = fit_files(many, 10 * mb)
    assert len(attach) == 10
    assert notes == [
        "📎 10.png (1 KB) did not fit (10 files per message), and there is no link to share."
    ]
