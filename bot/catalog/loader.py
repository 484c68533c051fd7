"""Loading the catalog: conjure.toml merged over the built-ins, validated into specs, or a clear
CatalogError naming the file and the key."""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast, get_args

from bot.catalog.builtin import BUILTIN
from bot.catalog.specs import (
    MAX_CHOICES,
    MAX_DESCRIPTION,
    OUTPUTS_FIELD,
    RESERVED_COMMANDS,
    RESERVED_OPTIONS,
    TRANSLATORS,
    Catalog,
    CatalogError,
    CommandSpec,
    Kind,
    ModelSpec,
    OptionSpec,
    OptionType,
    Price,
    PromptType,
    Route,
    format_number,
)

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
