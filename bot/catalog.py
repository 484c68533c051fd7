"""The command catalog: which slash commands exist, which Replicate model each runs, its options.

Everything the adapters (Slack usage lines, Discord option lists) and the job service (model route,
price) need comes from here, so a `conjure.toml` can reshape the product without code changes.
The built-in catalog is written in the same raw form as the file and goes through the same
validation, so defaults and overrides can never disagree about what is legal.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast, get_args

Route = Literal["official", "version", "deployment"]
Kind = Literal["image", "text", "transcript", "audio", "video"]
OptionType = Literal["str", "int", "float", "bool", "choice", "model"]
PromptType = Literal["text", "url"]

OUTPUTS_FIELD = "@outputs"
"""An option `field` meaning "whatever input field the chosen model counts its outputs in"."""

RESERVED_COMMANDS = frozenset({"conjure"})  # the admin command
RESERVED_OPTIONS = frozenset({"prompt"})  # Discord's own option for the prompt text
MAX_CHOICES = 25  # Discord's limit on choices per option
MAX_DESCRIPTION = 100  # Discord's limit on command and option descriptions

_MICROS = Decimal(1_000_000)


class CatalogError(Exception):
    """A bad `conjure.toml`; the message names the file and the key at fault."""


# --------------------------------------------------------------------------- specs


def _to_micros(usd: Decimal) -> int:
    """Round up to a whole micro-dollar: a reservation must never fall short of the bill."""
    return int((usd * _MICROS).to_integral_value(rounding=ROUND_CEILING))


def _dec(value: float) -> Decimal:
    # str() first so 0.003 is exactly 0.003, not the binary float's long tail.
    return Decimal(str(value))


@dataclass(frozen=True)
class Price:
    """What a model costs: per output, per second of hardware, or (rarely) both added together.

    `expected_seconds` is per output, so a batch of four is reserved as four runs' worth of time.
    """

    per_output_usd: float | None = None
    per_second_usd: float | None = None
    expected_seconds: float = 10.0

    def estimate_micros(self, outputs: int) -> int:
        """The amount to reserve before running, in micro-dollars."""
        outputs = max(int(outputs), 0)
        total = Decimal(0)
        if self.per_output_usd is not None:
            total += _dec(self.per_output_usd) * outputs
        if self.per_second_usd is not None:
            total += _dec(self.per_second_usd) * _dec(self.expected_seconds) * outputs
        return _to_micros(total)

    def actual_micros(self, outputs: int, predict_time: float | None) -> int:
        """What Replicate billed: outputs x price, plus `predict_time` x rate (0 when unknown)."""
        total = Decimal(0)
        if self.per_output_usd is not None:
            total += _dec(self.per_output_usd) * max(int(outputs), 0)
        if self.per_second_usd is not None and predict_time is not None:
            seconds = predict_time if math.isfinite(predict_time) else 0.0
            total += _dec(self.per_second_usd) * _dec(max(seconds, 0.0))
        return _to_micros(total)


Translator = Callable[[Any], dict[str, Any]]


def _megapixel_size(value: Any) -> dict[str, Any]:
    """`"16:9"` -> width/height of about one megapixel in multiples of 64 (SDXL's native sizes)."""
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*[:x]\s*(\d+(?:\.\d+)?)", text)
    if not match or float(match[1]) <= 0 or float(match[2]) <= 0:
        raise ValueError(f"'{text}' is not an aspect ratio like 16:9")
    ratio = float(match[1]) / float(match[2])
    area = 1024 * 1024
    ideal = round(math.sqrt(area * ratio) / 64)

    def error(width: int, height: int) -> float:
        # Shape matters more than size: a wrong ratio is visible, 5% fewer pixels is not.
        return 4 * abs(math.log(width / height / ratio)) + abs(math.log(width * height / area))

    candidates = []
    for steps in range(max(1, ideal - 3), ideal + 4):
        width = steps * 64
        candidates.append((width, max(64, round(width / ratio / 64) * 64)))
    width, height = min(candidates, key=lambda size: error(*size))
    return {"width": width, "height": height}


def _drop(value: Any) -> dict[str, Any]:
    """For models that lack an input some of their command's options set."""
    return {}


TRANSLATORS: Mapping[str, Translator] = MappingProxyType(
    {"megapixel_size": _megapixel_size, "drop": _drop}
)
"""Named per-model input translations, referenced from `ModelSpec.translate` and conjure.toml."""


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping if isinstance(mapping, MappingProxyType) else MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ModelSpec:
    """One Replicate model, how to reach it, what it costs and how its input fields are named.

    Commands speak in logical field names (`aspect_ratio`); `rename` and `translate` adapt them to
    a model that names or shapes them differently, so no code branches on a model's name.
    """

    key: str
    ref: str
    route: Route
    kind: Kind
    price: Price
    description: str
    outputs_field: str | None = None
    input_defaults: Mapping[str, Any] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)
    translate: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Shared, long-lived config: make accidental mutation by one job impossible.
        for name in ("input_defaults", "rename", "translate"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def owner_name(self) -> str:
        """`owner/name` of the model or deployment."""
        return self.ref.split(":", 1)[0]

    @property
    def version(self) -> str | None:
        """The version id for the `version` route, else None."""
        _, sep, version = self.ref.partition(":")
        return version if sep else None

    def build_input(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The Replicate input for logical `fields`, over `input_defaults`.

        Raises ValueError when a translator rejects a value.
        """
        result = dict(self.input_defaults)
        for name, value in fields.items():
            target = name
            if name == OUTPUTS_FIELD:
                if self.outputs_field is None:
                    continue  # one output per run; the parser refuses n > 1 beforehand
                target = self.outputs_field
            if target in self.translate:
                result.update(TRANSLATORS[self.translate[target]](value))
            else:
                result[self.rename.get(target, target)] = value
        return result


@dataclass(frozen=True)
class OptionSpec:
    """A typed `--name value` option and the input field it sets."""

    name: str
    aliases: tuple[str, ...]
    field: str
    type: OptionType
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None

    def hint(self) -> str:
        """The value placeholder for usage lines: `N`, `1-4`, `a|b|c`, or '' for flags."""
        if self.type == "bool":
            return ""
        if self.type in ("choice", "model"):
            shown = self.choices if len(self.choices) <= 4 else (*self.choices[:2], "...")
            return "|".join(shown)
        if self.minimum is not None and self.maximum is not None:
            if self.type == "float" or self.maximum - self.minimum <= 10_000:
                return f"{format_number(self.minimum)}-{format_number(self.maximum)}"
        return {"int": "N", "float": "X"}.get(self.type, "TEXT")


def format_number(value: float) -> str:
    """`4` rather than `4.0`, and never scientific notation for big integers."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class CommandSpec:
    """A slash command: its default model, the field its free text goes to, and its options."""

    name: str
    description: str
    model: str
    prompt_field: str
    options: tuple[OptionSpec, ...]
    models: tuple[str, ...]
    prompt_label: str = "prompt"
    prompt_type: PromptType = "text"

    def usage_hint(self) -> str:
        """The usage line without the command, as Slack's manifest `usage_hint` wants it."""
        parts = [f"<{self.prompt_label}>"]
        for option in self.options:
            hint = option.hint()
            parts.append(f"[--{option.name} {hint}]" if hint else f"[--{option.name}]")
        return " ".join(parts)

    def usage(self) -> str:
        """One line, e.g. `/imagine <prompt> [--ar 1:1|16:9|...] [--seed N] [--n 1-4]`."""
        return f"/{self.name} {self.usage_hint()}"

    def option(self, name_or_alias: str) -> OptionSpec | None:
        """The option called `name_or_alias` (leading dashes and case ignored)."""
        wanted = name_or_alias.lstrip("-").lower()
        for option in self.options:
            if option.name == wanted or wanted in option.aliases:
                return option
        return None


@dataclass(frozen=True)
class Catalog:
    """All enabled commands and models, keyed by command name and model key."""

    commands: Mapping[str, CommandSpec]
    models: Mapping[str, ModelSpec]

    def command(self, name: str) -> CommandSpec | None:
        """Look a command up as `imagine` or `/imagine`."""
        return self.commands.get(name.strip().removeprefix("/").lower())

    def model(self, key: str) -> ModelSpec | None:
        return self.models.get(key)


# --------------------------------------------------------------------------- built-ins

_ASPECT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]

BUILTIN: Mapping[str, Any] = {
    "models": {
        "flux-schnell": {
            "ref": "black-forest-labs/flux-schnell",
            "route": "official",
            "kind": "image",
            "price_per_output": 0.003,
            "outputs_field": "num_outputs",
            "description": "FLUX.1 [schnell]: fast images from text",
        },
        "flux-dev": {
            "ref": "black-forest-labs/flux-dev",
            "route": "official",
            "kind": "image",
            "price_per_output": 0.025,
            "outputs_field": "num_outputs",
            "description": "FLUX.1 [dev]: slower, more detailed images",
        },
        "sdxl": {
            "ref": "stability-ai/sdxl:"
            "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
            "route": "version",
            "kind": "image",
            "price_per_second": 0.0023,  # A40
            "expected_seconds": 8,
            "outputs_field": "num_outputs",
            "description": "Stable Diffusion XL",
            "translate": {"aspect_ratio": "megapixel_size"},  # SDXL takes width/height
        },
        "llama-3-8b": {
            "ref": "meta/meta-llama-3-8b-instruct",
            "route": "official",
            "kind": "text",
            "price_per_second": 0.0023,
            "expected_seconds": 3,
            "description": "Meta Llama 3 8B Instruct",
        },
        "whisper": {
            "ref": "openai/whisper:"
            "8099696689d249cf8b122d833c36ac3f75505c666a395ca40ef26f68e7d3d16e",
            "route": "version",
            "kind": "transcript",
            "price_per_second": 0.0012,  # T4
            "expected_seconds": 20,
            "description": "OpenAI Whisper speech recognition",
        },
    },
    "commands": {
        "imagine": {
            "description": "Make images from a text prompt",
            "model": "flux-schnell",
            "models": ["flux-schnell", "flux-dev", "sdxl"],
            "options": [
                {
                    "name": "ar",
                    "aliases": ["aspect-ratio"],
                    "field": "aspect_ratio",
                    "type": "choice",
                    "choices": _ASPECT_RATIOS,
                    "description": "Aspect ratio, width:height",
                },
                {
                    "name": "seed",
                    "field": "seed",
                    "type": "int",
                    "minimum": 0,
                    "maximum": 2**31 - 1,
                    "description": "Random seed, to repeat a result",
                },
                {
                    "name": "n",
                    "field": OUTPUTS_FIELD,
                    "type": "int",
                    "minimum": 1,
                    "maximum": 4,
                    "description": "How many images to make",
                },
                {"name": "model", "type": "model", "description": "Which model to use"},
            ],
        },
        "ask": {
            "description": "Ask a language model",
            "model": "llama-3-8b",
            "options": [
                {
                    "name": "max-tokens",
                    "field": "max_tokens",
                    "type": "int",
                    "minimum": 1,
                    "maximum": 4096,
                    "description": "Longest answer, in tokens",
                },
            ],
        },
        "transcribe": {
            "description": "Transcribe speech from an audio URL",
            "model": "whisper",
            "prompt_field": "audio",
            "prompt_label": "audio URL",
            "prompt_type": "url",
        },
    },
}


# --------------------------------------------------------------------------- loading

_COMMAND_NAME = re.compile(r"[a-z0-9_-]{1,31}")  # Slack's rule (32 with the slash)
_OPTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # also valid for Discord
_MODEL_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION_ID = re.compile(r"[0-9a-f]{64}")

_MODEL_KEYS = frozenset(
    {
        "enabled",
        "ref",
        "route",
        "kind",
        "description",
        "price_per_output",
        "price_per_second",
        "expected_seconds",
        "outputs_field",
        "defaults",
        "rename",
        "translate",
    }
)
_PRICE_KEYS = ("price_per_output", "price_per_second")
_COMMAND_KEYS = frozenset(
    {
        "enabled",
        "model",
        "models",
        "description",
        "prompt_field",
        "prompt_label",
        "prompt_type",
        "options",
    }
)
_OPTION_KEYS = frozenset(
    {
        "enabled",
        "name",
        "aliases",
        "field",
        "type",
        "description",
        "choices",
        "minimum",
        "maximum",
        "default",
    }
)
_BUILTIN_SOURCE = "built-in catalog"


def _merge_tables(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Override wins key by key; nested tables merge, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge_tables(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge_model(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    base = dict(base)
    if any(key in override for key in _PRICE_KEYS):
        for key in _PRICE_KEYS:  # a new price replaces the old one; it never adds to it
            base.pop(key, None)
    if "ref" in override and "route" not in override:
        base.pop("route", None)  # infer it again from the new ref
    return _merge_tables(base, override)


class _Loader:
    """Merges a parsed file over the built-ins and turns the result into specs, or fails clearly."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> CatalogError:
        return CatalogError(f"{self.source}: {path}: {message}")

    # ---- merging

    def merge(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
        """Merged model and command tables, and the commands whose `models` list the file set."""
        models = {key: dict(table) for key, table in BUILTIN["models"].items()}
        commands = {name: dict(table) for name, table in BUILTIN["commands"].items()}
        own_models: set[str] = set()
        for key, table in self.tables(raw, "models").items():
            models[key] = _merge_model(models[key], table) if key in models else dict(table)
        for name, table in self.tables(raw, "commands").items():
            if "models" in table:
                own_models.add(name)
            if name in commands:
                merged = _merge_tables(commands[name], table)
                if "options" in table:
                    merged["options"] = self.merge_options(
                        name, commands[name].get("options", []), table["options"]
                    )
                commands[name] = merged
            else:
                commands[name] = dict(table)
        return models, commands, own_models

    def tables(self, raw: Mapping[str, Any], section: str) -> dict[str, Mapping[str, Any]]:
        value = raw.get(section, {})
        if not isinstance(value, Mapping):
            raise self.fail(section, "must be a table")
        for key, table in value.items():
            if not isinstance(table, Mapping):
                raise self.fail(f"{section}.{key}", "must be a table")
        return dict(value)

    def merge_options(self, command: str, base: list[Any], override: Any) -> list[Any]:
        """Options merge by name: a known name updates that option, a new name is appended.

        Giving `type` replaces the option entirely, so stale bounds or choices cannot linger.
        """
        path = f"commands.{command}.options"
        if not isinstance(override, list):
            raise self.fail(path, "must be an array of tables ([[commands.NAME.options]])")
        merged = [dict(option) for option in base]
        for index, option in enumerate(override):
            if not isinstance(option, Mapping):
                raise self.fail(f"{path}[{index}]", "must be a table")
            name = option.get("name")
            if not isinstance(name, str):
                raise self.fail(f"{path}[{index}].name", "missing (every option needs a name)")
            for position, existing in enumerate(merged):
                if existing.get("name") == name:
                    replace = "type" in option
                    merged[position] = dict(option) if replace else {**existing, **option}
                    break
            else:
                merged.append(dict(option))
        return merged

    # ---- building

    def build(self, raw: Mapping[str, Any]) -> Catalog:
        models_raw, commands_raw, own_models = self.merge(raw)
        disabled = {k for k, t in models_raw.items() if self.enabled(f"models.{k}", t) is False}
        models = {
            key: self.model(key, table) for key, table in models_raw.items() if key not in disabled
        }
        commands: dict[str, CommandSpec] = {}
        for name, table in commands_raw.items():
            if not self.enabled(f"commands.{name}", table):
                continue
            if name not in own_models and "models" in table:
                # A built-in list quietly loses models the file disabled.
                table = {**table, "models": [m for m in table["models"] if m not in disabled]}
            commands[name] = self.command(name, table, models, disabled)
        return Catalog(commands=MappingProxyType(commands), models=MappingProxyType(models))

    def enabled(self, path: str, table: Mapping[str, Any]) -> bool:
        value = table.get("enabled", True)
        if not isinstance(value, bool):
            raise self.fail(f"{path}.enabled", "must be true or false")
        return value

    def check_keys(self, path: str, table: Mapping[str, Any], allowed: frozenset[str]) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(f"{path}.{key}", f"unknown key{hint}")

    def string(
        self, path: str, value: Any, pattern: re.Pattern[str] | None = None, rule: str = ""
    ) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(path, f"'{value}' {rule}")
        return value

    def description(self, path: str, value: Any) -> str:
        text = self.string(path, value).strip()
        if len(text) > MAX_DESCRIPTION:
            raise self.fail(path, f"at most {MAX_DESCRIPTION} characters (Discord's limit)")
        return text

    def number(self, path: str, value: Any, *, positive: bool = False) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(path, "must be a number")
        if value < 0 or (positive and value == 0):
            raise self.fail(path, f"must be {'above' if positive else 'at least'} 0, not {value}")
        return value

    def string_list(self, path: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(path, "must be an array of non-empty strings")
        if len(set(value)) != len(value):
            raise self.fail(path, "has duplicates")
        return value

    def field_map(self, path: str, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise self.fail(path, 'must be a table of field = "..."')
        for key, target in value.items():
            self.string(f"{path}.{key}", key, _FIELD_NAME, "is not a valid input field name")
            if not isinstance(target, str):
                raise self.fail(f"{path}.{key}", "must be a string")
        return dict(value)

    def json_value(self, path: str, value: Any) -> None:
        """Inputs go to Replicate as JSON, which has no dates or times."""
        if isinstance(value, dt.date | dt.time):
            raise self.fail(path, "dates and times cannot be sent to Replicate; use a string")
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.json_value(f"{path}.{key}", item)
        if isinstance(value, list):
            for index, item in enumerate(value):
                self.json_value(f"{path}[{index}]", item)

    def model(self, key: str, table: Mapping[str, Any]) -> ModelSpec:
        path = f"models.{key}"
        self.string(path, key, _MODEL_KEY, "is not a valid model key (a-z, 0-9, '.', '-', '_')")
        self.check_keys(path, table, _MODEL_KEYS)
        if "ref" not in table:
            raise self.fail(f"{path}.ref", "missing (e.g. 'black-forest-labs/flux-schnell')")
        ref = self.string(f"{path}.ref", table["ref"]).strip()
        route = table.get("route", "version" if ":" in ref else "official")
        if route not in get_args(Route):
            raise self.fail(
                f"{path}.route", f"unknown route '{route}' (use official, version or deployment)"
            )
        owner_name, sep, version = ref.partition(":")
        if not _OWNER_NAME.fullmatch(owner_name):
            raise self.fail(f"{path}.ref", f"'{ref}' is not owner/name")
        if route == "version" and not (sep and _VERSION_ID.fullmatch(version)):
            raise self.fail(f"{path}.ref", "route 'version' needs 'owner/name:<64-hex version id>'")
        if route != "version" and sep:
            raise self.fail(f"{path}.ref", f"route '{route}' takes 'owner/name' without a version")
        if "kind" not in table:
            raise self.fail(f"{path}.kind", "missing (image, text, transcript, audio or video)")
        kind = table["kind"]
        if kind not in get_args(Kind):
            raise self.fail(
                f"{path}.kind", f"unknown kind '{kind}' (image, text, transcript, audio or video)"
            )
        price = self.price(path, table)
        outputs_field = table.get("outputs_field") or None
        if outputs_field is not None:
            self.string(f"{path}.outputs_field", outputs_field, _FIELD_NAME, "is not a field name")
        defaults = table.get("defaults", {})
        if not isinstance(defaults, Mapping):
            raise self.fail(f"{path}.defaults", "must be a table of input values")
        self.json_value(f"{path}.defaults", defaults)
        rename = self.field_map(f"{path}.rename", table.get("rename", {}))
        for field_name, target in rename.items():
            self.string(f"{path}.rename.{field_name}", target, _FIELD_NAME, "is not a field name")
        translate = self.field_map(f"{path}.translate", table.get("translate", {}))
        for field_name, translator in translate.items():
            if translator not in TRANSLATORS:
                known = ", ".join(sorted(TRANSLATORS))
                raise self.fail(
                    f"{path}.translate.{field_name}",
                    f"unknown translator '{translator}' (known: {known})",
                )
        description = table.get("description", ref)
        return ModelSpec(
            key=key,
            ref=ref,
            route=cast(Route, route),
            kind=cast(Kind, kind),
            price=price,
            description=self.description(f"{path}.description", description),
            outputs_field=outputs_field,
            input_defaults=dict(defaults),
            rename=rename,
            translate=translate,
        )

    def price(self, path: str, table: Mapping[str, Any]) -> Price:
        per_output = table.get("price_per_output")
        per_second = table.get("price_per_second")
        if per_output is None and per_second is None:
            raise self.fail(
                f"{path}.price_per_output",
                "missing: set price_per_output or price_per_second (a model is never free "
                "by default; write 0 if it really is)",
            )
        if per_output is not None:
            per_output = self.number(f"{path}.price_per_output", per_output)
        if per_second is not None:
            per_second = self.number(f"{path}.price_per_second", per_second)
        expected = self.number(
            f"{path}.expected_seconds", table.get("expected_seconds", 10.0), positive=True
        )
        return Price(
            per_output_usd=per_output, per_second_usd=per_second, expected_seconds=expected
        )

    def command(
        self,
        name: str,
        table: Mapping[str, Any],
        models: Mapping[str, ModelSpec],
        disabled: set[str],
    ) -> CommandSpec:
        path = f"commands.{name}"
        self.string(
            path, name, _COMMAND_NAME, "is not a valid command name (a-z, 0-9, '-', '_'; 31 max)"
        )
        if name in RESERVED_COMMANDS:
            raise self.fail(path, f"'/{name}' is Conjure's own admin command")
        self.check_keys(path, table, _COMMAND_KEYS)

        def model_key(key_path: str, key: Any) -> str:
            key = self.string(key_path, key)
            if key in disabled:
                raise self.fail(key_path, f"model '{key}' is disabled")
            if key not in models:
                close = difflib.get_close_matches(key, list(models), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(key_path, f"unknown model '{key}'{hint}")
            return key

        if "model" not in table:
            raise self.fail(f"{path}.model", "missing (the key of a model under [models])")
        default_model = model_key(f"{path}.model", table["model"])
        allowed = [
            model_key(f"{path}.models[{index}]", key)
            for index, key in enumerate(self.string_list(f"{path}.models", table.get("models", [])))
        ]
        if default_model not in allowed:
            allowed.insert(0, default_model)  # the default model is always allowed
        if len(allowed) > MAX_CHOICES:
            raise self.fail(f"{path}.models", f"at most {MAX_CHOICES} models (Discord's limit)")
        prompt_field = self.string(
            f"{path}.prompt_field",
            table.get("prompt_field", "prompt"),
            _FIELD_NAME,
            "is not a valid input field name",
        )
        prompt_label = self.string(f"{path}.prompt_label", table.get("prompt_label", "prompt"))
        prompt_type = table.get("prompt_type", "text")
        if prompt_type not in get_args(PromptType):
            raise self.fail(
                f"{path}.prompt_type", f"unknown prompt type '{prompt_type}' (text or url)"
            )
        description = table.get("description", models[default_model].description)
        options_raw = table.get("options", [])
        if not isinstance(options_raw, list):
            raise self.fail(f"{path}.options", "must be an array of tables")
        options = []
        for index, option in enumerate(options_raw):
            if not isinstance(option, Mapping):
                raise self.fail(f"{path}.options[{index}]", "must be a table")
            if self.enabled(f"{path}.options[{index}]", option):
                options.append(self.option(path, index, option, tuple(allowed)))
        if len(allowed) > 1 and not any(option.type == "model" for option in options):
            options.append(
                OptionSpec("model", (), "", "model", "Which model to use", tuple(allowed))
            )
        self.check_option_clashes(path, options, prompt_field)
        return CommandSpec(
            name=name,
            description=self.description(f"{path}.description", description),
            model=default_model,
            prompt_field=prompt_field,
            options=tuple(options),
            models=tuple(allowed),
            prompt_label=prompt_label.strip(),
            prompt_type=cast(PromptType, prompt_type),
        )

    def check_option_clashes(self, path: str, options: list[OptionSpec], prompt_field: str) -> None:
        spellings: dict[str, str] = {}
        fields: dict[str, str] = {}
        for option in options:
            option_path = f"{path}.options.{option.name}"
            for spelling in (option.name, *option.aliases):
                if spelling in spellings:
                    raise self.fail(
                        option_path, f"--{spelling} is already used by --{spellings[spelling]}"
                    )
                spellings[spelling] = option.name
            if option.type == "model":
                continue
            if option.field == prompt_field:
                raise self.fail(f"{option_path}.field", f"'{option.field}' is the prompt field")
            if option.field in fields:
                raise self.fail(
                    f"{option_path}.field",
                    f"'{option.field}' is already set by --{fields[option.field]}",
                )
            fields[option.field] = option.name
        if sum(option.type == "model" for option in options) > 1:
            raise self.fail(f"{path}.options", "only one option may choose the model")
        if len(options) > MAX_CHOICES - 1:
            raise self.fail(
                f"{path}.options", f"at most {MAX_CHOICES - 1} options (Discord's limit)"
            )

    def option(
        self, command_path: str, index: int, table: Mapping[str, Any], models: tuple[str, ...]
    ) -> OptionSpec:
        name = table.get("name")
        if not isinstance(name, str):
            raise self.fail(f"{command_path}.options[{index}].name", "missing")
        path = f"{command_path}.options.{name}"
        rule = "is not a valid option name (a-z, 0-9, '-', '_'; 32 max)"
        self.string(f"{path}.name", name, _OPTION_NAME, rule)
        if name in RESERVED_OPTIONS:
            raise self.fail(f"{path}.name", f"'{name}' is reserved for the prompt itself")
        self.check_keys(path, table, _OPTION_KEYS)
        aliases = tuple(self.string_list(f"{path}.aliases", table.get("aliases", [])))
        for alias in aliases:
            self.string(f"{path}.aliases", alias, _OPTION_NAME, rule)
        kind = table.get("type")
        if kind not in get_args(OptionType):
            known = ", ".join(get_args(OptionType))
            raise self.fail(f"{path}.type", f"unknown type '{kind}' (use one of {known})")
        description = self.description(f"{path}.description", table.get("description"))
        if kind == "model":
            for key in ("field", "choices", "minimum", "maximum", "default"):
                if key in table:
                    raise self.fail(f"{path}.{key}", "not used by a model option (see 'models')")
            return OptionSpec(name, aliases, "", "model", description, models)
        if "field" not in table:
            raise self.fail(f"{path}.field", "missing (the model input field this option sets)")
        field_name = table["field"]
        if field_name != OUTPUTS_FIELD:
            self.string(f"{path}.field", field_name, _FIELD_NAME, "is not a valid input field name")
        if field_name == OUTPUTS_FIELD and kind != "int":
            raise self.fail(f"{path}.type", f"an option on '{OUTPUTS_FIELD}' must be an int")
        choices: tuple[str, ...] = ()
        if kind == "choice":
            if "choices" not in table:
                raise self.fail(f"{path}.choices", "missing (a choice option needs choices)")
            choices = tuple(self.string_list(f"{path}.choices", table["choices"]))
            if not choices or len(choices) > MAX_CHOICES:
                raise self.fail(f"{path}.choices", f"needs 1 to {MAX_CHOICES} choices")
        elif "choices" in table:
            raise self.fail(f"{path}.choices", "only a 'choice' option has choices")
        minimum = table.get("minimum")
        maximum = table.get("maximum")
        for key, bound in (("minimum", minimum), ("maximum", maximum)):
            if bound is None:
                continue
            if kind not in ("int", "float"):
                raise self.fail(f"{path}.{key}", "only int and float options have bounds")
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise self.fail(f"{path}.{key}", "must be a number")
            if kind == "int" and not float(bound).is_integer():
                raise self.fail(f"{path}.{key}", "must be a whole number for an int option")
        if minimum is not None and maximum is not None and minimum > maximum:
            raise self.fail(path, f"minimum {minimum} is above maximum {maximum}")
        spec = OptionSpec(
            name, aliases, field_name, kind, description, choices, minimum, maximum, None
        )
        default = table.get("default")
        if default is not None:
            problem = default_problem(spec, default)
            if problem:
                raise self.fail(f"{path}.default", problem)
            spec = OptionSpec(
                name, aliases, field_name, kind, description, choices, minimum, maximum, default
            )
        return spec


def default_problem(spec: OptionSpec, value: Any) -> str | None:
    """Why `value` cannot be the default of `spec`, or None when it can."""
    expected: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "choice": (str,),
    }
    if isinstance(value, bool) != (spec.type == "bool") or not isinstance(
        value, expected[spec.type]
    ):
        return f"must be a value of type '{spec.type}'"
    if spec.type == "choice" and value not in spec.choices:
        return f"'{value}' is not one of the choices"
    if spec.minimum is not None and value < spec.minimum:
        return f"{value} is below the minimum {format_number(spec.minimum)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"{value} is above the maximum {format_number(spec.maximum)}"
    return None


@functools.cache
def default_catalog() -> Catalog:
    """The built-in commands and models (immutable, so one shared instance is safe)."""
    return _Loader(_BUILTIN_SOURCE).build({})


def load_catalog(path: Path | str | None) -> Catalog:
    """The built-ins, with `path` (a conjure.toml) merged over them; None means built-ins only.

    Top-level tables other than [models] and [commands] (e.g. [quotas]) belong to other readers.
    """
    if path is None:
        return default_catalog()
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise CatalogError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from None
    return _Loader(source).build(raw)
