"""Configuration mistakes a new operator makes, met the way they meet them: `conjure` run on a real
conjure.toml and real environment variables, answering with one line that names the file or the
variable, the place and the fix (never a traceback, never a secret, never half-configured)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.config import ConfigError, load_settings
from tests.cli_harness import run_conjure

MANIFEST = ("manifest", "--url", "https://bot.example")


def one_line(stderr: str) -> str:
    [line] = stderr.splitlines()  # exactly one line, and no traceback
    return line


def run_with_config(tmp_path: Path, content: bytes, *args: str) -> tuple[int, str]:
    config = tmp_path / "conjure.toml"
    config.write_bytes(content)
    result = run_conjure(*(args or MANIFEST), cwd=tmp_path, env={"CONJURE_CONFIG": str(config)})
    return result.returncode, result.stderr


# --------------------------------------------------------------------------- the file itself


def test_a_file_that_is_not_utf8_is_named_with_the_fix(tmp_path: Path) -> None:
    # Saved as Latin-1 by an editor: "café" with a lone 0xE9 byte.
    code, stderr = run_with_config(tmp_path, b'[commands.imagine]\ndescription = "caf\xe9"\n')
    assert code != 0
    line = one_line(stderr)
    assert line.startswith(f"conjure: CONJURE_CONFIG: {tmp_path / 'conjure.toml'}: "), line
    assert "UTF-8" in line and "line 2" in line, line
    assert "UnicodeDecodeError" not in line


def test_conjure_quota_names_a_file_that_is_not_utf8_too(tmp_path: Path) -> None:
    """`conjure quota show` reads only [quotas], through the same reader as the catalog: the
    same line, not a bare UnicodeDecodeError."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'conjure.db'}"
    config = tmp_path / "conjure.toml"
    config.write_bytes(b"[quotas.user]\njobs_per_day = 5 # caf\xe9\n")
    env = {"CONJURE_CONFIG": str(config), "CONJURE_DATABASE_URL": db}
    result = run_conjure("quota", "show", cwd=tmp_path, env=env)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert f"{config}: not UTF-8 text (line 2)" in line and "UnicodeDecodeError" not in line, line


def test_a_file_nested_too_deeply_is_named(tmp_path: Path) -> None:
    code, stderr = run_with_config(tmp_path, b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n")
    assert code != 0
    line = one_line(stderr)
    assert line.startswith(f"conjure: CONJURE_CONFIG: {tmp_path / 'conjure.toml'}: "), line
    assert "RecursionError" not in line


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """CONJURE_CONFIG pointed at the wrong file (a log, a dump): a conjure.toml is a few KB, and
    parsing megabytes would hold start-up for seconds (or forever, for /dev/zero)."""
    code, stderr = run_with_config(tmp_path, b"# padding\n" * 300_000)  # 3 MB of comments
    assert code != 0
    line = one_line(stderr)
    assert line.startswith(f"conjure: CONJURE_CONFIG: {tmp_path / 'conjure.toml'}: too large")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[comands.paint]\nmodel = "sdxl"\n', "comands: unknown table (did you mean 'commands'?)"),
        ("[model.sdxl]\nprice_per_output = 0\n", "model: unknown table (did you mean 'models'?)"),
        ("[quota.user]\njobs_per_day = 3\n", "quota: unknown table (did you mean 'quotas'?)"),
    ],
)
def test_a_misspelt_top_level_table_is_not_silently_ignored(
    tmp_path: Path, text: str, where: str
) -> None:
    code, stderr = run_with_config(tmp_path, text.encode())
    assert code != 0
    assert one_line(stderr) == f"conjure: CONJURE_CONFIG: {tmp_path / 'conjure.toml'}: {where}"


# --------------------------------------------------------------------------- Discord's limits


