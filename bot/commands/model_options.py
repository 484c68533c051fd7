"""A parsed command checked against its model's own input schema, before anything is reserved.

The catalog's option rules are what Conjure knows offline; the model's schema (fetched and kept by
`ModelSchemas`) is what Replicate will enforce, or silently ignore: an input the model does not
have is dropped without a word (a negative prompt sent to flux-schnell), so an option whose input
the model lacks is refused, naming a model of the command that has it. Values are checked on the
model's built input (after `rename`/`translate`) and every message names the option as typed.
Without a schema the catalog's rules stand, `OptionSpec.models` included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from bot.catalog import OUTPUTS_FIELD, TRANSLATORS, Catalog, CommandSpec, ModelSpec, OptionSpec
from bot.commands.parsing import Invocation, UsageError
from bot.replicate.input_schema import InputSchema, Problem
from bot.replicate.schema_cache import ModelSchemas, SchemaRef

_JSON = (str, int, float, bool, list, dict)  # values the checker understands


def schema_ref(model: ModelSpec) -> SchemaRef:
    """Where `model`'s schema is read: its pinned version, its deployment, or its latest version."""
    return SchemaRef(model.route, model.owner_name, model.version)


def prefetch(schemas: ModelSchemas, catalog: Catalog) -> None:
    """Start fetching every catalog model's schema in the background."""
    schemas.prefetch(schema_ref(model) for model in catalog.models.values())


async def check_model_options(
    invocation: Invocation, catalog: Catalog, schemas: ModelSchemas | None
) -> Invocation:
    """`invocation`, its input coerced to the model's types; raises UsageError when the model
    lacks an option's input or would refuse a value. Waits for a schema only briefly (see
    ModelSchemas.get); without one, only the catalog's rules (already applied) and
    `OptionSpec.models` hold."""
    command, model = invocation.command, invocation.model
    schema = await schemas.get(schema_ref(model)) if schemas is not None else None
    for option, value, names in _typed(invocation):
        if not _takes(model, option, names, schema):
            raise UsageError(
                _not_taken(catalog, schemas, command, model, option, value, names),
                model_usage(command, model, schema),
            )
    if schema is None:
        return invocation
    labels = dict(_labels(invocation))
    checked: dict[str, Any] = {}
    for name, value in invocation.input.items():
        if not isinstance(value, _JSON):  # resolved later (an attachment becomes a URL)
            checked[name] = value
            continue
        checked[name], problem = schema.check(name, value)
        if problem is not None:
            message = _refusal(model, schema, name, labels.get(name), problem)
            raise UsageError(message, model_usage(command, model, schema))
    for name in sorted(schema.required - checked.keys()):
        words = _described(schema, name)
        raise UsageError(
            f"{model.key} needs its input {name}{words}, which /{command.name} does not set; "
            "please tell an admin.",
        )
    return dataclasses.replace(invocation, input=checked)


# --------------------------------------------------------------------------- which inputs


def input_names(model: ModelSpec, field: str, value: Any) -> list[str]:
    """The inputs of `model` that logical `field` set to `value` becomes (as build_input)."""
    target = field
    if field == OUTPUTS_FIELD:
        if model.outputs_field is None:
            return []
        target = model.outputs_field
    if target in model.translate:
        try:
            return list(TRANSLATORS[model.translate[target]](value))
        except ValueError:
            return []
    return [model.rename.get(target, target)]


def _typed(invocation: Invocation) -> Iterator[tuple[OptionSpec, Any, list[str]]]:
    """The options the person gave, their values and the inputs each sets."""
    for option in invocation.command.options:
        if option.type == "model" or option.name not in invocation.options:
            continue
        value = invocation.options[option.name]
        yield option, value, input_names(invocation.model, option.field, value)


def _labels(invocation: Invocation) -> Iterator[tuple[str, tuple[str, bool]]]:
    """Input name -> how to name it to the person (the option typed, or the prompt) and whether
    a translator made it (--ar becomes sdxl's width and height)."""
    command, model = invocation.command, invocation.model
    for name in input_names(model, command.prompt_field, invocation.prompt):
        yield name, (f"The {command.prompt_label}", False)
    for option in command.options:
        value = invocation.options.get(option.name, option.default)
        if option.type != "model" and value is not None:
            translated = _translated(model, option.field)
            for name in input_names(model, option.field, value):
                yield name, (f"Option --{option.name}", translated)


def _translated(model: ModelSpec, field: str) -> bool:
    target = model.outputs_field if field == OUTPUTS_FIELD else field
    return target is not None and target in model.translate


def _takes(
    model: ModelSpec, option: OptionSpec, names: list[str], schema: InputSchema | None
) -> bool:
    """Whether `model` has the inputs an option sets: by its schema, else by `option.models`."""
    if schema is not None:
        return all(schema.has(name) for name in names)
    return not option.models or model.key in option.models


