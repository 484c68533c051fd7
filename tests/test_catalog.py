"""The catalog: built-in commands and models, prices in micro-dollars, and conjure.toml loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bot.catalog import (
    OUTPUTS_FIELD,
    TRANSLATORS,
    Catalog,
    CatalogError,
    ModelSpec,
    Price,
    default_catalog,
    load_catalog,
)
from bot.catalog.builtin import BUILTIN
from bot.catalog.files import DEFAULT_ACCEPT, contents_not_taken
from bot.commands.parsing import parse_invocation

ROOT = Path(__file__).resolve().parent.parent
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
WHISPER_VERSION = "8099696689d249cf8b122d833c36ac3f75505c666a395ca40ef26f68e7d3d16e"
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


def load(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "conjure.toml"
    path.write_text(text, encoding="utf-8")
    return load_catalog(path)


# --------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize(
    ("key", "ref", "route", "kind", "owner_name", "version", "outputs_field"),
    [
        (
            "flux-schnell",
            "black-forest-labs/flux-schnell",
            "official",
            "image",
            "black-forest-labs/flux-schnell",
            None,
            "num_outputs",
        ),
        (
            "flux-dev",
            "black-forest-labs/flux-dev",
            "official",
            "image",
            "black-forest-labs/flux-dev",
            None,
            "num_outputs",
        ),
        (
            "sdxl",
            f"stability-ai/sdxl:{SDXL_VERSION}",
            "version",
            "image",
            "stability-ai/sdxl",
            SDXL_VERSION,
            "num_outputs",
        ),
        (
            "llama-3-8b",
            "meta/meta-llama-3-8b-instruct",
            "official",
            "text",
            "meta/meta-llama-3-8b-instruct",
            None,
            None,
        ),
        (
            "whisper",
            f"openai/whisper:{WHISPER_VERSION}",
            "version",
            "transcript",
            "openai/whisper",
            WHISPER_VERSION,
            None,
        ),
    ],
)
def test_builtin_models(key, ref, route, kind, owner_name, version, outputs_field):
    model = default_catalog().models[key]
    assert (model.key, model.ref, model.route, model.kind) == (key, ref, route, kind)
    assert (model.owner_name, model.version, model.outputs_field) == (
        owner_name,
        version,
        outputs_field,
    )
    assert model.description


TYPICAL_PROMPTS = {
    "imagine": "a red fox in the snow",
    "ask": "why is the sky blue?",
    "transcribe": "https://example.com/talk.mp3",
    "video": "a red fox running through the snow",
}


@pytest.mark.parametrize(
    ("command", "model"),
    [(c.name, m) for c in default_catalog().commands.values() for m in c.models],
)
def test_every_builtin_model_reserves_what_its_price_says(command, model):
    catalog = default_catalog()
    choose = f" --model {model}" if len(catalog.commands[command].models) > 1 else ""
    invocation = parse_invocation(catalog, command, TYPICAL_PROMPTS[command] + choose)
    assert invocation.model.key == model
    price, outputs = invocation.model.price, invocation.outputs
    tokens = invocation.model.token_budget(invocation.input)
    # Never free by accident, and the reservation is the catalog price of what was asked for.
    assert invocation.estimate_micros() == price.estimate_micros(outputs, tokens) > 0
    assert invocation.ceiling_micros() == price.ceiling_micros(outputs, tokens)
    if tokens is not None:
        # A typical answer (a token for four bytes of prompt) is billed what was estimated.
        assert (
            price.actual_micros(
                outputs,
                None,
                input_tokens=tokens.typical_input_tokens,
                output_tokens=price.expected_output_tokens,
            )
            == invocation.estimate_micros()
        )
        return
    # A run that takes the expected time is billed exactly what was reserved for it.
    typical_seconds = price.expected_seconds * outputs
    assert price.actual_micros(outputs, typical_seconds) == invocation.estimate_micros()


def test_per_second_builtin_models_say_how_long_they_take():
    # The 10 s fallback is a guess: a built-in's budget reservation must not rest on it.
    for key, raw in BUILTIN["models"].items():
        if "price_per_second" in raw:
            assert raw.get("expected_seconds", 0) > 0, key


@pytest.mark.parametrize("model", default_catalog().commands["imagine"].models)
def test_more_images_reserve_proportionally_more(model):
    one = parse_invocation(default_catalog(), "imagine", f"a fox --model {model} --n 1")
    four = parse_invocation(default_catalog(), "imagine", f"a fox --model {model} --n 4")
    assert four.outputs == 4
    assert four.estimate_micros() == 4 * one.estimate_micros() > 0


def test_builtin_commands():
    catalog = default_catalog()
    assert list(catalog.commands) == ["imagine", "ask", "transcribe", "video"]
    imagine = catalog.commands["imagine"]
    assert (imagine.model, imagine.prompt_field, imagine.prompt_label) == (
        "flux-schnell",
        "prompt",
        "prompt",
    )
    assert imagine.models == ("flux-schnell", "flux-dev", "sdxl")
    assert [o.name for o in imagine.options if not o.is_file] == ["ar", "seed", "n", "no", "model"]
    ar = imagine.option("ar")
    assert ar is not None
    assert (ar.aliases, ar.field, ar.type, ar.choices) == (
        ("aspect-ratio",),
        "aspect_ratio",
        "choice",
        ASPECT_RATIOS,
    )
    seed = imagine.option("seed")
    assert seed is not None
    assert (seed.type, seed.minimum, seed.maximum) == ("int", 0, 2**31 - 1)
    n = imagine.option("n")
    assert n is not None
    assert (n.field, n.minimum, n.maximum) == (OUTPUTS_FIELD, 1, 4)
    model = imagine.option("model")
    assert model is not None
    assert (model.type, model.choices) == ("model", imagine.models)

    ask = catalog.commands["ask"]
    assert (ask.model, ask.models) == ("llama-3-8b", ("llama-3-8b", "llama-3-70b", "deepseek-r1"))
    max_tokens = ask.option("max-tokens")
    assert max_tokens is not None
    assert (max_tokens.field, max_tokens.minimum, max_tokens.maximum) == ("max_tokens", 1, 4096)

    transcribe = catalog.commands["transcribe"]
    assert (transcribe.model, transcribe.prompt_field, transcribe.prompt_label) == (
        "whisper",
        "audio",
        "audio URL",
    )
    assert transcribe.prompt_type == "url"
    assert [(o.name, o.field, o.type) for o in transcribe.options] == [("file", "audio", "audio")]


def test_descriptions_fit_discord():
    catalog = default_catalog()
    for command in catalog.commands.values():
        assert 0 < len(command.description) <= 100
        for option in command.options:
            assert 0 < len(option.description) <= 100


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (
            "imagine",
            "/imagine <prompt> [--ar 1:1|16:9|...] [--seed N] [--n 1-4] [--no TEXT] "
            "[--model flux-schnell|flux-dev|sdxl]",
        ),
        ("ask", "/ask <prompt> [--max-tokens 1-4096] [--model llama-3-8b|llama-3-70b|deepseek-r1]"),
        ("transcribe", "/transcribe <audio URL>"),
    ],
)
def test_usage_lines(command, usage):
    spec = default_catalog().commands[command]
    assert spec.usage() == usage
    assert spec.usage_hint() == usage.split(" ", 1)[1]


def test_usage_hints_for_other_types(tmp_path):
    catalog = load(
        tmp_path,
        """
        [commands.imagine]
        [[commands.imagine.options]]
        name = "guidance"
        type = "float"
        field = "guidance"
        minimum = 0
        maximum = 10.5
        description = "Guidance"
        [[commands.imagine.options]]
        name = "strength"
        type = "float"
        field = "strength"
        description = "Strength"
        [[commands.imagine.options]]
        name = "upscale"
        type = "bool"
        field = "upscale"
        description = "Upscale"
        [[commands.imagine.options]]
        name = "negative"
        type = "str"
        field = "avoid"
        description = "What to avoid"
        [[commands.imagine.options]]
        name = "style"
        type = "choice"
        field = "style"
        choices = ["a", "b", "c", "d"]
        description = "Style"
        """,
    )
    usage = catalog.commands["imagine"].usage()
    assert usage.endswith(
        "[--guidance 0-10.5] [--strength X] [--upscale] [--negative TEXT] [--style a|b|c|d]"
    )


@pytest.mark.parametrize("name", ["ar", "aspect-ratio", "--ar", "--aspect-ratio", "AR"])
def test_option_lookup_by_name_or_alias(name):
    option = default_catalog().commands["imagine"].option(name)
    assert option is not None
    assert option.name == "ar"


def test_option_lookup_unknown():
    assert default_catalog().commands["imagine"].option("foo") is None


@pytest.mark.parametrize("name", ["imagine", "/imagine", " /imagine ", "IMAGINE"])
def test_catalog_command_lookup(name):
    command = default_catalog().command(name)
    assert command is not None
    assert command.name == "imagine"


def test_catalog_command_unknown():
    assert default_catalog().command("/nope") is None
    assert default_catalog().model("nope") is None
    assert default_catalog().model("sdxl") is default_catalog().models["sdxl"]


def test_default_catalog_is_shared_and_immutable():
    catalog = default_catalog()
    assert load_catalog(None) is catalog
    with pytest.raises(TypeError):
        catalog.commands["x"] = catalog.commands["imagine"]  # type: ignore[index]
    with pytest.raises(TypeError):
        catalog.models["sdxl"].translate["x"] = "drop"  # type: ignore[index]


# --------------------------------------------------------------------------- prices


@pytest.mark.parametrize(
    ("price", "outputs", "micros"),
    [
        (Price(per_output_usd=0.003), 1, 3_000),
        (Price(per_output_usd=0.003), 4, 12_000),
        (Price(per_output_usd=0.025), 3, 75_000),
        (Price(per_output_usd=0.003), 0, 0),
        # per second: expected seconds per output x rate
        (Price(per_second_usd=0.0023, expected_seconds=8), 1, 18_400),
        (Price(per_second_usd=0.0023, expected_seconds=8), 4, 73_600),
        (Price(per_second_usd=0.0023, expected_seconds=3), 1, 6_900),
        (Price(per_second_usd=0.0012, expected_seconds=20), 1, 24_000),
        (Price(per_second_usd=0.0023), 1, 23_000),  # expected_seconds defaults to 10
        # both: added together
        (Price(per_output_usd=0.01, per_second_usd=0.001, expected_seconds=5), 2, 30_000),
        # fractions of a micro-dollar round up: a reservation never falls short
        (Price(per_output_usd=0.0000001), 1, 1),
        (Price(per_output_usd=0.0), 4, 0),
    ],
)
def test_estimate_micros(price, outputs, micros):
    assert price.estimate_micros(outputs) == micros


@pytest.mark.parametrize(
    ("price", "outputs", "predict_time", "micros"),
    [
        (Price(per_output_usd=0.003), 4, 12.5, 12_000),  # per output ignores time
        (Price(per_output_usd=0.003), 2, None, 6_000),
        (Price(per_second_usd=0.0023, expected_seconds=8), 4, 2.5, 5_750),
        (Price(per_second_usd=0.0023, expected_seconds=8), 4, None, 0),
        (Price(per_second_usd=0.0012), 1, 1.234567, 1_482),  # 1481.4804 rounds up
        (Price(per_second_usd=0.0012), 1, -3.0, 0),
        (Price(per_second_usd=0.0012), 1, math.nan, 0),
        (Price(per_output_usd=0.01, per_second_usd=0.001), 2, 5.0, 25_000),
    ],
)
def test_actual_micros(price, outputs, predict_time, micros):
    assert price.actual_micros(outputs, predict_time) == micros


def test_estimates_are_exact_integers_without_float_drift():
    # 0.1 + 0.2 style drift must not add a micro-dollar: 0.003 x 3 is exactly 9000.
    assert Price(per_output_usd=0.003).estimate_micros(3) == 9_000
    assert Price(per_second_usd=0.0023, expected_seconds=0.1).estimate_micros(3) == 690
    assert isinstance(Price(per_output_usd=0.003).estimate_micros(1), int)


# --------------------------------------------------------------------------- cost ceilings


@pytest.mark.parametrize(
    ("price", "outputs", "ceiling", "deadline"),
    [
        # per output: n x price, whatever the run time; no deadline is needed for that
        (Price(per_output_usd=0.003), 4, 12_000, None),
        (Price(per_output_usd=0.003, expected_seconds=2, max_seconds=5), 1, 3_000, None),
        # per second: max_seconds x rate, by default 3 x expected_seconds, per output
        (Price(per_second_usd=0.0012, expected_seconds=20), 1, 72_000, 60.0),
        (Price(per_second_usd=0.0023, expected_seconds=8), 4, 220_800, 96.0),
        (Price(per_second_usd=0.0012, expected_seconds=20, max_seconds=45), 1, 54_000, 45.0),
        (Price(per_second_usd=0.0023, expected_seconds=0.1), 3, 2_070, 0.9),
        # both: added together, the deadline bounds the per-second part
        (Price(per_output_usd=0.01, per_second_usd=0.001, expected_seconds=5), 2, 50_000, 30.0),
    ],
)
def test_ceiling_and_deadline(price, outputs, ceiling, deadline):
    assert price.ceiling_micros(outputs) == ceiling >= price.estimate_micros(outputs)
    assert price.deadline_seconds(outputs) == (deadline and pytest.approx(deadline))
    # Stopped at its deadline, a run is billed no more than its ceiling.
    assert price.actual_micros(outputs, deadline) <= ceiling


@pytest.mark.parametrize(
    ("command", "model"),
    [(c.name, m) for c in default_catalog().commands.values() for m in c.models],
)
def test_every_builtin_model_has_a_ceiling(command, model):
    catalog = default_catalog()
    choose = f" --model {model}" if len(catalog.commands[command].models) > 1 else ""
    invocation = parse_invocation(catalog, command, TYPICAL_PROMPTS[command] + choose)
    price = invocation.model.price
    tokens = invocation.model.token_budget(invocation.input)
    if tokens is not None:
        # Stopped at max_tokens (always sent), with every byte of the input read as a token.
        assert invocation.input["max_tokens"] == tokens.max_output_tokens
        assert invocation.deadline_seconds() is None
        most = price.actual_micros(
            invocation.outputs,
            None,
            input_tokens=tokens.max_input_tokens,
            output_tokens=tokens.max_output_tokens,
        )
        assert invocation.ceiling_micros() == most > invocation.estimate_micros()
    elif price.per_second_usd is None:
        assert invocation.ceiling_micros() == invocation.estimate_micros()
        assert invocation.deadline_seconds() is None
    else:
        deadline = invocation.deadline_seconds()
        assert deadline is not None and 0 < deadline < math.inf
        assert invocation.ceiling_micros() == price.actual_micros(invocation.outputs, deadline)
        assert invocation.ceiling_micros() > invocation.estimate_micros()


def test_max_seconds_from_conjure_toml(tmp_path):
    catalog = load(tmp_path, "[models.whisper]\nexpected_seconds = 30\nmax_seconds = 120\n")
    price = catalog.models["whisper"].price
    assert price == Price(per_second_usd=0.0012, expected_seconds=30, max_seconds=120)
    assert price.deadline_seconds(1) == 120 and price.ceiling_micros(1) == 144_000
    # Left out, it follows expected_seconds.
    longer = load(tmp_path, "[models.whisper]\nexpected_seconds = 30\n").models["whisper"]
    assert longer.price.deadline_seconds(1) == 90


# --------------------------------------------------------------------------- field translation


def model(**kwargs) -> ModelSpec:
    fields = {
        "key": "m",
        "ref": "o/m",
        "route": "official",
        "kind": "image",
        "price": Price(per_output_usd=0.01),
        "description": "m",
    }
    return ModelSpec(**{**fields, **kwargs})


def test_build_input_defaults_rename_translate_and_outputs():
    spec = model(
        outputs_field="batch",
        input_defaults={"steps": 20, "format": "png"},
        rename={"prompt": "text"},
        translate={"aspect_ratio": "megapixel_size", "style": "drop"},
    )
    built = spec.build_input(
        {"prompt": "a fox", "aspect_ratio": "1:1", "style": "x", OUTPUTS_FIELD: 2, "steps": 5}
    )
    assert built == {
        "text": "a fox",
        "width": 1024,
        "height": 1024,
        "batch": 2,
        "steps": 5,
        "format": "png",
    }
    assert spec.input_defaults == {"steps": 20, "format": "png"}  # untouched


def test_build_input_outputs_without_outputs_field_is_dropped():
    assert model().build_input({"prompt": "x", OUTPUTS_FIELD: 1}) == {"prompt": "x"}


def test_model_spec_mappings_are_read_only():
    defaults = {"steps": 20}
    spec = model(input_defaults=defaults)
    defaults["steps"] = 99  # the caller's dict no longer matters
    assert spec.input_defaults["steps"] == 20
    with pytest.raises(TypeError):
        spec.input_defaults["steps"] = 1  # type: ignore[index]


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_megapixel_size(ratio):
    size = TRANSLATORS["megapixel_size"](ratio)
    width, height = size["width"], size["height"]
    assert set(size) == {"width", "height"}
    assert width % 64 == 0 and height % 64 == 0
    assert 0.85 <= width * height / (1024 * 1024) <= 1.15
    w, h = (int(part) for part in ratio.split(":"))
    assert abs(width / height - w / h) / (w / h) < 0.04


def test_megapixel_sizes_are_distinct_and_mirror():
    sizes = {r: TRANSLATORS["megapixel_size"](r) for r in ASPECT_RATIOS}
    assert sizes["1:1"] == {"width": 1024, "height": 1024}
    assert sizes["16:9"] == {"width": 1344, "height": 768}
    assert len({(s["width"], s["height"]) for s in sizes.values()}) == len(ASPECT_RATIOS)
    assert sizes["9:16"] == {"width": 768, "height": 1344}


@pytest.mark.parametrize("bad", ["wide", "0:1", "16:0", "", "16:9:1"])
def test_megapixel_size_rejects_non_ratios(bad):
    with pytest.raises(ValueError, match="aspect ratio"):
        TRANSLATORS["megapixel_size"](bad)


# --------------------------------------------------------------------------- conjure.toml


def test_example_file_loads():
    catalog = load_catalog(ROOT / "conjure.example.toml")
    assert "transcribe" not in catalog.commands
    assert "whisper" not in catalog.models
    assert catalog.commands["imagine"].model == "flux-dev"
    assert catalog.commands["video"].model == "studio-video"
    assert catalog.models["studio-video"].route == "deployment"
    assert catalog.models["studio-video"].price.deadline_seconds(1) == 180
    assert catalog.commands["ask"].models == ("llama-3-8b", "mistral-7b")


def test_load_accepts_str_path(tmp_path):
    (tmp_path / "c.toml").write_text("", encoding="utf-8")
    catalog = load_catalog(str(tmp_path / "c.toml"))
    assert catalog.commands.keys() == default_catalog().commands.keys()


def test_empty_file_is_the_builtin_catalog(tmp_path):
    assert load(tmp_path, "") == default_catalog()


def test_the_quotas_table_is_left_to_its_reader(tmp_path):
    catalog = load(
        tmp_path,
        """
        [quotas]
        user_jobs_per_day = 10
        [quotas.users.U123]
        usd_per_month = 5
        """,
    )
    assert catalog == default_catalog()


def test_override_model_price_keeps_the_rest(tmp_path):
    catalog = load(tmp_path, "[models.flux-schnell]\nprice_per_output = 0.004\n")
    spec = catalog.models["flux-schnell"]
    assert spec.price == Price(per_output_usd=0.004)
    assert spec.ref == "black-forest-labs/flux-schnell"
    assert spec.outputs_field == "num_outputs"


def test_a_new_price_kind_replaces_the_old_one(tmp_path):
    catalog = load(
        tmp_path, "[models.flux-dev]\nprice_per_second = 0.0023\nexpected_seconds = 12\n"
    )
    assert catalog.models["flux-dev"].price == Price(per_second_usd=0.0023, expected_seconds=12)


def test_override_defaults_merge_with_builtin_tables(tmp_path):
    catalog = load(
        tmp_path,
        """
        [models.sdxl]
        defaults = { num_inference_steps = 25 }
        translate = { style = "drop" }
        """,
    )
    spec = catalog.models["sdxl"]
    assert spec.input_defaults == {"num_inference_steps": 25}
    assert spec.translate == {"aspect_ratio": "megapixel_size", "style": "drop"}


def test_changing_ref_infers_the_route_again(tmp_path):
    catalog = load(tmp_path, '[models.sdxl]\nref = "stability-ai/sdxl-lightning"\n')
    assert catalog.models["sdxl"].route == "official"
    assert catalog.models["sdxl"].version is None


def test_outputs_field_can_be_cleared(tmp_path):
    catalog = load(tmp_path, '[models.flux-dev]\noutputs_field = ""\n')
    assert catalog.models["flux-dev"].outputs_field is None


def test_add_model_and_command(tmp_path):
    catalog = load(
        tmp_path,
        """
        [models.musicgen]
        ref = "meta/musicgen:671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb"
        kind = "audio"
        price_per_second = 0.0023
        expected_seconds = 30
        defaults = { output_format = "mp3", duration = 8 }

        [commands.music]
        model = "musicgen"
        [[commands.music.options]]
        name = "duration"
        aliases = ["seconds", "len"]
        type = "int"
        field = "duration"
        minimum = 1
        maximum = 30
        default = 8
        description = "Length in seconds"
        """,
    )
    spec = catalog.models["musicgen"]
    assert (spec.route, spec.kind, spec.owner_name) == ("version", "audio", "meta/musicgen")
    assert spec.description == spec.ref  # defaults to the ref
    music = catalog.commands["music"]
    assert (music.model, music.models, music.prompt_field) == ("musicgen", ("musicgen",), "prompt")
    assert music.description == spec.description
    duration = music.option("len")
    assert duration is not None
    assert duration.default == 8
    assert list(catalog.commands) == ["imagine", "ask", "transcribe", "video", "music"]


def test_deployment_model(tmp_path):
    catalog = load(
        tmp_path,
        """
        [models.ours]
        ref = "acme/our-flux"
        route = "deployment"
        kind = "image"
        price_per_second = 0.0115
        """,
    )
    spec = catalog.models["ours"]
    assert (spec.route, spec.owner_name, spec.version) == ("deployment", "acme/our-flux", None)


def test_command_with_several_models_gets_a_model_option(tmp_path):
    catalog = load(tmp_path, '[commands.ask]\nmodels = ["llama-3-8b", "flux-dev"]\n')
    ask = catalog.commands["ask"]
    model_option = ask.option("model")
    assert model_option is not None
    assert model_option.choices == ("llama-3-8b", "flux-dev")


def test_default_model_is_always_allowed(tmp_path):
    catalog = load(tmp_path, '[commands.imagine]\nmodel = "flux-dev"\nmodels = ["sdxl"]\n')
    assert catalog.commands["imagine"].models == ("flux-dev", "sdxl")
    catalog = load(tmp_path, '[commands.imagine]\nmodel = "llama-3-8b"\n')
    assert catalog.commands["imagine"].models[0] == "llama-3-8b"


def test_disable_command_and_model(tmp_path):
    catalog = load(
        tmp_path,
        """
        [commands.transcribe]
        enabled = false
        [models.whisper]
        enabled = false
        [models.sdxl]
        enabled = false
        """,
    )
    assert list(catalog.commands) == ["imagine", "ask", "video"]
    assert "whisper" not in catalog.models
    imagine = catalog.commands["imagine"]
    assert imagine.models == ("flux-schnell", "flux-dev")  # the built-in list lost sdxl
    model_option = imagine.option("model")
    assert model_option is not None
    assert model_option.choices == ("flux-schnell", "flux-dev")


def test_disabled_model_may_stay_incomplete(tmp_path):
    catalog = load(tmp_path, "[models.draft]\nenabled = false\n")
    assert "draft" not in catalog.models


def test_options_merge_by_name(tmp_path):
    catalog = load(
        tmp_path,
        """
        [[commands.imagine.options]]
        name = "n"
        maximum = 2
        [[commands.imagine.options]]
        name = "seed"
        enabled = false
        [[commands.imagine.options]]
        name = "ar"
        type = "choice"
        field = "aspect_ratio"
        choices = ["1:1", "16:9"]
        description = "Shape"
        [[commands.imagine.options]]
        name = "steps"
        type = "int"
        field = "num_inference_steps"
        description = "Steps"
        """,
    )
    imagine = catalog.commands["imagine"]
    assert [o.name for o in imagine.options if not o.is_file] == ["ar", "n", "no", "model", "steps"]
    n = imagine.option("n")
    assert n is not None
    assert (n.minimum, n.maximum, n.field) == (1, 2, OUTPUTS_FIELD)
    ar = imagine.option("ar")
    assert ar is not None
    assert (ar.choices, ar.aliases, ar.description) == (("1:1", "16:9"), (), "Shape")


def test_command_name_length_limit(tmp_path):
    name = "a" * 31
    catalog = load(tmp_path, f'[commands.{name}]\nmodel = "flux-dev"\n')
    assert name in catalog.commands


def test_missing_file(tmp_path):
    with pytest.raises(CatalogError, match=r"nope\.toml: cannot read"):
        load_catalog(tmp_path / "nope.toml")


def test_invalid_toml(tmp_path):
    with pytest.raises(CatalogError, match=r"conjure\.toml: not valid TOML"):
        load(tmp_path, "[models\n")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        # top level and tables
        ("models = 3", "models", "must be a table"),
        ("[commands]\nimagine = 1", "commands.imagine", "must be a table"),
        # models
        (
            '[models.flux-dev]\nrefs = "x"',
            "models.flux-dev.refs",
            "unknown key (did you mean 'ref'?)",
        ),
        ('[models."Bad Key"]\nref = "o/m"', "models.Bad Key", "not a valid model key"),
        ('[models.m]\nkind = "image"\nprice_per_output = 1', "models.m.ref", "missing"),
        ('[models.m]\nref = ""\nkind = "image"', "models.m.ref", "non-empty string"),
        ('[models.m]\nref = "just-a-name"\nkind = "image"', "models.m.ref", "not owner/name"),
        ('[models.flux-dev]\nroute = "fast"', "models.flux-dev.route", "unknown route 'fast'"),
        ('[models.flux-dev]\nroute = "version"', "models.flux-dev.ref", "64-hex version"),
        ('[models.m]\nref = "o/m:abc"\nkind = "image"', "models.m.ref", "64-hex version"),
        (
            f'[models.sdxl]\nroute = "deployment"\nref = "o/m:{SDXL_VERSION}"',
            "models.sdxl.ref",
            "without a version",
        ),
        ('[models.m]\nref = "o/m"\nprice_per_output = 1', "models.m.kind", "missing"),
        ('[models.flux-dev]\nkind = "picture"', "models.flux-dev.kind", "unknown kind 'picture'"),
        ('[models.m]\nref = "o/m"\nkind = "image"', "models.m.price_per_output", "never free"),
        (
            "[models.flux-dev]\nprice_per_output = -0.01",
            "models.flux-dev.price_per_output",
            "at least 0",
        ),
        ('[models.flux-dev]\nprice_per_output = "1"', "models.flux-dev.price_per_output", "number"),
        (
            "[models.flux-dev]\nprice_per_output = true",
            "models.flux-dev.price_per_output",
            "number",
        ),
        ("[models.flux-dev]\nprice_per_output = nan", "models.flux-dev.price_per_output", "number"),
        ("[models.sdxl]\nprice_per_second = -1", "models.sdxl.price_per_second", "at least 0"),
        ("[models.sdxl]\nexpected_seconds = 0", "models.sdxl.expected_seconds", "above 0"),
        ("[models.sdxl]\nmax_seconds = 0", "models.sdxl.max_seconds", "above 0"),
        ("[models.sdxl]\nmax_seconds = nan", "models.sdxl.max_seconds", "number"),
        ('[models.sdxl]\nmax_seconds = "1m"', "models.sdxl.max_seconds", "number"),
        (
            "[models.sdxl]\nmax_seconds = 5",
            "models.sdxl.max_seconds",
            "must be at least expected_seconds (8): a run is stopped there",
        ),
        ("[models.sdxl]\noutputs_field = 3", "models.sdxl.outputs_field", "non-empty string"),
        ('[models.sdxl]\noutputs_field = "num outputs"', "models.sdxl.outputs_field", "field name"),
        ("[models.sdxl]\ndefaults = 3", "models.sdxl.defaults", "must be a table"),
        ("[models.sdxl.defaults]\nwhen = 2024-01-01", "models.sdxl.defaults.when", "dates"),
        ("[models.sdxl]\nrename = { prompt = 3 }", "models.sdxl.rename.prompt", "must be a string"),
        ('[models.sdxl]\nrename = { prompt = "a b" }', "models.sdxl.rename.prompt", "field name"),
        (
            '[models.sdxl]\ntranslate = { x = "zoom" }',
            "models.sdxl.translate.x",
            "unknown translator",
        ),
        ('[models.sdxl]\ndescription = ""', "models.sdxl.description", "non-empty"),
        (f'[models.sdxl]\ndescription = "{"x" * 101}"', "models.sdxl.description", "at most 100"),
        ('[models.sdxl]\nenabled = "no"', "models.sdxl.enabled", "true or false"),
        # commands
        ('[commands.imagine]\nmodel = "flx"', "commands.imagine.model", "unknown model 'flx'"),
        (
            '[commands.imagine]\nmodel = "flux-devv"',
            "commands.imagine.model",
            "unknown model 'flux-devv' (did you mean 'flux-dev'?)",
        ),
        (
            '[commands.imagine]\nmodels = ["sdxl", "nope"]',
            "commands.imagine.models[1]",
            "unknown model 'nope'",
        ),
        ('[commands.imagine]\nmodels = "sdxl"', "commands.imagine.models", "array"),
        ('[commands.imagine]\nmodels = ["sdxl", "sdxl"]', "commands.imagine.models", "duplicates"),
        (
            '[models.sdxl]\nenabled = false\n[commands.imagine]\nmodels = ["sdxl"]',
            "commands.imagine.models[0]",
            "disabled",
        ),
        ("[models.flux-schnell]\nenabled = false", "commands.imagine.model", "disabled"),
        ('[commands.new]\ndescription = "x"', "commands.new.model", "missing"),
        ('[commands.Imagine]\nmodel = "sdxl"', "commands.Imagine", "not a valid command name"),
        ('[commands."im agine"]\nmodel = "sdxl"', "commands.im agine", "not a valid command name"),
        (f'[commands.{"a" * 32}]\nmodel = "sdxl"', f"commands.{'a' * 32}", "31 max"),
        ('[commands.conjure]\nmodel = "sdxl"', "commands.conjure", "admin command"),
        ('[commands.imagine]\nmodle = "sdxl"', "commands.imagine.modle", "did you mean 'model'?"),
        (
            '[commands.imagine]\nprompt_field = "the prompt"',
            "commands.imagine.prompt_field",
            "field name",
        ),
        (
            '[commands.imagine]\nprompt_type = "file"',
            "commands.imagine.prompt_type",
            "unknown prompt type",
        ),
        ('[commands.imagine]\nprompt_label = ""', "commands.imagine.prompt_label", "non-empty"),
        (
            f'[commands.imagine]\ndescription = "{"x" * 101}"',
            "commands.imagine.description",
            "at most 100",
        ),
        ("[commands.imagine]\noptions = 3", "commands.imagine.options", "array of tables"),
        ("[commands.imagine]\nenabled = 1", "commands.imagine.enabled", "true or false"),
    ],
)
def test_catalog_errors(tmp_path, text, key, message):
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, text)
    text_of_error = str(caught.value)
    assert text_of_error.startswith(f"{tmp_path / 'conjure.toml'}: {key}: "), text_of_error
    assert message in text_of_error


NEW_MODEL_AND_COMMAND = (
    '[models.m]\nref = "o/m"\nkind = "image"\nprice_per_output = 0.01\n[commands.c]\nmodel = "m"\n'
)


def toml_option(command: str = "c", **fields: object) -> str:
    """One [[commands.<command>.options]] table; a field given as None is left out."""
    base: dict[str, object] = {"name": "x", "type": "int", "field": "x", "description": "d"}
    lines = [
        f"{key} = {json.dumps(value)}"
        for key, value in {**base, **fields}.items()
        if value is not None
    ]
    header = f"[[commands.{command}.options]]"
    if command == "c":
        header = NEW_MODEL_AND_COMMAND + header
    return "\n".join([header, *lines])


@pytest.mark.parametrize(
    ("fields", "key", "message"),
    [
        ({"name": "Seed"}, "Seed.name", "not a valid option name"),
        ({"name": "a" * 33}, f"{'a' * 33}.name", "32 max"),
        ({"name": "prompt"}, "prompt.name", "reserved"),
        ({"min": 1}, "x.min", "unknown key (did you mean 'minimum'?)"),
        ({"type": "integer"}, "x.type", "unknown type 'integer'"),
        ({"type": None}, "x.type", "unknown type 'None'"),
        ({"description": None}, "x.description", "non-empty"),
        ({"description": "d" * 101}, "x.description", "at most 100"),
        ({"field": None}, "x.field", "missing"),
        ({"field": "x y"}, "x.field", "field name"),
        ({"type": "str", "field": "@outputs"}, "x.type", "must be an int"),
        ({"field": "prompt"}, "x.field", "'prompt' is the prompt field"),
        ({"type": "choice"}, "x.choices", "missing"),
        ({"type": "choice", "choices": []}, "x.choices", "1 to 25"),
        ({"type": "choice", "choices": [str(i) for i in range(26)]}, "x.choices", "1 to 25"),
        ({"type": "choice", "choices": ["a", "a"]}, "x.choices", "duplicates"),
        ({"choices": ["a"]}, "x.choices", "only a 'choice'"),
        ({"type": "str", "minimum": 1}, "x.minimum", "only int and float"),
        ({"maximum": "9"}, "x.maximum", "must be a number"),
        ({"maximum": 1.5}, "x.maximum", "whole number"),
        ({"minimum": 5, "maximum": 1}, "x", "minimum 5 is above maximum 1"),
        ({"default": "1"}, "x.default", "must be a value of type 'int'"),
        ({"default": True}, "x.default", "must be a value of type 'int'"),
        ({"type": "float", "default": "1"}, "x.default", "must be a value of type 'float'"),
        ({"type": "bool", "default": 1}, "x.default", "must be a value of type 'bool'"),
        ({"maximum": 3, "default": 4}, "x.default", "4 is above the maximum 3"),
        ({"minimum": 3, "default": 2}, "x.default", "2 is below the minimum 3"),
        (
            {"type": "choice", "choices": ["a"], "default": "b"},
            "x.default",
            "not one of the choices",
        ),
        ({"type": "model", "field": "x"}, "x.field", "not used by a model option"),
        ({"aliases": ["X"]}, "x.aliases", "not a valid option name"),
        ({"aliases": "y"}, "x.aliases", "array"),
        ({"enabled": "yes"}, "x.enabled", "true or false"),
    ],
)
def test_option_errors(tmp_path, fields, key, message):
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, toml_option(**fields))
    path = "commands.c.options[0].enabled" if key == "x.enabled" else f"commands.c.options.{key}"
    assert str(caught.value).startswith(f"{tmp_path / 'conjure.toml'}: {path}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('[[commands.imagine.options]]\ntype = "int"', "options[0].name", "missing"),
        ("[commands.imagine]\noptions = [3]", "options[0]", "must be a table"),
        (
            toml_option("imagine", name="size", type="str", field="size", aliases=["ar"]),
            "options.size",
            "--ar is already used by --ar",
        ),
        (
            toml_option("imagine", name="ratio", type="str", field="aspect_ratio"),
            "options.ratio.field",
            "'aspect_ratio' is already set by --ar",
        ),
        (
            toml_option("imagine", name="pick", type="model", field=None),
            "options",
            "only one option may choose the model",
        ),
    ],
)
def test_option_clashes_on_builtin_commands(tmp_path, text, key, message):
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'conjure.toml'}: commands.imagine.{key}: ")
    assert message in str(caught.value)


def test_error_message_shape(tmp_path):
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, '[commands.imagine]\nmodel = "flx"\n')
    assert (
        str(caught.value)
        == f"{tmp_path / 'conjure.toml'}: commands.imagine.model: unknown model 'flx'"
    )


def test_too_many_options(tmp_path):
    body = "".join(
        f'[[commands.imagine.options]]\nname = "o{i}"\ntype = "str"\nfield = "f{i}"\n'
        'description = "d"\n'
        for i in range(21)
    )
    with pytest.raises(CatalogError, match=r"commands\.imagine\.options: at most 24 options"):
        load(tmp_path, body)


MANY_MODELS = "".join(
    f'[models.m{i}]\nref = "o/m{i}"\nkind = "image"\nprice_per_output = 0.01\n' for i in range(26)
)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        # an unknown key is named before what it leaves missing: it is the likely cause
        (
            '[models.m]\nrefs = "o/m"\nkind = "image"\nprice_per_output = 1',
            "models.m.refs",
            "unknown key (did you mean 'ref'?)",
        ),
        ("[models.sdxl]\nexpected_seconds = inf", "models.sdxl.expected_seconds", "number"),
        ('[commands.imagine]\nmodel = ""', "commands.imagine.model", "non-empty string"),
        (
            '[commands.imagine]\nmodels = ["sdxl", ""]',
            "commands.imagine.models",
            "must be an array of non-empty strings",
        ),
        ("[models.sdxl]\noutputs_field = 0", "models.sdxl.outputs_field", "non-empty string"),
        ("[models.sdxl]\nrename = 3", "models.sdxl.rename", "must be a table"),
        ('[models.sdxl]\nrename = { "a b" = "x" }', "models.sdxl.rename.a b", "field name"),
        ('[models.sdxl]\nrename = { prompt = "" }', "models.sdxl.rename.prompt", "non-empty"),
        ("[models.sdxl]\ntranslate = { x = 3 }", "models.sdxl.translate.x", "must be a string"),
        (
            "[models.sdxl]\ndefaults = { a = [1, { b = 12:00:00 }] }",
            "models.sdxl.defaults.a[1].b",
            "dates and times",
        ),
        (
            MANY_MODELS + f'[commands.c]\nmodel = "m0"\nmodels = {[f"m{i}" for i in range(26)]}',
            "commands.c.models",
            "at most 25 models",
        ),
        (
            '[commands.c]\nmodel = "sdxl"\noptions = [{ type = "int" }]',
            "commands.c.options[0].name",
            "missing",
        ),
        # `enabled` is checked where the file says it, before options are merged by name
        (
            '[[commands.imagine.options]]\nname = "n"\nenabled = "no"',
            "commands.imagine.options[0].enabled",
            "true or false",
        ),
        (
            toml_option(name="g", type="float", field="g") + "\nminimum = nan",
            "commands.c.options.g.minimum",
            "number",
        ),
        (toml_option(aliases=["y", "y"]), "commands.c.options.x.aliases", "duplicates"),
        (
            toml_option() + '\n[[commands.c.options]]\nname = "x"\ntype = "str"\nfield = "y"\n'
            'description = "d"',
            "commands.c.options.x",
            "--x is already used by --x",
        ),
        (
            toml_option("imagine", name="model", choices=["sdxl"], type=None, field=None),
            "commands.imagine.options.model.choices",
            "not used by a model option",
        ),
        (
            toml_option("imagine", name="model", minimum=1, type=None, field=None),
            "commands.imagine.options.model.minimum",
            "not used by a model option",
        ),
        (
            toml_option("imagine", name="model", default="sdxl", type=None, field=None),
            "commands.imagine.options.model.default",
            "not used by a model option",
        ),
        (
            '[commands.transcribe]\nmodels = ["whisper", "llama-3-8b"]\n'
            + toml_option("transcribe", name="m", type="str", field="m", aliases=["model"]),
            "commands.transcribe.options.model",
            "--model is already used by --m",
        ),
        (
            toml_option(name="y", type="int", field="@outputs", minimum=1)
            + '\n[[commands.c.options]]\nname = "z"\ntype = "int"\nfield = "@outputs"\n'
            'description = "d"',
            "commands.c.options.z.field",
            "'@outputs' is already set by --y",
        ),
    ],
)
def test_more_catalog_errors(tmp_path, text, key, message):
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'conjure.toml'}: {key}: "), caught.value
    assert message in str(caught.value)


def test_disabled_tables_are_not_checked_further(tmp_path):
    catalog = load(
        tmp_path,
        """
        [commands.c]
        enabled = false
        bogus = 1
        [models."Not A Key"]
        enabled = false
        price_per_output = "free"
        [[commands.imagine.options]]
        name = "x"
        enabled = false
        type = "bogus"
        """,
    )
    assert "c" not in catalog.commands
    assert "Not A Key" not in catalog.models
    names = [o.name for o in catalog.commands["imagine"].options if not o.is_file]
    assert names == ["ar", "seed", "n", "no", "model"]


def test_repeated_and_disabled_option_names(tmp_path):
    catalog = load(
        tmp_path,
        """
        [[commands.imagine.options]]
        name = "n"
        maximum = 3
        [[commands.imagine.options]]
        name = "n"
        maximum = 2
        """,
    )
    n = catalog.commands["imagine"].option("n")
    assert n is not None and n.maximum == 2  # on a built-in command, the later one updates
    option = '[[commands.c.options]]\nname = "x"\ntype = "int"\ndescription = "d"\n'
    text = f'{NEW_MODEL_AND_COMMAND}{option}field = "a"\nenabled = false\n{option}field = "b"\n'
    x = load(tmp_path, text).commands["c"].option("x")
    assert x is not None and x.field == "b"  # a disabled option does not clash


def test_text_is_trimmed_and_int_bounds_stay_ints(tmp_path):
    catalog = load(
        tmp_path,
        NEW_MODEL_AND_COMMAND
        + """
        description = "  Make things  "
        prompt_label = " idea "
        [[commands.c.options]]
        name = "k"
        type = "int"
        field = "k"
        description = " K "
        minimum = 1
        maximum = 9
        [[commands.c.options]]
        name = "g"
        type = "float"
        field = "g"
        description = "G"
        minimum = 0
        maximum = 1.5
        """,
    )
    command = catalog.commands["c"]
    assert (command.description, command.prompt_label) == ("Make things", "idea")
    k, g = command.option("k"), command.option("g")
    assert k is not None and g is not None
    assert k.description == "K"
    assert (type(k.minimum), type(k.maximum)) == (int, int)  # Discord wants whole bounds
    assert (g.minimum, g.maximum) == (0, 1.5)
    assert command.usage() == "/c <idea> [--k 1-9] [--g 0-1.5]"


WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24)
M4A_IN_MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41" + bytes(16)
WEBM = bytes.fromhex("1a45dfa3") + b"\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(16)
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(24)


@pytest.mark.parametrize(
    ("content", "accept", "refused"),
    [
        (PNG_BYTES, DEFAULT_ACCEPT["image"], None),
        (PNG_BYTES, ("image/x-png",), None),  # an alias of the format the bytes show
        (WAV, ("audio/wav",), None),  # the bytes say audio/x-wav
        (M4A_IN_MP4, ("audio/x-m4a",), None),  # an m4a in a container the bytes call video/mp4
        (WEBM, ("audio/webm",), None),  # a recording the bytes call video/webm
        (b"%PDF-1.7\n" + bytes(16), DEFAULT_ACCEPT["image"], "application/pdf"),
        (PNG_BYTES, DEFAULT_ACCEPT["audio"], "image/png"),
        (b"no format anyone knows", DEFAULT_ACCEPT["image"], None),  # the model decides
    ],
)
def test_a_files_contents_are_refused_only_as_a_known_format_the_option_does_not_take(
    content: bytes, accept: tuple[str, ...], refused: str | None
) -> None:
    assert contents_not_taken(content, accept) == refused