def test_a_choice_longer_than_discord_allows_is_refused(tmp_path: Path) -> None:
    """Discord refuses a command whose choice is over 100 characters, and with it the sync of
    every command: the catalog says so before anything starts."""
    long = "a" * 101
    text = (
        '[commands.paint]\nmodel = "sdxl"\n[[commands.paint.options]]\nname = "style"\n'
        f'type = "choice"\nfield = "style"\ndescription = "Style"\nchoices = ["ok", "{long}"]\n'
    )
    code, stderr = run_with_config(tmp_path, text.encode())
    assert code != 0
    assert one_line(stderr) == (
        f"conjure: CONJURE_CONFIG: {tmp_path / 'conjure.toml'}: "
        "commands.paint.options.style.choices[1]: at most 100 characters (Discord's limit)"
    )


def test_a_prompt_label_too_long_for_discord_is_refused(tmp_path: Path) -> None:
    """The label is the prompt option's description on Discord ("The <label>", 100 at most)."""
    text = f'[commands.paint]\nmodel = "sdxl"\nprompt_label = "{"x" * 97}"\n'
    code, stderr = run_with_config(tmp_path, text.encode())
    assert code != 0
    line = one_line(stderr)
    assert line.startswith(
        f"conjure: CONJURE_CONFIG: {tmp_path / 'conjure.toml'}: commands.paint.prompt_label: "
    ), line


# --------------------------------------------------------------------------- the environment


@pytest.mark.parametrize(
    "admins",
    ["slack:<@U0123>", "slack: U0123", "slack:U0123 U0456", "discord:<@80351110224678912>"],
)
def test_an_admin_written_as_a_mention_or_with_spaces_stops_start_up(
    tmp_path: Path, admins: str
) -> None:
    """Such an entry can never match a user id, so the operator would silently not be an admin."""
    result = run_conjure(*MANIFEST, cwd=tmp_path, env={"CONJURE_ADMINS": admins})
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("conjure: CONJURE_ADMINS: each entry must look like")


def test_admin_entries_as_documented_are_accepted() -> None:
    settings = load_settings(
        _env_file=None, conjure_admins="slack:T0123/U0123, discord:80351/11022;console:boss"
    )
    assert settings.is_admin("slack", "T0123", "U0123")
    assert settings.is_admin("discord", "any", "11022") is False
    assert settings.is_admin("discord", "80351", "11022")


def test_an_alert_channel_written_as_a_link_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="CONJURE_ALERT_CHANNELS: each entry"):
        load_settings(_env_file=None, conjure_alert_channels="slack:<#C0123|general>")


def test_two_alert_channels_for_one_platform_stop_start_up() -> None:
    """Alerts go to one channel a platform: the second was dropped without a word, so the
    admins watching it were never told a budget ran out."""
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, conjure_alert_channels="slack:C0123,discord:99,slack:C0456")
    assert str(caught.value).splitlines()[1].strip() == (
        "CONJURE_ALERT_CHANNELS: one channel for each platform; slack is given twice"
    )


def test_a_confirm_price_that_is_not_a_number_says_how_to_turn_asking_off(tmp_path: Path) -> None:
    result = run_conjure(*MANIFEST, cwd=tmp_path, env={"CONJURE_CONFIRM_ABOVE_USD": "abc"})
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("conjure: CONJURE_CONFIRM_ABOVE_USD: "), line
    assert "none allowed" not in line and "never ask" in line, line


# --------------------------------------------------------------------------- conjure manifest


def test_manifest_takes_its_url_from_conjure_public_url(tmp_path: Path) -> None:
    """DESIGN.md's `conjure manifest`: with CONJURE_PUBLIC_URL set, --url may be left out."""
    result = run_conjure(
        "manifest", cwd=tmp_path, env={"CONJURE_PUBLIC_URL": "https://bot.example"}
    )
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    urls = {c["url"] for c in manifest["features"]["slash_commands"]}
    assert urls == {"https://bot.example/slack/events"}
    assert (
        manifest["settings"]["interactivity"]["request_url"] == "https://bot.example/slack/events"
    )