# --------------------------------------------------------------------------- messages


def _not_taken(
    catalog: Catalog,
    schemas: ModelSchemas | None,
    command: CommandSpec,
    model: ModelSpec,
    option: OptionSpec,
    value: Any,
    names: list[str],
) -> str:
    """`flux-schnell has no negative prompt, so --no would be ignored. sdxl has one: add
    --model sdxl.`"""
    missing = names[0].replace("_", " ") if names else option.field
    text = f"{model.key} has no {missing} input, so --{option.name} would be ignored."
    others = []
    for key in command.models:
        other = catalog.models.get(key)
        if other is None or other.key == model.key:
            continue
        schema = schemas.cached(schema_ref(other)) if schemas is not None else None
        other_names = input_names(other, option.field, value)
        if other_names and _takes(other, option, other_names, schema):
            others.append(other.key)
    chooser = next((o for o in command.options if o.type == "model"), None)
    if not others:
        return f"{text} No model of /{command.name} takes it; leave out --{option.name}."
    which = others[0] if len(others) == 1 else f"{', '.join(others[:-1])} and {others[-1]}"
    verb = "has" if len(others) == 1 else "have"
    how = f": add --{chooser.name} {others[0]}" if chooser is not None else ""
    return f"{text} {which} {verb} one{how}."


def _refusal(
    model: ModelSpec,
    schema: InputSchema,
    name: str,
    label: tuple[str, bool] | None,
    problem: Problem,
) -> str:
    """`Option --steps must be between 1 and 4 for flux-schnell, not 10 (num_inference_steps:
    Number of denoising steps).`"""
    given = _shown(problem.given)
    words = _described(schema, name)
    if label is None:  # an input nobody typed: a default from conjure.toml
        return (
            f"{model.key}'s input {name} is set to {given}, but must be {problem.wanted}"
            f"{words}; please tell an admin."
        )
    said, translated = label
    if translated:
        return f"{said} sets {name} to {given}; {model.key} needs {problem.wanted}{words}."
    return f"{said} must be {problem.wanted} for {model.key}, not {given}{words}."


def _described(schema: InputSchema, name: str) -> str:
    prop = schema.properties.get(name)
    if prop is None or not prop.description:
        return f" ({name})"
    return f" ({name}: {_clip(prop.description, 80)})"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"'{_clip(value, 40)}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _clip(str(value), 40)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_usage(
    command: CommandSpec, model: ModelSpec, schema: InputSchema | None, *, chooser: bool = True
) -> str:
    """The usage line for `command` on `model`: without the options it lacks, and with its own
    ranges and choices where its schema is known (`[--steps 1-4]` for flux-schnell); without
    the option that picks the model when `chooser` is false."""
    parts = [f"/{command.name} <{command.prompt_label}>"]
    for option in command.options:
        hint = option.hint()
        if option.type == "model" and not chooser:
            continue
        if option.type != "model":
            names = input_names(model, option.field, option.default or _sample(option))
            if not _takes(model, option, names, schema):
                continue
            if schema is not None:
                hint = _model_hint(option, model, schema, names) or hint
        parts.append(f"[--{option.name} {hint}]" if hint else f"[--{option.name}]")
    return " ".join(parts)


def models_usage(catalog: Catalog, model: ModelSpec, schemas: ModelSchemas | None) -> list[str]:
    """`model_usage` for each command that can run `model` (for `/conjure models`); never
    waits: a schema not yet known leaves the catalog's rules."""
    schema = schemas.cached(schema_ref(model)) if schemas is not None else None
    return [
        model_usage(command, model, schema, chooser=False)
        for command in catalog.commands.values()
        if model.key in command.models
    ]


def _sample(option: OptionSpec) -> Any:
    """A value to learn which inputs an option sets (a translator needs one it accepts)."""
    return option.choices[0] if option.choices else 1


def _model_hint(
    option: OptionSpec, model: ModelSpec, schema: InputSchema, names: list[str]
) -> str | None:
    """The schema's range or choices for an option that sets one input as typed; a choice or
    bool option keeps its own (the catalog's choices are what may be typed)."""
    if len(names) != 1 or _translated(model, option.field) or option.type in ("choice", "bool"):
        return None
    prop = schema.properties[names[0]]
    if option.type in ("int", "float") and not prop.enum:
        # Both rules hold, so what may be typed is where they overlap.
        low = _tighter(max, option.minimum, prop.minimum)
        high = _tighter(min, option.maximum, prop.maximum)
        return dataclasses.replace(option, minimum=low, maximum=high).hint()
    return prop.hint() or None


def _tighter(pick: Any, ours: float | None, theirs: float | None) -> float | None:
    known = [bound for bound in (ours, theirs) if bound is not None]
    return pick(known) if known else None
