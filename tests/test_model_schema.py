"""Options checked against the model's own input schema (`components.schemas.Input` of its
version), before anything is reserved: the checker on Cog-shaped schemas, the cache's timings
against the sandbox, and the command path refusing what the catalog allows but the model does
not, in the model's own words; when Replicate cannot say, the catalog's rules apply and the
command runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bot.adapter import CommandRequest, Reply
from bot.catalog import default_catalog
from bot.commands.model_options import check_model_options, schema_ref
from bot.commands.parsing import parse_invocation
from bot.replicate.client import ReplicateClient
from bot.replicate.input_schema import InputSchema, SchemaUnreadable
from bot.replicate.schema_cache import ModelSchemas, SchemaRef
from bot.sandbox import HttpFault
from bot.sandbox.models import FLUX_SCHNELL, SDXL
from bot.sandbox.schema import input_schema
from tests.harness import Conjure, running_conjure, settle

# Cog's shape for real SDXL inputs: enums as `allOf` references to their own schema.
REAL_SDXL = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "properties": {
                    "prompt": {
                        "type": "string",
                        "title": "Prompt",
                        "default": "An astronaut riding a rainbow unicorn",
                        "x-order": 0,
                        "description": "Input prompt",
                    },
                    "negative_prompt": {
                        "type": "string",
                        "title": "Negative Prompt",
                        "default": "",
                        "x-order": 1,
                        "description": "Input Negative Prompt",
                    },
                    "scheduler": {
                        "allOf": [{"$ref": "#/components/schemas/scheduler"}],
                        "default": "K_EULER",
                        "x-order": 7,
                        "description": "scheduler",
                    },
                    "guidance_scale": {
                        "type": "number",
                        "title": "Guidance Scale",
                        "default": 7.5,
                        "maximum": 50,
                        "minimum": 1,
                        "x-order": 9,
                        "description": "Scale for classifier-free guidance",
                    },
                    "apply_watermark": {
                        "type": "boolean",
                        "title": "Apply Watermark",
                        "default": True,
                        "x-order": 14,
                        "description": "Applies a watermark to enable determining if an image is "
                        "generated in downstream applications.",
                    },
                    "lora_scale": {
                        "type": "number",
                        "title": "Lora Scale",
                        "default": 0.6,
                        "maximum": 1,
                        "minimum": 0,
                        "x-order": 15,
                        "description": "LoRA additive scale.",
                    },
                    "high_noise_frac": {
                        "type": "number",
                        "exclusiveMaximum": 1,
                        "exclusiveMinimum": 0,
                        "title": "High Noise Frac",
                        "x-order": 12,
                    },
                    "num_outputs": {
                        "type": "integer",
                        "title": "Num Outputs",
                        "default": 1,
                        "maximum": 4,
                        "minimum": 1,
                        "x-order": 6,
                        "description": "Number of images to output.",
                    },
                },
            },
            "scheduler": {
                "enum": ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "K_EULER", "PNDM"],
                "type": "string",
                "title": "scheduler",
                "description": "An enumeration.",
            },
        }
    },
}


# --------------------------------------------------------------------------- the checker


def test_a_cog_schema_is_read_with_its_enums_resolved() -> None:
    schema = InputSchema.from_openapi(REAL_SDXL)
    scheduler = schema.properties["scheduler"]
    assert scheduler.type == "string" and scheduler.enum is not None and "DDIM" in scheduler.enum
    assert scheduler.description == "scheduler"  # the property's words, not "An enumeration."
    assert (scheduler.default, scheduler.order) == ("K_EULER", 7)
    assert schema.properties["guidance_scale"].hint() == "1-50"
    assert schema.has("negative_prompt") and not schema.has("aspect_ratio")
    assert schema.required == frozenset()


@pytest.mark.parametrize(
    ("name", "value", "checked", "wanted"),
    [
        ("num_outputs", 4, 4, None),
        ("num_outputs", "3", 3, None),  # text that is exactly a number is taken as one
        ("num_outputs", 2.0, 2, None),
        ("num_outputs", 5, 5, "between 1 and 4"),
        ("num_outputs", 1.5, 1.5, "a whole number"),
        ("num_outputs", True, True, "a whole number"),  # a bool is not a number here
        ("guidance_scale", 0.5, 0.5, "between 1 and 50"),
        ("guidance_scale", "7.5", 7.5, None),
        ("guidance_scale", "lots", "lots", "a number"),
        ("lora_scale", 1, 1, None),
        ("high_noise_frac", 1, 1, "less than 1"),
        ("high_noise_frac", 0, 0, "more than 0"),
        ("scheduler", "ddim", "DDIM", None),  # one choice whatever the case
        (
            "scheduler",
            "EULER",
            "EULER",
            "one of DDIM, DPMSolverMultistep, HeunDiscrete, K_EULER, PNDM",
        ),
        ("apply_watermark", "off", False, None),
        ("apply_watermark", "maybe", "maybe", "true or false"),
        ("negative_prompt", 3, "3", None),  # a number where the model wants text
        ("negative_prompt", ["a"], ["a"], "text"),
        ("not_an_input", object, object, None),  # Replicate ignores it; the caller decides
    ],
)
def test_values_are_checked_against_the_schema(
    name: str, value: Any, checked: Any, wanted: str | None
) -> None:
    result, problem = InputSchema.from_openapi(REAL_SDXL).check(name, value)
    assert result == checked and type(result) is type(checked)
    assert (problem.wanted if problem else None) == wanted


def test_the_sandbox_models_publish_what_the_checker_reads() -> None:
    flux = InputSchema.from_openapi(input_schema(FLUX_SCHNELL))
    assert flux.required == {"prompt"}
    assert flux.properties["num_inference_steps"].hint() == "1-4"
    assert flux.properties["output_format"].enum == ("webp", "jpg", "png")
    assert flux.properties["output_format"].hint() == "webp|jpg|png"
    assert flux.properties["seed"].hint() == "N" and flux.properties["go_fast"].hint() == ""
    assert not flux.has("negative_prompt")
    assert InputSchema.from_openapi(input_schema(SDXL)).has("negative_prompt")


@pytest.mark.parametrize(
    "document",
    [None, {}, {"components": {"schemas": {}}}, {"components": {"schemas": {"Input": {}}}}, []],
)
def test_a_document_without_inputs_is_unreadable(document: Any) -> None:
    with pytest.raises(SchemaUnreadable):
        InputSchema.from_openapi(document)


# --------------------------------------------------------------------------- the cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FLUX_REF = SchemaRef("official", "black-forest-labs/flux-schnell")


async def test_schemas_come_from_each_route_and_a_pinned_version_is_kept(sandbox_server) -> None:
    async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
        schemas = ModelSchemas(client)
        catalog = default_catalog()
        sdxl = await schemas.get(schema_ref(catalog.models["sdxl"]))  # GET .../versions/{id}
        flux = await schemas.get(FLUX_REF)  # GET /v1/models/...: latest_version
        deployed = await schemas.get(SchemaRef("deployment", "conjure/sdxl"))
        assert sdxl is not None and sdxl.has("negative_prompt")
        assert flux is not None and not flux.has("negative_prompt")
        assert deployed is not None and deployed.has("negative_prompt")
        missing = await schemas.get(SchemaRef("official", "acme/nothing"))  # a 404
        assert missing is None
        await schemas.aclose()


async def test_a_failure_is_remembered_briefly_then_fetched_again_behind_a_command(
    sandbox_server,
) -> None:
    fault = HttpFault(status=503, count=1, method="GET", path_prefix="/v1/models/")
    sandbox_server.sandbox.faults.http.append(fault)
    clock = Clock()
    async with ReplicateClient(sandbox_server.url, sandbox_server.token, max_attempts=1) as client:
        schemas = ModelSchemas(client, clock=clock, failure_ttl=30)
        assert await schemas.get(FLUX_REF) is None and fault.count == 0
        # Replicate answers again, but within 30 s nobody asks: commands go straight on.
        assert await schemas.get(FLUX_REF) is None
        await schemas.wait_idle()
        assert schemas.cached(FLUX_REF) is None
        clock.now += 31
        assert await schemas.get(FLUX_REF) is None  # not waited for: fetched behind
        await schemas.wait_idle()
        assert await schemas.get(FLUX_REF) is not None
        await schemas.aclose()


async def test_a_slow_replicate_is_not_waited_for(sandbox_server) -> None:
    sandbox_server.sandbox.faults.http.append(
        HttpFault(delay=0.5, count=1, method="GET", path_prefix="/v1/models/")
    )
    async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
        schemas = ModelSchemas(client, wait=0.01, fetch_timeout=0.2)
        assert await schemas.get(FLUX_REF) is None  # gave up waiting; the fetch goes on
        await schemas.wait_idle()  # and times out: remembered as a failure
        assert schemas.tried(FLUX_REF) and schemas.cached(FLUX_REF) is None
        await schemas.aclose()


async def test_a_stale_schema_is_served_while_a_fresh_one_is_fetched(sandbox_server) -> None:
    clock = Clock()
    async with ReplicateClient(sandbox_server.url, sandbox_server.token, max_attempts=1) as client:
        schemas = ModelSchemas(client, clock=clock, ttl=60)
        first = await schemas.get(FLUX_REF)
        clock.now += 61
        sandbox_server.sandbox.faults.http.append(
            HttpFault(status=500, count=1, method="GET", path_prefix="/v1/models/")
        )
        assert await schemas.get(FLUX_REF) is first  # stale, at once
        await schemas.wait_idle()  # the refresh failed: the old schema is kept
        assert await schemas.get(FLUX_REF) is first
        await schemas.aclose()


# --------------------------------------------------------------------------- the command path

# Options the catalog allows loosely: the model's schema is stricter (flux-schnell runs at most
# 4 steps; its formats are webp, jpg and png; its quality is a number). `steps` is renamed to
# each model's own input, so the message must name --steps and the model's num_inference_steps.
LOOSE_OPTIONS = """
[models.flux-schnell]
rename = { steps = "num_inference_steps" }
[models.sdxl]
rename = { steps = "num_inference_steps" }

