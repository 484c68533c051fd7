"""The follow-ups section of conjure.toml: built-in defaults, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.catalog import (
    Catalog,
    CatalogError,
    Followups,
    ImageFollowup,
    Price,
    default_catalog,
    load_catalog,
)

ROOT = Path(__file__).resolve().parent.parent
ESRGAN = "nightmareai/real-esrgan:42fed1c4974146d4d2414e2be2c5277c7fcf05fcc3a73abf41610695738c1d7b"
VARIATIONS = ImageFollowup("flux-dev", "image", "prompt_strength", 0.75)
UPSCALE = ImageFollowup("real-esrgan", "image", inputs={"scale": 2})


def load(tmp_path: Path, text: str) -> Catalog:
    path = tmp_path / "conjure.toml"
    path.write_text(text, encoding="utf-8")
    return load_catalog(path)


def test_builtin_imagine_offers_reroll_variations_and_upscale():
    catalog = default_catalog()
    assert catalog.commands["imagine"].followups == Followups(True, VARIATIONS, UPSCALE)
    assert catalog.commands["ask"].followups == Followups()
    assert catalog.commands["transcribe"].followups.any is False
    assert catalog.commands["imagine"].followups.any is True


def test_builtin_upscaler_is_real_esrgan_billed_by_the_second_on_a_t4():
    model = default_catalog().models["real-esrgan"]
    assert (model.ref, model.route, model.kind, model.version) == (
        ESRGAN,
        "version",
        "image",
        ESRGAN.partition(":")[2],
    )
    assert model.price == Price(per_second_usd=0.0012, expected_seconds=3, max_seconds=20)
    assert model.price.estimate_micros(1) == 3600
    assert model.price.ceiling_micros(1) == 24_000


def test_fields_put_the_image_and_strength_over_the_inputs():
    assert VARIATIONS.fields("data:image/png;base64,AAAA") == {
        "prompt_strength": 0.75,
        "image": "data:image/png;base64,AAAA",
    }
    upscale = default_catalog().commands["imagine"].followups.upscale
    assert upscale is not None
    assert upscale.fields("https://x/v1/files/abc") == {
        "scale": 2,
        "image": "https://x/v1/files/abc",
    }
    with pytest.raises(TypeError):
        upscale.inputs["scale"] = 4  # type: ignore[index]


def test_each_followup_can_be_turned_off(tmp_path):
    catalog = load(
        tmp_path,
        "[commands.imagine.followups]\nreroll = false\nvariations = false\n",
    )
    assert catalog.commands["imagine"].followups == Followups(False, None, UPSCALE)
    catalog = load(tmp_path, "[commands.imagine]\nfollowups = {}\n")
    assert catalog.commands["imagine"].followups == Followups(True, VARIATIONS, UPSCALE)


def test_a_partial_table_updates_the_builtin_and_a_new_model_replaces_it(tmp_path):
    catalog = load(
        tmp_path,
        """
        [commands.imagine.followups]
        variations = { strength = 0.5 }
        upscale = { model = "sdxl", image_field = "init_image" }
        """,
    )
    followups = catalog.commands["imagine"].followups
    assert followups.variations == ImageFollowup("flux-dev", "image", "prompt_strength", 0.5)
    assert followups.upscale == ImageFollowup("sdxl", "init_image")  # no stale scale = 2


def test_a_new_command_has_no_followups_unless_it_says_so(tmp_path):
    catalog = load(
        tmp_path,
        """
        [commands.paint]
        model = "sdxl"
        [commands.sketch]
        model = "flux-schnell"
        [commands.sketch.followups]
        reroll = true
        [commands.sketch.followups.upscale]
        model = "real-esrgan"
        image_field = "image"
        inputs = { scale = 4, face_enhance = true }
        """,
    )
    assert catalog.commands["paint"].followups == Followups()
    upscale = ImageFollowup("real-esrgan", "image", inputs={"scale": 4, "face_enhance": True})
    assert catalog.commands["sketch"].followups == Followups(True, None, upscale)


def test_a_builtin_followup_whose_model_is_disabled_is_quietly_off(tmp_path):
    catalog = load(tmp_path, "[models.real-esrgan]\nenabled = false\n")
    assert catalog.commands["imagine"].followups == Followups(True, VARIATIONS, None)
    assert "real-esrgan" not in catalog.models
    with pytest.raises(CatalogError, match="model 'real-esrgan' is disabled"):
        load(
            tmp_path,
            "[models.real-esrgan]\nenabled = false\n"
            "[commands.imagine.followups.upscale]\nmodel = 'real-esrgan'\nimage_field = 'image'\n",
        )


def test_imagine_made_to_run_a_text_model_loses_its_image_followups(tmp_path):
    catalog = load(tmp_path, '[commands.imagine]\nmodel = "llama-3-8b"\n')
    assert catalog.commands["imagine"].followups == Followups(reroll=True)


def test_the_example_file_documents_the_section():
    catalog = load_catalog(ROOT / "conjure.example.toml")
    followups = catalog.commands["imagine"].followups
    assert followups.reroll is True
    assert followups.variations == ImageFollowup("flux-dev", "image", "prompt_strength", 0.6)
    assert followups.upscale == UPSCALE
    assert catalog.commands["video"].followups == Followups(reroll=True)
    text = (ROOT / "conjure.example.toml").read_text(encoding="utf-8")
    assert "[commands.<name>.followups]" in text


FOLLOWUPS = "[commands.imagine.followups]\n"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            "variations = { model = 'flx', image_field = 'image' }",
            "variations.model",
            "unknown model 'flx'",
        ),
        (
            "upscale = { model = 'llama-3-8b', image_field = 'image' }",
            "upscale.model",
            "model 'llama-3-8b' makes text, not images",
        ),
        ("upscale = true", "upscale", "must be a table (model, image_field, ...) or false"),
        ("upscale = 3", "upscale", "must be a table"),
        ("reroll = 'yes'", "reroll", "must be true or false"),
        ("rerol = true", "rerol", "unknown key (did you mean 'reroll'?)"),
        ("upscale = { model = 'real-esrgan' }", "upscale.image_field", "missing"),
        (
            "upscale = { model = 'real-esrgan', image_field = 'the image' }",
            "upscale.image_field",
            "is not a valid input field name",
        ),
        (
            "upscale = { model = 'real-esrgan', image_feild = 'image' }",
            "upscale.image_feild",
            "did you mean 'image_field'?",
        ),
        ("variations = { strength = 1.5 }", "variations.strength", "must be at most 1, not 1.5"),
        ("variations = { strength = -0.1 }", "variations.strength", "must be at least 0"),
        ("variations = { strength = '0.5' }", "variations.strength", "must be a number"),
        (
            "variations = { model = 'flux-dev', image_field = 'image', strength = 0.5 }",
            "variations.strength_field",
            "strength and strength_field go together",
        ),
        (
            "upscale = { inputs = { image = 'x' } }",
            "upscale.inputs.image",
            "'image' is set by the follow-up itself",
        ),
        (
            "upscale = { inputs = { when = 2024-01-01 } }",
            "upscale.inputs.when",
            "dates and times cannot be sent",
        ),
        ("upscale = { inputs = 2 }", "upscale.inputs", "must be a table"),
    ],
)
def test_followup_errors_name_the_key(tmp_path, text, key, message):
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, FOLLOWUPS + text + "\n")
    error = str(caught.value)
    assert error.startswith(f"{tmp_path / 'conjure.toml'}: commands.imagine.followups.{key}: ")
    assert message in error, error


def test_image_followups_on_a_command_that_makes_text_are_refused(tmp_path):
    with pytest.raises(CatalogError) as caught:
        load(
            tmp_path,
            "[commands.ask.followups]\nreroll = true\n"
            "upscale = { model = 'real-esrgan', image_field = 'image' }\n",
        )
    assert str(caught.value).endswith(
        "commands.ask.followups.upscale: the command's model 'llama-3-8b' makes text, "
        "not images; set upscale = false"
    )
    catalog = load(tmp_path, "[commands.ask.followups]\nreroll = true\n")
    assert catalog.commands["ask"].followups == Followups(reroll=True)