def test_manifest_without_any_url_says_where_to_give_one(tmp_path: Path) -> None:
    result = run_conjure("manifest", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("conjure: --url: ") and "CONJURE_PUBLIC_URL" in line, line


def test_manifest_names_conjure_public_url_when_that_is_what_slack_cannot_call(
    tmp_path: Path,
) -> None:
    env = {"CONJURE_PUBLIC_URL": "http://bot.example/conjure"}
    result = run_conjure("manifest", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("conjure: CONJURE_PUBLIC_URL: must be https://host")


def test_a_run_longer_than_a_day_is_refused(tmp_path: Path) -> None:
    """max_seconds becomes the create's Cancel-After: 1e12 s is no duration Replicate reads, so
    every create of the model would be refused. A day is far past Replicate's own limit."""
    code, stderr = run_with_config(tmp_path, b"[models.whisper]\nmax_seconds = 1e12\n")
    assert code != 0
    line = one_line(stderr)
    assert "models.whisper.max_seconds" in line, line


# --------------------------------------------------------------------------- [quotas]


def quota_show(tmp_path: Path, config: bytes | None, **env: str) -> tuple[int, str, str]:
    """`conjure quota show` in `tmp_path`, with conjure.toml holding `config` (None: no file)."""
    if config is not None:
        (tmp_path / "conjure.toml").write_bytes(config)
    env = {"CONJURE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'conjure.db'}", **env}
    result = run_conjure("quota", "show", cwd=tmp_path, env=env)
    return result.returncode, result.stdout, result.stderr


def test_a_blank_limit_variable_leaves_the_limit_in_conjure_toml(tmp_path: Path) -> None:
    """`CONJURE_WORKSPACE_MAX_IN_FLIGHT=` (a line of .env.example uncommented, or compose's
    `${VAR:-}`) is unset, as a blank limit variable is everywhere else: the file's limit holds,
    not unlimited in its place."""
    config = b"[quotas.workspace]\nmax_in_flight = 10\njobs_per_day = 100\n"
    code, out, err = quota_show(
        tmp_path, config, CONJURE_WORKSPACE_MAX_IN_FLIGHT="", CONJURE_WORKSPACE_JOBS_PER_DAY=" "
    )
    assert code == 0, err
    assert "default for each workspace: jobs 100/day, budget unlimited/month, in flight 10" in out


@pytest.mark.parametrize("line", ['quotas = "10"', "quotas = 5", "quotas = [1]"])
def test_quotas_written_as_a_key_not_a_table_is_named(tmp_path: Path, line: str) -> None:
    code, _, err = quota_show(tmp_path, line.encode() + b"\n")
    assert code == 2
    said = one_line(err)
    assert said.startswith("conjure: conjure.toml: quotas: ") and "[quotas.user]" in said, said
    assert "Error" not in said, said


SET_ONE = ("quota", "set", "--platform", "slack", "--workspace", "T1", "--max-in-flight", "3")


@pytest.mark.parametrize("command", [("quota", "show"), SET_ONE])
def test_a_missing_conjure_config_stops_the_quota_commands_too(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """As it stops serve: not the built-in defaults (unlimited) shown as the ones in force, and
    nothing set under them."""
    missing = tmp_path / "conjure.tmol"
    env = {
        "CONJURE_CONFIG": str(missing),
        "CONJURE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'conjure.db'}",
    }
    result = run_conjure(*command, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert one_line(result.stderr) == f"conjure: {missing}: cannot read: No such file or directory"


@pytest.mark.parametrize("name", ["CONJURE_POLL_INTERVAL", "CONJURE_STATUS_EDITS_PER_MINUTE"])
@pytest.mark.parametrize("value", ["inf", "infinity"])
def test_an_infinite_interval_or_rate_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """CONJURE_POLL_INTERVAL=inf waited for ever between reads, so a polled job never finished."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert f"{name}: Input should be a finite number" in str(caught.value)
