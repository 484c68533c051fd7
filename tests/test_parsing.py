"""Parsing `/command prompt --flag value` text and typed options into a Replicate input."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.catalog import Catalog, default_catalog, load_catalog
from bot.commands.parsing import (
    MAX_PROMPT_CHARS,
    Invocation,
    UsageError,
    parse_invocation,
    parse_options,
)

CATALOG = default_catalog()
IMAGINE_USAGE = CATALOG.commands["imagine"].usage()


def imagine(text: str) -> Invocation:
    return parse_invocation(CATALOG, "imagine", text)


def usage_error(command: str, text: str, catalog: Catalog = CATALOG) -> UsageError:
    with pytest.raises(UsageError) as caught:
        parse_invocation(catalog, command, text)
    return caught.value


# --------------------------------------------------------------------------- prompts and options


@pytest.mark.parametrize(
    ("text", "prompt", "fields"),
    [
        ("a red fox", "a red fox", {}),
        ("a red fox --ar 16:9", "a red fox", {"aspect_ratio": "16:9"}),
        ("a red fox --ar=16:9", "a red fox", {"aspect_ratio": "16:9"}),
        ("--ar 16:9 a red fox", "a red fox", {"aspect_ratio": "16:9"}),
        ("a red --ar 16:9 fox", "a red fox", {"aspect_ratio": "16:9"}),
        ("a fox --aspect-ratio 3:2", "a fox", {"aspect_ratio": "3:2"}),
        ("a fox --AR 3:2", "a fox", {"aspect_ratio": "3:2"}),
        ("a fox --seed 42 --n 2", "a fox", {"seed": 42, "num_outputs": 2}),
        ("a fox --seed 0", "a fox", {"seed": 0}),
        ("a fox --seed 2147483647", "a fox", {"seed": 2**31 - 1}),
        ("a fox --seed +7", "a fox", {"seed": 7}),
        ("a fox --n=4", "a fox", {"num_outputs": 4}),
        ("  a   red\tfox  ", "a   red\tfox", {}),  # inner spacing kept, outer trimmed
        ("line one\nline two --n 2", "line one\nline two", {"num_outputs": 2}),
        # quotes: the whole prompt quoted is unwrapped; `--` inside quotes is prompt text
        ('"a red fox --ar 16:9" --ar 1:1', "a red fox --ar 16:9", {"aspect_ratio": "1:1"}),
        ("'a red fox -- in snow' --n 2", "a red fox -- in snow", {"num_outputs": 2}),
        ('" spaced out "', "spaced out", {}),
        # a quoted phrase inside a prompt is content (image models render quoted text)
        ('a sign saying "OPEN --now" --seed 1', 'a sign saying "OPEN --now"', {"seed": 1}),
        ('a sign saying "OPEN", neon', 'a sign saying "OPEN", neon', {}),
        ('"a fox" "in snow"', '"a fox" "in snow"', {}),
        # Slack's smart quotes
        ("“a fox --n 3” --n 2", "a fox --n 3", {"num_outputs": 2}),
        ("‘a fox --n 3’ --n 2", "a fox --n 3", {"num_outputs": 2}),  # noqa: RUF001
        ("a sign saying “--OPEN--” --n 2", "a sign saying “--OPEN--”", {"num_outputs": 2}),
        ("„a fox --n 3“", "a fox --n 3", {}),
        # apostrophes are not quotes
        ("the fox's den --ar 1:1", "the fox's den", {"aspect_ratio": "1:1"}),
        ("the fox’s den --ar 1:1", "the fox’s den", {"aspect_ratio": "1:1"}),  # noqa: RUF001
        ("'90s poster --n 2", "'90s poster", {"num_outputs": 2}),
        ('a "fox --n 2', 'a "fox', {"num_outputs": 2}),  # unterminated: literal
        ("rock 'n' roll --seed 3", "rock 'n' roll", {"seed": 3}),
        # quoted option values
        ('a fox --ar "16:9"', "a fox", {"aspect_ratio": "16:9"}),
        ("a fox --ar=“16:9”", "a fox", {"aspect_ratio": "16:9"}),
        # a bare `--` ends options
        ("a fox -- --ar 16:9", "a fox --ar 16:9", {}),
        ("--n 2 -- --n 3 is a flag", "--n 3 is a flag", {"num_outputs": 2}),
        ("a fox --", "a fox", {}),
        # iOS and macOS turn -- into an em dash
        ("a fox —ar 16:9", "a fox", {"aspect_ratio": "16:9"}),
        ("a fox –n 2", "a fox", {"num_outputs": 2}),  # noqa: RUF001
        ("a fox — in snow", "a fox — in snow", {}),
        ("a fox-tail --n 2", "a fox-tail", {"num_outputs": 2}),
        ("a fox -n 2", "a fox -n 2", {}),  # single dash is prose
        ("a fox --5", "a fox --5", {}),  # not an option name
        # choices match case-insensitively and come out as declared
        ("a fox --model SDXL --ar 1:1", "a fox", {"width": 1024, "height": 1024}),
    ],
)
def test_parse_prompt_and_options(text, prompt, fields):
    invocation = imagine(text)
    assert invocation.prompt == prompt
    assert invocation.input == {"prompt": prompt, **fields}


@pytest.mark.parametrize(
    "prompt",
    [
        "一只在雪地里的红狐狸",
        "雪の中の赤い狐　--n 2",  # ideographic space separates words too
        "🦊🔥 in the snow",
        "👩‍👩‍👧‍👦 family portrait",  # ZWJ sequence
        "Ünïcödé çafé naïve",
        "مرحبا بالعالم",
        "e\u0301 combining accent",
    ],
)
def test_unicode_and_emoji_pass_through(prompt):
    invocation = imagine(prompt)
    expected = prompt.removesuffix("　--n 2")
    assert invocation.prompt == expected
    assert invocation.input["prompt"] == expected


def test_flux_invocation():
    invocation = imagine("a red fox in the snow --ar 16:9 --n 3 --seed 7")
    assert invocation.command.name == "imagine"
    assert invocation.model.key == "flux-schnell"
    assert invocation.outputs == 3
    assert invocation.estimate_micros() == 9_000
    assert invocation.options == {"ar": "16:9", "n": 3, "seed": 7}


def test_model_choice_and_estimate():
    invocation = imagine("a fox --model flux-dev --n 2")
    assert invocation.model.key == "flux-dev"
    assert invocation.estimate_micros() == 50_000


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1344, 768)),
        ("9:16", (768, 1344)),
        ("21:9", (1664, 704)),
        ("3:2", (1280, 832)),
        ("4:3", (1216, 896)),
    ],
)
def test_sdxl_gets_width_and_height_instead_of_aspect_ratio(ratio, size):
    invocation = imagine(f"a fox --ar {ratio} --model sdxl --n 2")
    assert invocation.input == {
        "prompt": "a fox",
        "width": size[0],
        "height": size[1],
        "num_outputs": 2,
    }
    assert invocation.model.route == "version"
    assert invocation.outputs == 2
    assert invocation.estimate_micros() == 2 * 8 * 2_300  # 2 x 8 s x $0.0023


def test_sdxl_without_ar_sends_no_size():
    assert imagine("a fox --model sdxl").input == {"prompt": "a fox"}


def test_ask():
    invocation = parse_invocation(CATALOG, "/ask", "why is the sky blue? --max-tokens 256")
    assert invocation.model.key == "llama-3-8b"
    assert invocation.input == {"prompt": "why is the sky blue?", "max_tokens": 256}
    assert invocation.outputs == 1
    # Priced per token: 20 bytes of prompt, about 5 tokens, and up to 256 tokens of answer
    # at $0.05 and $0.25 a million: 5 x 0.05 + 256 x 0.25 = 64.25 micro-dollars, rounded up.
    assert invocation.estimate_micros() == 65
    # At most every byte a token, plus the template's 512: 532 x 0.05 + 256 x 0.25 = 90.6.
    assert invocation.ceiling_micros() == 91


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("https://example.com/talk.mp3", "https://example.com/talk.mp3"),
        ("  http://example.com/a.wav?x=1&y=2  ", "http://example.com/a.wav?x=1&y=2"),
        ("<https://example.com/a.mp3>", "https://example.com/a.mp3"),
        ("<https://example.com/a.mp3|a.mp3>", "https://example.com/a.mp3"),
        ('"https://example.com/a.mp3"', "https://example.com/a.mp3"),
        ("HTTPS://example.com/a.mp3", "HTTPS://example.com/a.mp3"),
    ],
)
def test_transcribe_urls(text, url):
    invocation = parse_invocation(CATALOG, "transcribe", text)
    assert invocation.input == {"audio": url}
    assert invocation.prompt == url
    assert invocation.model.key == "whisper"
    assert invocation.estimate_micros() == 24_000


@pytest.mark.parametrize(
    "text",
    [
        "ftp://example.com/a.mp3",
        "example.com/a.mp3",
        "a talk",
        "https://",
        "file:///etc/passwd",
        "https://example.com/a.mp3 please",
        '"https://example.com/a b.mp3"',
    ],
)
def test_transcribe_rejects_non_http_urls(text):
    error = usage_error("transcribe", text)
    assert error.message == "The audio URL must be an http:// or https:// link."
    assert error.usage == "/transcribe <audio URL>"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --foo 1", "Unknown option --foo."),
        ("a fox --sead 1", "Unknown option --sead. Did you mean --seed?"),
        ("a fox --aspect 16:9", "Unknown option --aspect. Did you mean --aspect-ratio?"),
        ("a fox --ar", "Option --ar needs a value."),
        ("a fox --ar --seed 1", "Option --ar needs a value."),
        ("a fox --seed -- x", "Option --seed needs a value."),
        ("a fox --seed=", "Option --seed needs a whole number, not ''."),
        ("a fox --seed abc", "Option --seed needs a whole number, not 'abc'."),
        ("a fox --seed 1.5", "Option --seed needs a whole number, not '1.5'."),
        ("a fox --seed -1", "Option --seed must be between 0 and 2147483647, not -1."),
        (
            "a fox --seed 2147483648",
            "Option --seed must be between 0 and 2147483647, not 2147483648.",
        ),
        ("a fox --n 0", "Option --n must be between 1 and 4, not 0."),
        ("a fox --n 5", "Option --n must be between 1 and 4, not 5."),
        (
            "a fox --ar 7:3",
            "Option --ar must be one of 1:1, 16:9, 21:9, 3:2, 2:3, 4:5, 5:4, 3:4, 4:3, 9:16, 9:21; "
            "'7:3' is not.",
        ),
        (
            "a fox --aspect-ratio wide",
            "Option --aspect-ratio must be one of 1:1, 16:9, 21:9, 3:2, 2:3, 4:5, 5:4, 3:4, 4:3, "
            "9:16, 9:21; 'wide' is not.",
        ),
        ("a fox --ar 1:1 --ar 16:9", "Option --ar is given more than once."),
        ("a fox --ar 1:1 --aspect-ratio 16:9", "Option --ar is given more than once."),
        ("a fox --n 1 --n=1", "Option --n is given more than once."),
        ("", "The prompt is missing."),
        ("   ", "The prompt is missing."),
        ("--ar 16:9", "The prompt is missing."),
        ('""', "The prompt is missing."),
        (
            "a fox --model flx",
            "Model 'flx' is not available for /imagine; choose flux-schnell, flux-dev, sdxl.",
        ),
        (
            "a fox --model flux-devv",
            "Model 'flux-devv' is not available for /imagine; choose flux-schnell, flux-dev, sdxl. "
            "Did you mean flux-dev?",
        ),
        (
            "a fox --model llama-3-8b",
            "Model 'llama-3-8b' is not available for /imagine; "
            "choose flux-schnell, flux-dev, sdxl.",
        ),
    ],
)
def test_usage_errors(text, message):
    error = usage_error("imagine", text)
    assert error.message == message
    assert error.usage == IMAGINE_USAGE
    assert str(error) == f"{message}\nUsage: {IMAGINE_USAGE}"


def test_prompt_too_long_says_count_and_limit():
    error = usage_error("imagine", "x" * 2345 + " --n 2")
    assert error.message == "The prompt is 2,345 characters long; the limit is 2,000."


def test_prompt_at_the_limit_is_fine():
    assert len(imagine("é" * MAX_PROMPT_CHARS).prompt) == MAX_PROMPT_CHARS
    error = usage_error("imagine", "é" * (MAX_PROMPT_CHARS + 1))
    assert "2,001 characters" in error.message


def test_empty_url_prompt_names_its_label():
    error = usage_error("transcribe", "").message
    assert error.startswith("The audio URL is missing: give one, or an audio file (on Discord")


def test_ask_errors():
    error = usage_error("ask", "hi --max-tokens 5000")
    assert error.message == "Option --max-tokens must be between 1 and 4096, not 5000."
    assert error.usage == (
        "/ask <prompt> [--max-tokens 1-4096] [--model llama-3-8b|llama-3-70b|deepseek-r1]"
    )
    assert usage_error("ask", "hi --model sdxl").message == (
        "Model 'sdxl' is not available for /ask; choose llama-3-8b, llama-3-70b, deepseek-r1."
    )


def test_unknown_command():
    error = usage_error("/paint", "a fox")
    assert error.message == "Unknown command /paint. Try /imagine, /ask, /transcribe, /video."
    assert error.usage == ""
    assert str(error) == error.message


def test_usage_error_survives_pickling():
    error = usage_error("imagine", "a fox --n 9")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.usage, str(copy)) == (error.message, error.usage, str(error))


def test_long_bad_values_are_clipped_in_messages():
    error = usage_error("imagine", "a fox --seed " + "9x" * 100)
    assert len(error.message) < 100
    assert "…" in error.message


# --------------------------------------------------------------------------- configured commands


@pytest.fixture
def custom(tmp_path: Path) -> Catalog:
    path = tmp_path / "conjure.toml"
    path.write_text(
        """
        [models.one-shot]
        ref = "acme/one-shot"
        kind = "image"
        price_per_output = 0.01
        defaults = { steps = 20, style = "photo" }
        rename = { prompt = "text" }

        [commands.paint]
        model = "one-shot"
        models = ["one-shot", "flux-schnell"]
        [[commands.paint.options]]
        name = "n"
        type = "int"
        field = "@outputs"
        minimum = 1
        maximum = 4
        description = "How many"
        [[commands.paint.options]]
        name = "steps"
        type = "int"
        field = "steps"
        minimum = 1
        maximum = 50
        default = 10
        description = "Steps"
        [[commands.paint.options]]
        name = "guidance"
        aliases = ["g"]
        type = "float"
        field = "guidance"
        minimum = 0
        maximum = 10
        description = "Guidance"
        [[commands.paint.options]]
        name = "upscale"
        type = "bool"
        field = "upscale"
        description = "Upscale"
        [[commands.paint.options]]
        name = "negative"
        type = "str"
        field = "negative_prompt"
        description = "What to avoid"
        """,
        encoding="utf-8",
    )
    return load_catalog(path)


def paint(catalog: Catalog, text: str) -> Invocation:
    return parse_invocation(catalog, "paint", text)


def test_option_default_and_model_defaults_and_rename(custom):
    invocation = paint(custom, "a fox")
    assert invocation.input == {"text": "a fox", "steps": 10, "style": "photo"}
    assert invocation.outputs == 1
    assert invocation.options == {}


def test_given_option_beats_model_default(custom):
    assert paint(custom, "a fox --steps 3").input["steps"] == 3


def test_model_without_outputs_field_refuses_n_above_one(custom):
    error = usage_error("paint", "a fox --n 2", custom)
    assert error.message == "one-shot makes one image at a time; leave out --n."
    assert paint(custom, "a fox --n 1").input == {"text": "a fox", "steps": 10, "style": "photo"}
    switched = paint(custom, "a fox --n 2 --model flux-schnell")
    assert switched.input == {"prompt": "a fox", "steps": 10, "num_outputs": 2}
    assert switched.outputs == 2


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a fox --guidance 3.5", 3.5),
        ("a fox --g 7", 7.0),
        ("a fox --g=0", 0.0),
        ("a fox --g 1e1", 10.0),
    ],
)
def test_float_option(custom, text, value):
    assert paint(custom, text).input["guidance"] == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --g much", "Option --g needs a number, not 'much'."),
        ("a fox --g nan", "Option --g needs a number, not 'nan'."),
        ("a fox --g inf", "Option --g needs a number, not 'inf'."),
        ("a fox --guidance 10.5", "Option --guidance must be between 0 and 10, not 10.5."),
        ("a fox --upscale=maybe", "Option --upscale must be true or false, not 'maybe'."),
    ],
)
def test_custom_option_errors(custom, text, message):
    assert usage_error("paint", text, custom).message == message


@pytest.mark.parametrize(
    ("text", "prompt", "upscale"),
    [
        ("a fox --upscale", "a fox", True),
        ("--upscale a fox", "a fox", True),
        ("a fox --upscale yes", "a fox", True),
        ("a fox --upscale false", "a fox", False),
        ("a fox --upscale=off", "a fox", False),
        ("a fox --upscale 0", "a fox", False),
        ("a fox --upscale --n 1", "a fox", True),
    ],
)
def test_bool_option(custom, text, prompt, upscale):
    invocation = paint(custom, text)
    assert invocation.prompt == prompt
    assert invocation.input["upscale"] is upscale


def test_str_option_keeps_quoted_spaces(custom):
    invocation = paint(custom, 'a fox --negative "blurry, low quality" --steps 5')
    assert invocation.input["negative_prompt"] == "blurry, low quality"
    assert invocation.prompt == "a fox"


def test_parser_does_not_touch_the_catalog(custom):
    invocation = paint(custom, "a fox")
    invocation.input["steps"] = 99
    assert custom.models["one-shot"].input_defaults["steps"] == 20
    assert paint(custom, "a fox").input["steps"] == 10


# --------------------------------------------------------------------------- typed (Discord)


IMAGINE = CATALOG.commands["imagine"]


@pytest.mark.parametrize(
    ("prompt", "options", "fields"),
    [
        ("a fox", {}, {}),
        (
            "a fox",
            {"ar": "16:9", "seed": 5, "n": 2},
            {"aspect_ratio": "16:9", "seed": 5, "num_outputs": 2},
        ),
        ("a fox", {"seed": "5"}, {"seed": 5}),
        ("a fox", {"seed": 5.0}, {"seed": 5}),
        ("a fox", {"ar": None, "seed": None}, {}),
        ("a fox", {"aspect-ratio": "1:1"}, {"aspect_ratio": "1:1"}),
        ("a fox --ar 16:9", {"n": 2}, {"aspect_ratio": "16:9", "num_outputs": 2}),
        ("a fox --ar 16:9", {"model": "sdxl"}, {"width": 1344, "height": 768}),
        ("  “a fox --n 3”  ", {}, {}),
    ],
)
def test_parse_options(prompt, options, fields):
    invocation = parse_options(IMAGINE, CATALOG, prompt, options)
    expected_prompt = "a fox --n 3" if "“" in prompt else "a fox"
    assert invocation.prompt == expected_prompt
    assert invocation.input == {"prompt": expected_prompt, **fields}


@pytest.mark.parametrize(
    ("prompt", "options", "message"),
    [
        ("a fox", {"foo": 1}, "Unknown option --foo."),
        ("a fox", {"sed": 1}, "Unknown option --sed. Did you mean --seed?"),
        ("a fox", {"seed": True}, "Option --seed needs a whole number, not 'True'."),
        ("a fox", {"seed": 1.5}, "Option --seed needs a whole number, not '1.5'."),
        ("a fox", {"n": 9}, "Option --n must be between 1 and 4, not 9."),
        (
            "a fox",
            {"ar": "7:3"},
            "Option --ar must be one of 1:1, 16:9, 21:9, 3:2, 2:3, 4:5, 5:4, 3:4, 4:3, 9:16, 9:21; "
            "'7:3' is not.",
        ),
        (
            "a fox",
            {"model": "flx"},
            "Model 'flx' is not available for /imagine; choose flux-schnell, flux-dev, sdxl.",
        ),
        ("a fox --n 2", {"n": 2}, "Option --n is given more than once."),
        ("", {"n": 2}, "The prompt is missing."),
        ("x" * 2001, {}, "The prompt is 2,001 characters long; the limit is 2,000."),
    ],
)
def test_parse_options_errors(prompt, options, message):
    with pytest.raises(UsageError) as caught:
        parse_options(IMAGINE, CATALOG, prompt, options)
    assert caught.value.message == message
    assert caught.value.usage == IMAGINE_USAGE


def test_parse_options_bool(custom):
    command = custom.commands["paint"]
    assert parse_options(command, custom, "a fox", {"upscale": True}).input["upscale"] is True
    assert parse_options(command, custom, "a fox", {"upscale": False}).input["upscale"] is False
    assert parse_options(command, custom, "a fox", {"guidance": 2}).input["guidance"] == 2.0


# --------------------------------------------------------------------------- properties


OPTION_START = ("-", "—", "–", '"', "'", "“", "”", "„", "‘", "’", "‚")  # noqa: RUF001


def plain_prompt(text: str) -> bool:
    """No word that could be an option or open a quote, and something left after trimming."""
    words = text.split()
    return bool(words) and not any(word.startswith(OPTION_START) for word in words)


# A NUL is dropped from a prompt (PostgreSQL stores none): tests/test_ops_faults.py.
NO_NUL = st.characters(exclude_characters="\x00")


@given(st.text(NO_NUL, min_size=1, max_size=300).filter(plain_prompt))
def test_plain_prompts_round_trip(text):
    invocation = imagine(text)
    assert invocation.prompt == text.strip()
    assert invocation.input == {"prompt": text.strip()}


@given(
    st.text(NO_NUL, min_size=1, max_size=200).filter(plain_prompt),
    st.sampled_from(IMAGINE.option("ar").choices),  # type: ignore[union-attr]
    st.integers(min_value=0, max_value=2**31 - 1),
    st.integers(min_value=1, max_value=4),
)
def test_trailing_flags_round_trip(text, ratio, seed, n):
    invocation = imagine(f"{text} --ar {ratio} --seed={seed} --n {n}")
    assert invocation.prompt == text.strip()
    assert invocation.input == {
        "prompt": text.strip(),
        "aspect_ratio": ratio,
        "seed": seed,
        "num_outputs": n,
    }
    assert invocation.estimate_micros() == 3_000 * n


@given(st.text(alphabet=st.characters(exclude_characters='"“”„\x00'), min_size=1, max_size=200))
def test_anything_double_quoted_is_prompt_text(text):
    if not text.strip():
        return
    invocation = imagine(f'"{text}" --n 2')
    assert invocation.prompt == text.strip()
    assert invocation.outputs == 2


@given(st.text(max_size=300))
def test_parser_only_ever_raises_usage_errors(text):
    try:
        invocation = imagine(text)
    except UsageError as error:
        assert error.message and "\n" not in error.message
    else:
        assert invocation.prompt == invocation.prompt.strip()
        assert 0 < len(invocation.prompt) <= MAX_PROMPT_CHARS