[[commands.imagine.options]]
name = "steps"
field = "steps"
type = "int"
minimum = 1
maximum = 50
description = "Denoising steps"

[[commands.imagine.options]]
name = "format"
field = "output_format"
type = "str"
description = "Image file format"

[[commands.imagine.options]]
name = "quality"
field = "output_quality"
type = "str"
description = "Image quality"
"""


@pytest.fixture
def loose_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "conjure.toml"
    path.write_text(LOOSE_OPTIONS, encoding="utf-8")
    return path


async def imagine(conjure: Conjure, text: str) -> Reply:
    request = CommandRequest("console", "local", "terminal", "you", "imagine", text)
    return await conjure.runtime.commands.handle(request)


def inputs(sandbox_server: Any) -> list[dict[str, Any]]:
    predictions = sandbox_server.sandbox.predictions.values()
    return [p["input"] for p in sorted(predictions, key=lambda p: p["created_at"])]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a fox --steps 10",
            "Option --steps must be between 1 and 4 for flux-schnell, not 10 "
            "(num_inference_steps: Number of denoising steps).",
        ),
        (
            "a fox --format gif",
            "Option --format must be one of webp, jpg, png for flux-schnell, not 'gif' "
            "(output_format: Format of the output images).",
        ),
        (
            "a fox --quality high",
            "Option --quality must be a whole number for flux-schnell, not 'high' "
            "(output_quality: Quality when saving the output images).",
        ),
    ],
)
async def test_what_the_catalog_allows_but_the_model_does_not_is_refused_in_its_words(
    sandbox_server, sqlite_url: str, tmp_path: Path, loose_catalog: Path, text: str, message: str
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=loose_catalog
    ) as conjure:
        reply = await imagine(conjure, text)
        assert reply.refused and reply.job is None
        said = str(reply.text)
        assert said.startswith(message + "\nUsage: "), said
        # flux-schnell's usage line, with its own limits and choices, and no --no.
        usage = said.split("Usage: ")[1]
        assert "[--steps 1-4]" in usage and "[--format webp|jpg|png]" in usage
        assert "[--quality 0-100]" in usage and "--no" not in usage
        assert sandbox_server.sandbox.create_count == 0
        assert await conjure.runtime.store.count() == 0


async def test_values_the_model_accepts_reach_it_in_its_types(
    sandbox_server, sqlite_url: str, tmp_path: Path, loose_catalog: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=loose_catalog
    ) as conjure:
        for text in (
            "one --steps 3 --format PNG --quality 90",
            "two --steps 40 --model sdxl",  # sdxl allows up to 500 steps
        ):
            reply = await imagine(conjure, text)
            assert reply.job is not None, reply.text
        await settle(conjure, sandbox_server)
    flux, sdxl = inputs(sandbox_server)
    assert flux == {
        "prompt": "one",
        "num_inference_steps": 3,
        "output_format": "png",  # the model's own spelling
        "output_quality": 90,  # a number, as the model takes it
    }
    assert sdxl == {"prompt": "two", "num_inference_steps": 40}


@pytest.mark.parametrize(
    "fault",
    [
        HttpFault(status=503, count=1000, method="GET", path_prefix="/v1/models/"),  # down
        HttpFault(status=404, count=1000, method="GET", path_prefix="/v1/models/"),  # unknown
    ],
)
async def test_without_a_schema_the_catalog_rules_and_the_command_runs(
    sandbox_server, sqlite_url: str, tmp_path: Path, loose_catalog: Path, fault: HttpFault
) -> None:
    sandbox_server.sandbox.faults.http.append(fault)
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=loose_catalog
    ) as conjure:
        schemas = conjure.runtime.schemas
        assert schemas is not None
        await schemas.wait_idle()  # the start-up prefetch, failed
        fetched = 1000 - fault.count
        assert fetched == len(conjure.runtime.catalog.models)  # one try for each model
        reply = await imagine(conjure, "a fox --steps 3 --format jpg")
        refused = await imagine(conjure, "a fox --steps 99")  # the catalog's own limit holds
        assert reply.job is not None, reply.text
        assert str(refused.text).startswith("Option --steps must be between 1 and 50, not 99.")
        await settle(conjure, sandbox_server)
        assert 1000 - fault.count == fetched  # the commands did not ask again
    [sent] = inputs(sandbox_server)
    assert sent == {"prompt": "a fox", "num_inference_steps": 3, "output_format": "jpg"}


async def test_a_slow_replicate_does_not_hold_a_command_up(
    sandbox_server, sqlite_url: str, tmp_path: Path, loose_catalog: Path
) -> None:
    sandbox_server.sandbox.faults.http.append(
        HttpFault(delay=0.4, count=1000, method="GET", path_prefix="/v1/models/")
    )
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=loose_catalog
    ) as conjure:
        schemas = conjure.runtime.schemas
        assert schemas is not None
        schemas.wait = 0.01  # the prefetch is still under way: not waited for
        taken = await imagine(conjure, "a fox --steps 10")  # only the catalog's rules, for now
        assert taken.job is not None, taken.text
        await schemas.wait_idle()  # the schemas arrive in the background
        refused = await imagine(conjure, "a fox --steps 10")
        assert str(refused.text).startswith("Option --steps must be between 1 and 4")
        await settle(conjure, sandbox_server)


async def test_conjure_models_shows_each_model_its_own_options(
    sandbox_server, sqlite_url: str, tmp_path: Path, loose_catalog: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=loose_catalog
    ) as conjure:
        assert conjure.runtime.schemas is not None
        await conjure.runtime.schemas.wait_idle()
        request = CommandRequest("console", "local", "terminal", "you", "conjure", "models")
        text = str((await conjure.runtime.commands.handle(request)).text)
        lines = text.splitlines()
    flux = lines.index(next(line for line in lines if line.startswith("• flux-schnell ")))
    sdxl = lines.index(next(line for line in lines if line.startswith("• sdxl ")))
    assert lines[flux + 1] == (
        "  /imagine <prompt> [--ar 1:1|16:9|...] [--seed N] [--n 1-4] [--steps 1-4] "
        "[--format webp|jpg|png] [--quality 0-100]"
    )
    # sdxl takes --no and no file format; its steps: the catalog's 1-50 within its own 1-500.
    assert lines[sdxl + 1] == (
        "  /imagine <prompt> [--ar 1:1|16:9|...] [--seed N] [--n 1-4] [--no TEXT] [--steps 1-50]"
    )


async def test_an_option_the_model_lacks_names_the_models_that_have_it(
    sandbox_server, sqlite_url: str, tmp_path: Path, loose_catalog: Path
) -> None:
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=loose_catalog
    ) as conjure:
        reply = await imagine(conjure, "a fox --model sdxl --format png")
        assert str(reply.text).startswith(
            "sdxl has no output format input, so --format would be ignored. "
            "flux-schnell and flux-dev have one: add --model flux-schnell."
        ), reply.text
        assert sandbox_server.sandbox.create_count == 0


async def test_a_translated_option_is_named_as_typed_with_the_input_it_became(
    sandbox_server, sqlite_url: str, tmp_path: Path
) -> None:
    # --ar taking any ratio: sdxl gets width/height (at most 1536), flux its list of ratios.
    path = tmp_path / "conjure.toml"
    path.write_text(
        '[[commands.imagine.options]]\nname = "ar"\ntype = "str"\nfield = "aspect_ratio"\n'
        'description = "Aspect ratio, width:height"\n',
        encoding="utf-8",
    )
    async with running_conjure(
        sandbox_server, sqlite_url, tmp_path / "out", conjure_config=path
    ) as conjure:
        sdxl = await imagine(conjure, "a fox --model sdxl --ar 4:1")
        flux = await imagine(conjure, "a fox --ar 4:1")
        assert str(sdxl.text).startswith(
            "Option --ar sets width to 2048; sdxl needs between 128 and 1536 "
            "(width: Width of output image)."
        ), sdxl.text
        assert str(flux.text).startswith(
            "Option --ar must be one of 1:1, 16:9, 21:9, 3:2, 2:3, 4:5, 5:4, 3:4, 4:3, 9:16, 9:21 "
            "for flux-schnell, not '4:1' (aspect_ratio: Aspect ratio for the generated image)."
        ), flux.text
        assert sandbox_server.sandbox.create_count == 0


async def test_a_value_resolved_later_is_left_to_its_own_stage(sandbox_server) -> None:
    """An attachment (an object until it is uploaded) is not judged as text here; whether the
    model has the input at all still is."""
    catalog = default_catalog()
    invocation = parse_invocation(catalog, "imagine", "a fox --model flux-dev")
    attachment = object()
    with_file = dataclasses.replace(invocation, input={**invocation.input, "image": attachment})
    async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
        schemas = ModelSchemas(client)
        checked = await check_model_options(with_file, catalog, schemas)
        await schemas.aclose()
    assert checked.input["image"] is attachment
