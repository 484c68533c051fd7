"""Loading the catalog: conjure.toml merged over the built-ins, checked by the pydantic models below
and turned into specs, or a CatalogError naming the file and the key at fault, e.g.
`conjure.toml: commands.imagine.model: unknown model 'flx'`.

Each model checks one table: `RawModel` a [models.KEY], `RawCommand` a [commands.NAME] with its
`RawOption`s. `_Loader.validate` turns pydantic's first error into that one-line message.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Self, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from bot.catalog.builtin import BUILTIN
from bot.catalog.files import DEFAULT_ACCEPT, DEFAULT_MAX_MB, MIB, base_type
from bot.catalog.specs import (
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    DEFAULT_MAX_OUTPUT_TOKENS,
    FILE_TYPES,
    MAX_CHOICES,
    MAX_DESCRIPTION,
    OUTPUTS_FIELD,
    RESERVED_COMMANDS,
    RESERVED_OPTIONS,
    TRANSLATORS,
    Catalog,
    CatalogError,
    CommandSpec,
    Followups,
    ImageFollowup,
    Kind,
    ModelSpec,
    OptionSpec,
    OptionType,
    Price,
    PromptType,
    Route,
    format_number,
)
from bot.toml_file import TomlFileError, read_toml

# --------------------------------------------------------------------------- value types


class _Fault(ValueError):
    """A broken rule blamed on the key `at` below the table checked, so a rule across fields
    (checked once each is valid) still points at the one to fix."""

    def __init__(self, message: str, *at: str | int) -> None:
        super().__init__(message)
        self.at = at


def _one_of(literal: Any) -> str:
    *rest, last = get_args(literal)
    return f"{', '.join(rest)} or {last}"


def _did_you_mean(word: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _text(value: Any) -> Any:
    """Blank text says nothing, so it is refused like a number or a table would be."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _matching(pattern: str, rule: str) -> Callable[[str], str]:
    """A check that all of a string matches `pattern`, saying `'<value>' <rule>` when not."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"'{value}' {rule}")
        return value

    return check


def _string_list(value: Any) -> Any:
    """Checked as a whole: the message names the list, which is one setting."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError("must be an array of non-empty strings")
    if len(set(value)) != len(value):
        raise ValueError("has duplicates")
    return value


def _description(text: str) -> str:
    if len(text.strip()) > MAX_DESCRIPTION:
        raise ValueError(f"at most {MAX_DESCRIPTION} characters (Discord's limit)")
    return text.strip()


def _prompt_label(label: str) -> str:
    """Discord describes the prompt option as "The <label>", in at most 100 characters."""
    if len(f"The {label}") > MAX_DESCRIPTION:
        limit = MAX_DESCRIPTION - len("The ")
        raise ValueError(f"at most {limit} characters (Discord shows it as 'The <label>')")
    return label


def _translator(name: str) -> str:
    if name not in TRANSLATORS:
        raise ValueError(f"unknown translator '{name}' (known: {', '.join(sorted(TRANSLATORS))})")
    return name


def _json_only(value: Any, *at: str | int) -> Any:
    """Inputs go to Replicate as JSON, which has no dates or times (TOML has them)."""
    if isinstance(value, dt.date | dt.time):
        raise _Fault("dates and times cannot be sent to Replicate; use a string", *at)
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            _json_only(item, *at, key)
    return value


LONGEST_RUN = 24 * 3600.0  # seconds: the most expected_seconds and max_seconds may be
_FIELD = r"[A-Za-z_][A-Za-z0-9_]*"
_OWNER_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
_is_field = _matching(_FIELD, "is not a valid input field name")
_is_input = _matching(f"{_FIELD}|{OUTPUTS_FIELD}", "is not a valid input field name")
_is_option = _matching(  # also valid for Discord
    r"[a-z0-9][a-z0-9_-]{0,31}", "is not a valid option name (a-z, 0-9, '-', '_'; 32 max)"
)

_Text = Annotated[str, BeforeValidator(_text)]
_Stripped = Annotated[_Text, AfterValidator(lambda text: text.strip())]
_Description = Annotated[_Text, AfterValidator(_description)]
_FieldName = Annotated[_Text, AfterValidator(_is_field)]
_Target = Annotated[str, AfterValidator(_text), AfterValidator(_is_field)]
_Input = Annotated[_Text, AfterValidator(_is_input)]
_Ref = Annotated[_Stripped, AfterValidator(_matching(f"{_OWNER_NAME}(:.*)?", "is not owner/name"))]
_Names = Annotated[list[str], BeforeValidator(_string_list)]
_OptionNames = Annotated[_Names, AfterValidator(lambda names: [_is_option(n) for n in names])]
_Usd = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Bound = Annotated[float, Field(allow_inf_nan=False)]


# --------------------------------------------------------------------------- tables


class _Table(BaseModel):
    """A TOML table: an unknown key is refused (a typo must not pass unseen), and values are taken
    as written, never coerced ("1" is not a number, 1 is not true)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Toggle(BaseModel):
    """`enabled` alone, read first: a disabled table is not checked any further."""

    model_config = ConfigDict(strict=True)
    enabled: bool = True


class _OptionEntry(_Toggle):
    """What merging and filtering options need, before an option is checked as a whole."""

    name: str = Field(description="every option needs a name")


class _Options(BaseModel):
    options: list[_OptionEntry] = Field([], description="[[commands.NAME.options]]")


TOP_LEVEL_TABLES = ("models", "commands", "quotas")
"""conjure.toml's tables: [quotas] is read by bot.quotas.limits; anything else is a mistake."""


class _File(BaseModel):
    """What the catalog reads of conjure.toml; [quotas] belongs to bot.quotas.limits."""

    model_config = ConfigDict(strict=True)
    models: dict[str, dict[str, Any]] = {}
    commands: dict[str, dict[str, Any]] = {}


class RawModel(_Table):
    """One [models.KEY], merged over the built-in model of that key if there is one."""

    enabled: bool = True
    ref: _Ref = Field(description="e.g. 'black-forest-labs/flux-schnell'")
    route: Route | None = None
    kind: Kind = Field(description=_one_of(Kind))
    description: _Description | None = None
    price_per_output: _Usd | None = None
    price_per_second: _Usd | None = None
    # At most a day: Replicate stops a run long before, and a deadline far beyond it would not
    # be a Cancel-After Replicate can read (Go's durations end near 292 years).
    expected_seconds: float = Field(10.0, gt=0, le=LONGEST_RUN, allow_inf_nan=False)
    max_seconds: float | None = Field(None, gt=0, le=LONGEST_RUN, allow_inf_nan=False)
    price_per_million_input_tokens: _Usd | None = None
    price_per_million_output_tokens: _Usd | None = None
    max_output_tokens: int = Field(DEFAULT_MAX_OUTPUT_TOKENS, ge=1)
    expected_output_tokens: int | None = Field(None, ge=1)
    outputs_field: _FieldName | None = None
    defaults: Annotated[dict[str, Any], AfterValidator(_json_only)] = Field(
        {}, description="input values sent with every run"
    )
    rename: dict[_FieldName, _Target] = Field({}, description='command field = "model field"')
    translate: dict[_FieldName, Annotated[str, AfterValidator(_translator)]] = Field(
        {}, description='command field = "translator"'
    )

    @field_validator("outputs_field", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """`""` clears a built-in's outputs_field, for a model that makes one output a run."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _route_fits_ref(self) -> Self:
        """Only the version route takes a version; left out, the route follows from the ref."""
        _, sep, version = self.ref.partition(":")
        self.route = self.route or ("version" if sep else "official")
        if self.route == "version" and not re.fullmatch(r"[0-9a-f]{64}", version):
            raise _Fault("route 'version' needs 'owner/name:<64-hex version id>'", "ref")
        if self.route != "version" and sep:
            raise _Fault(f"route '{self.route}' takes 'owner/name' without a version", "ref")
        return self

    @model_validator(mode="after")
    def _has_price(self) -> Self:
        """Budgets are only as good as prices: a forgotten price must not mean free."""
        prices = (
            self.price_per_output,
            self.price_per_second,
            self.price_per_million_input_tokens,
            self.price_per_million_output_tokens,
        )
        if all(price is None for price in prices):
            missing = (
                "missing: set price_per_output, price_per_second or "
                "price_per_million_input_tokens and price_per_million_output_tokens"
            )
            never_free = "a model is never free by default; write 0 if it really is"
            raise _Fault(f"{missing} ({never_free})", "price_per_output")
        return self

    @model_validator(mode="after")
    def _tokens_priced_both_ways(self) -> Self:
        """A per-token model is billed for its input and its output: one price left out would
        make that half free."""
        given = {
            "price_per_million_input_tokens": self.price_per_million_input_tokens,
            "price_per_million_output_tokens": self.price_per_million_output_tokens,
        }
        missing = [name for name, usd in given.items() if usd is None]
        if len(missing) == 1:
            other = next(name for name in given if name not in missing)
            raise _Fault(f"missing: set it with {other} (write 0 if it really is free)", *missing)
        return self

    @model_validator(mode="after")
    def _expected_tokens_fit(self) -> Self:
        """An answer stops at `max_output_tokens`: a typical one cannot be longer."""
        expected = self.expected_output_tokens
        if expected is not None and expected > self.max_output_tokens:
            raise _Fault(
                f"must be at most max_output_tokens ({self.max_output_tokens}): "
                "an answer is stopped there",
                "expected_output_tokens",
            )
        return self

    @model_validator(mode="after")
    def _ceiling_fits(self) -> Self:
        """Replicate stops a run at `max_seconds`: below the expected time most runs would be
        stopped before they finish, and billed for it."""
        if self.max_seconds is not None and self.max_seconds < self.expected_seconds:
            expected = format_number(self.expected_seconds)
            raise _Fault(
                f"must be at least expected_seconds ({expected}): a run is stopped there",
                "max_seconds",
            )
        return self

    def to_spec(self, key: str) -> ModelSpec:
        price = Price(
            self.price_per_output,
            self.price_per_second,
            self.expected_seconds,
            self.max_seconds,
            self.price_per_million_input_tokens,
            self.price_per_million_output_tokens,
            self.max_output_tokens,
            # Left out: a typical answer, or the longest allowed when that is shorter.
            self.expected_output_tokens
            or min(DEFAULT_EXPECTED_OUTPUT_TOKENS, self.max_output_tokens),
        )
        return ModelSpec(
            key=key,
            ref=self.ref,
            route=self.route or "official",  # always set by _route_fits_ref
            kind=self.kind,
            price=price,
            description=self.description or self.ref,
            outputs_field=self.outputs_field,
            input_defaults=self.defaults,
            rename=self.rename,
            translate=self.translate,
        )


class RawOption(_Table):
    """One option of a command, merged over the built-in option of that name."""

    enabled: bool = True
    name: Annotated[_Text, AfterValidator(_is_option)]
    aliases: _OptionNames = []
    type: OptionType = Field(description=f"unknown type 'None'; use one of {_one_of(OptionType)}")
    description: _Description = Field(description="a non-empty string of at most 100 characters")
    field: _Input | None = None
    choices: _Names | None = None
    minimum: _Bound | None = None
    maximum: _Bound | None = None
    default: Any = None
    models: _Names | None = None
    accept: _Names | None = None  # file options: content types taken
    max_mb: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)  # file options
    model: str | None = None  # file options: the model run when a file is given

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_OPTIONS:
            raise ValueError(f"'{name}' is reserved for the prompt itself")
        return name

    @field_validator("models")
    @classmethod
    def _models_are_known(cls, keys: list[str] | None, info: ValidationInfo) -> list[str] | None:
        """Known models only (a typo would silently refuse the option everywhere); a disabled
        one is simply left out."""
        models, disabled = info.context or ({}, ())
        for index, key in enumerate(keys or ()):
            if key not in models and key not in disabled:
                raise _Fault(f"unknown model '{key}'{_did_you_mean(key, models)}", index)
        return keys

    @model_validator(mode="after")
    def _field_fits(self) -> Self:
        """A model option sets no input (its choices are the command's `models`); others do."""
        for key in ("field", "choices", "minimum", "maximum", "default", "models"):
            if self.type == "model" and key in self.model_fields_set:
                raise _Fault("not used by a model option (see 'models')", key)
        if self.type != "model" and self.field is None:
            raise _Fault("missing (the model input field this option sets)", "field")
        if self.field == OUTPUTS_FIELD and self.type != "int":
            raise _Fault(f"an option on '{OUTPUTS_FIELD}' must be an int", "type")
        return self

    @field_validator("choices")
    @classmethod
    def _choices_fit_discord(cls, choices: list[str] | None) -> list[str] | None:
        """Discord refuses a choice over 100 characters, and with it every command's sync."""
        for index, choice in enumerate(choices or ()):
            if len(choice) > MAX_DESCRIPTION:
                raise _Fault(f"at most {MAX_DESCRIPTION} characters (Discord's limit)", index)
        return choices

    @field_validator("accept")
    @classmethod
    def _content_types(cls, accept: list[str]) -> list[str]:
        if not accept:
            raise ValueError("needs at least one content type, like 'image/png'")
        for index, mime in enumerate(accept):
            kind, slash, subtype = base_type(mime).partition("/")
            if not (kind and slash and subtype) or base_type(mime) != mime.strip().lower():
                raise _Fault(f"'{mime}' is not a content type like 'image/png'", index)
        return [base_type(mime) for mime in accept]

    @field_validator("model")
    @classmethod
    def _model_known(cls, key: str, info: ValidationInfo) -> str:
        if problem := _model_problem(key, info):
            raise ValueError(problem)
        return key

    @model_validator(mode="after")
    def _file_fits(self) -> Self:
        """accept, max_mb and model belong to file options (type image or audio) only."""
        for key in ("accept", "max_mb", "model"):
            if self.type not in FILE_TYPES and key in self.model_fields_set:
                raise _Fault("only image and audio options take files", key)
        if self.type in FILE_TYPES and self.default is not None:
            raise _Fault("a file option has no default", "default")
        return self

    @model_validator(mode="after")
    def _choices_fit(self) -> Self:
        """Discord shows choices as a menu of at most 25; other types take what is typed."""
        if self.type == "choice" and self.choices is None:
            raise _Fault("missing (a choice option needs choices)", "choices")
        if self.type == "choice" and not 1 <= len(self.choices or ()) <= MAX_CHOICES:
            raise _Fault(f"needs 1 to {MAX_CHOICES} choices", "choices")
        if self.type != "choice" and self.choices is not None:
            raise _Fault("only a 'choice' option has choices", "choices")
        return self

    @model_validator(mode="after")
    def _bounds_fit(self) -> Self:
        for key in ("minimum", "maximum"):
            bound = getattr(self, key)
            if bound is not None and self.type not in ("int", "float"):
                raise _Fault("only int and float options have bounds", key)
            if bound is not None and self.type == "int" and not bound.is_integer():
                raise _Fault("must be a whole number for an int option", key)
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and low > high:
            raise _Fault(f"minimum {format_number(low)} is above maximum {format_number(high)}")
        return self

    @model_validator(mode="after")
    def _default_fits(self) -> Self:
        """A default is used as if typed, so it must be a value the option would accept."""
        value, kind, low, high = self.default, self.type, self.minimum, self.maximum
        types = {"str": str, "choice": str, "int": int, "float": int | float, "bool": bool}
        if value is None or kind == "model" or kind in FILE_TYPES:
            return self
        if isinstance(value, bool) != (kind == "bool") or not isinstance(value, types[kind]):
            raise _Fault(f"must be a value of type '{kind}'", "default")
        if kind == "choice" and value not in (self.choices or ()):
            raise _Fault(f"'{value}' is not one of the choices", "default")
        if low is not None and value < low:
            raise _Fault(f"{value} is below the minimum {format_number(low)}", "default")
        if high is not None and value > high:
            raise _Fault(f"{value} is above the maximum {format_number(high)}", "default")
        return self

    def to_spec(self, models: tuple[str, ...]) -> OptionSpec:
        """A model option chooses among `models`; an int option keeps int bounds (4, not 4.0)."""
        if self.type == "model":
            return OptionSpec(self.name, tuple(self.aliases), "", "model", self.description, models)
        whole = int if self.type == "int" else float
        if self.type in FILE_TYPES:
            megabytes = self.max_mb if self.max_mb is not None else DEFAULT_MAX_MB[self.type]
            return OptionSpec(
                name=self.name,
                aliases=tuple(self.aliases),
                field=self.field or "",
                type=self.type,
                description=self.description,
                accept=tuple(self.accept or DEFAULT_ACCEPT[self.type]),
                max_bytes=int(megabytes * MIB),
                model=self.model,
            )
        return OptionSpec(
            name=self.name,
            aliases=tuple(self.aliases),
            field=self.field or "",
            type=self.type,
            description=self.description,
            choices=tuple(self.choices or ()),
            minimum=None if self.minimum is None else whole(self.minimum),
            maximum=None if self.maximum is None else whole(self.maximum),
            default=self.default,
            # Only the command's own (enabled) models: disabling sdxl leaves --no for none.
            models=tuple(key for key in self.models or () if key in models),
        )


def _model_problem(key: str, info: ValidationInfo) -> str | None:
    """Why a command cannot run model `key`; the context holds the enabled and disabled keys."""
    models, disabled = info.context
    if key in disabled:
        return f"model '{key}' is disabled"
    if key not in models:
        return f"unknown model '{key}'{_did_you_mean(key, models)}"
    return None


_IMAGE_FOLLOWUPS = ("variations", "upscale")


def _on_or_off(value: Any) -> Any:
    """`false` turns an image follow-up off; `true` cannot say which model to use."""
    if value is False:
        return None
    if value is True:
        raise ValueError("must be a table (model, image_field, ...) or false to turn it off")
    return value


class RawImageFollowup(_Table):
    """[commands.NAME.followups] variations or upscale: which model gets the image, and how."""

    model: _Text = Field(description="the key of an image model under [models]")
    image_field: _FieldName = Field(description="the model input the image goes to")
    strength_field: _FieldName | None = None
    strength: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    inputs: Annotated[dict[_FieldName, Any], AfterValidator(_json_only)] = Field(
        {}, description="other inputs sent to the model"
    )

    @field_validator("model")
    @classmethod
    def _model_makes_images(cls, key: str, info: ValidationInfo) -> str:
        if problem := _model_problem(key, info):
            raise ValueError(problem)
        kind = info.context[0][key].kind
        if kind != "image":
            raise ValueError(f"model '{key}' makes {kind}, not images")
        return key

    @model_validator(mode="after")
    def _fields_fit(self) -> Self:
        """A strength needs the input it goes to, and `inputs` cannot also set the image or it."""
        if (self.strength is None) != (self.strength_field is None):
            missing = "strength" if self.strength is None else "strength_field"
            raise _Fault("strength and strength_field go together", missing)
        for name in (self.image_field, self.strength_field):
            if name is not None and name in self.inputs:
                raise _Fault(f"'{name}' is set by the follow-up itself", "inputs", name)
        return self

    def to_spec(self) -> ImageFollowup:
        return ImageFollowup(
            self.model, self.image_field, self.strength_field, self.strength, self.inputs
        )


_ImageFollowupTable = Annotated[RawImageFollowup | None, BeforeValidator(_on_or_off)]


class RawFollowups(_Table):
    """[commands.NAME.followups]: the buttons a result offers (each one may be left out)."""

    reroll: bool = False
    variations: _ImageFollowupTable = None
    upscale: _ImageFollowupTable = None

    def to_spec(self) -> Followups:
        return Followups(
            reroll=self.reroll,
            variations=self.variations.to_spec() if self.variations else None,
            upscale=self.upscale.to_spec() if self.upscale else None,
        )


class RawCommand(_Table):
    """One [commands.NAME], merged over its built-in, its enabled options keyed by name (so error
    locations read like the TOML: `options.seed.type`); validated with (enabled models, disabled
    model keys) as context."""

    enabled: bool = True
    model: _Text = Field(description="the key of a model under [models]")
    models: _Names = []
    description: _Description | None = None
    prompt_field: _FieldName = "prompt"
    prompt_label: Annotated[_Stripped, AfterValidator(_prompt_label)] = "prompt"
    prompt_type: PromptType = "text"
    options: dict[str, RawOption] = {}
    followups: RawFollowups | None = None

    @field_validator("model")
    @classmethod
    def _model_is_known(cls, key: str, info: ValidationInfo) -> str:
        if problem := _model_problem(key, info):
            raise ValueError(problem)
        return key

    @field_validator("models")
    @classmethod
    def _models_are_known(cls, keys: list[str], info: ValidationInfo) -> list[str]:
        for index, key in enumerate(keys):
            if problem := _model_problem(key, info):
                raise _Fault(problem, index)
        return keys

    @model_validator(mode="after")
    def _options_fit(self) -> Self:
        """Each spelling picks one option and each input is set once, so a command line never
        means two things; Discord allows 25 choices and 25 options, one being the prompt."""
        if len(self.allowed_models()) > MAX_CHOICES:
            raise _Fault(f"at most {MAX_CHOICES} models (Discord's limit)", "models")
        spellings: dict[str, str] = {}
        fields = {self.prompt_field: ""}
        for option in (options := self.option_specs()):
            for spelling in (option.name, *option.aliases):
                if spelling in spellings:
                    used = f"--{spelling} is already used by --{spellings[spelling]}"
                    raise _Fault(used, "options", option.name)
                spellings[spelling] = option.name
            either = option.is_file and option.field == self.prompt_field  # a URL or a file
            if option.type != "model" and option.field in fields and not either:
                by = fields[option.field]
                used = f"is already set by --{by}" if by else "is the prompt field"
                raise _Fault(f"'{option.field}' {used}", "options", option.name, "field")
            fields[option.field] = option.name
        if sum(option.type == "model" for option in options) > 1:
            raise _Fault("only one option may choose the model", "options")
        if len(options) > MAX_CHOICES - 1:
            raise _Fault(f"at most {MAX_CHOICES - 1} options (Discord's limit)", "options")
        return self

    @model_validator(mode="after")
    def _followups_fit(self, info: ValidationInfo) -> Self:
        """Variations and Upscale act on an image, so every model the command runs makes one."""
        models = info.context[0]
        for key in _IMAGE_FOLLOWUPS:
            if self.followups is None or getattr(self.followups, key) is None:
                continue
            for name in self.allowed_models():
                if models[name].kind != "image":
                    kind = models[name].kind
                    problem = f"the command's model '{name}' makes {kind}, not images"
                    raise _Fault(f"{problem}; set {key} = false", "followups", key)
        return self

    def allowed_models(self) -> tuple[str, ...]:
        """`models`, with the default model first unless listed: it is always allowed."""
        return tuple(self.models) if self.model in self.models else (self.model, *self.models)

    def option_specs(self) -> list[OptionSpec]:
        """The options, plus --model when there is a choice of models and no option makes it."""
        allowed = self.allowed_models()
        options = [option.to_spec(allowed) for option in self.options.values()]
        if len(allowed) > 1 and not any(option.type == "model" for option in options):
            options.append(OptionSpec("model", (), "", "model", "Which model to use", allowed))
        return options

    def to_spec(self, name: str, models: Mapping[str, ModelSpec]) -> CommandSpec:
        return CommandSpec(
            name=name,
            description=self.description or models[self.model].description,
            model=self.model,
            prompt_field=self.prompt_field,
            options=tuple(self.option_specs()),
            models=self.allowed_models(),
            prompt_label=self.prompt_label,
            prompt_type=self.prompt_type,
            followups=self.followups.to_spec() if self.followups else Followups(),
        )


# --------------------------------------------------------------------------- errors

_MESSAGES = {
    "missing": "missing",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "float_type": "must be a number",
    "finite_number": "must be a number",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "list_type": "must be an array of tables",  # options are the only plain arrays
}


def _schema_at(schema: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel]:
    """The model that checked the table at `loc` (for its keys and their hints)."""
    for part in loc:
        field = schema.model_fields.get(part) if isinstance(part, str) else None
        inner = [t for t in get_args(field.annotation) if isinstance(t, type)] if field else []
        schema = next((t for t in inner if issubclass(t, BaseModel)), schema)
    return schema


def _message(schema: type[BaseModel], error: ErrorDetails) -> str:
    """Pydantic's error in the catalog's words; our own rules' messages are used as they are."""
    kind, loc, ctx, given = error["type"], error["loc"], error.get("ctx", {}), error["input"]
    owner = _schema_at(schema, loc[:-1])
    key = str(loc[-1]) if loc else ""
    field = owner.model_fields.get(key)
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "extra_forbidden":
        return f"unknown key{_did_you_mean(key, owner.model_fields)}"
    if kind == "literal_error":
        return f"unknown {key.replace('_', ' ')} '{given}' (use {ctx['expected']})"
    if kind in ("greater_than_equal", "greater_than"):
        bound = f"at least {ctx['ge']:g}" if "ge" in ctx else f"above {ctx['gt']:g}"
        return f"must be {bound}, not {format_number(given)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']:g}, not {format_number(given)}"
    hint = f" ({field.description})" if field and field.description else ""
    return _MESSAGES[kind] + hint if kind in _MESSAGES else error["msg"]


def _dotted(loc: tuple[str | int, ...]) -> str:
    """`.models[1]` or `.options.seed.type`, as written in TOML."""
    parts = (f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return "".join(part for part in parts if part != ".[key]")  # pydantic's mark for a bad key


# --------------------------------------------------------------------------- merging


def _merge_tables(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Override wins key by key; nested tables merge, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = _merge_tables(merged[key], value)
        merged[key] = value
    return merged


def _merge_model(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new price replaces the old (never adds to it); a new ref alone has its route inferred."""
    prices = {
        "price_per_output",
        "price_per_second",
        "price_per_million_input_tokens",
        "price_per_million_output_tokens",
    }
    dropped = prices if override.keys() & prices else set()
    dropped |= {"route"} if "ref" in override and "route" not in override else set()
    return _merge_tables({k: v for k, v in base.items() if k not in dropped}, override)


def _merge_options(base: list[Mapping[str, Any]], override: list[Mapping[str, Any]]) -> list[Any]:
    """By name: a known name updates that option, a new one is appended. Giving `type` replaces
    the option, so stale bounds or choices cannot linger."""
    merged = {option["name"]: dict(option) for option in base}
    for option in override:
        old = merged.get(option["name"], {})
        merged[option["name"]] = dict(option) if "type" in option else {**old, **option}
    return list(merged.values())


def _builtin_followups_that_fit(
    table: Mapping[str, Any],
    file_table: Mapping[str, Any],
    models: Mapping[str, ModelSpec],
    disabled: Collection[str],
) -> Mapping[str, Any]:
    """A built-in image follow-up is quietly turned off when the file disabled its model (as a
    built-in list loses that model) or made the command run a model that makes no images; one
    the file itself writes is checked as written."""
    followups = table.get("followups")
    if not isinstance(followups, Mapping):
        return table
    written = file_table.get("followups")
    written = written if isinstance(written, Mapping) else {}
    listed = table.get("models")
    runs = [table.get("model"), *(listed if isinstance(listed, list) else [])]
    not_images = any(
        isinstance(key, str) and key in models and models[key].kind != "image" for key in runs
    )
    off = {
        key: False
        for key, value in followups.items()
        if key in _IMAGE_FOLLOWUPS
        and key not in written
        and isinstance(value, Mapping)
        and (value.get("model") in disabled or not_images)
    }
    return {**table, "followups": {**followups, **off}} if off else table


# --------------------------------------------------------------------------- loading

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True)
class _Loader:
    """Merges a parsed file over the built-ins and validates the result, or names `source`, the
    key and the problem."""

    source: str

    def fail(self, path: str, message: str) -> CatalogError:
        return CatalogError(f"{self.source}: {path.lstrip('.')}: {message}")

    def validate(self, schema: type[_M], data: Any, path: str, context: Any = None) -> _M:
        """`data` checked by `schema`; an unknown key is reported first, as the likely cause of
        what is missing."""
        try:
            return schema.model_validate(data, context=context)
        except ValidationError as exc:
            error = min(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
            at = getattr(error.get("ctx", {}).get("error"), "at", ())
            raise self.fail(path + _dotted((*error["loc"], *at)), _message(schema, error)) from None

    def enabled(self, path: str, table: Mapping[str, Any]) -> bool:
        return self.validate(_Toggle, table, path).enabled

    def check_name(self, path: str, name: str, pattern: str, rule: str) -> None:
        if not re.fullmatch(pattern, name):
            raise self.fail(path, f"'{name}' {rule}")

    def options(self, path: str, options: Any) -> list[dict[str, Any]]:
        """`options` once each is a table with a name (merging needs it) and a true or false
        `enabled` (filtering needs it); `RawOption` checks the rest once merged."""
        self.validate(_Options, {"options": options}, path)
        return options

    def build(self, raw: Mapping[str, Any]) -> Catalog:
        for key, value in raw.items():
            if key not in TOP_LEVEL_TABLES:  # e.g. [comands.paint]: never silently dropped
                what = "table" if isinstance(value, Mapping) else "key"
                hint = _did_you_mean(key, TOP_LEVEL_TABLES) or (
                    " (conjure.toml has [models], [commands] and [quotas])"
                )
                raise self.fail(key, f"unknown {what}{hint}")
        file = self.validate(_File, raw, "")
        tables = dict(BUILTIN["models"])
        for key, table in file.models.items():
            tables[key] = _merge_model(tables[key], table) if key in tables else table
        enabled = {key: t for key, t in tables.items() if self.enabled(f"models.{key}", t)}
        disabled = tables.keys() - enabled.keys()
        models = {key: self.model(key, table) for key, table in enabled.items()}
        commands = {}
        for name, table in {**BUILTIN["commands"], **file.commands}.items():
            if name in BUILTIN["commands"]:
                table = self.merge_command(name, file.commands.get(name, {}))
            if not self.enabled(f"commands.{name}", table):
                continue
            if "models" not in file.commands.get(name, {}) and "models" in table:
                # A built-in list quietly loses models the file disabled.
                table = {**table, "models": [m for m in table["models"] if m not in disabled]}
            if name in BUILTIN["commands"]:
                written = file.commands.get(name, {})
                table = _builtin_followups_that_fit(table, written, models, disabled)
            commands[name] = self.command(name, table, (models, disabled))
        return Catalog(commands=MappingProxyType(commands), models=MappingProxyType(models))

    def merge_command(self, name: str, override: Mapping[str, Any]) -> dict[str, Any]:
        base = BUILTIN["commands"][name]
        merged = _merge_tables(base, override)
        followups = override.get("followups")
        if isinstance(followups, Mapping) and isinstance(merged.get("followups"), Mapping):
            # Naming another model replaces the built-in follow-up: its fields were for its model.
            chosen = {
                key: dict(value)
                for key, value in followups.items()
                if isinstance(value, Mapping) and "model" in value
            }
            merged["followups"] = {**merged["followups"], **chosen}
        if "options" in override:
            options = self.options(f"commands.{name}", override["options"])
            merged["options"] = _merge_options(base.get("options", []), options)
        return merged

    def model(self, key: str, table: Mapping[str, Any]) -> ModelSpec:
        path, rule = f"models.{key}", "is not a valid model key (a-z, 0-9, '.', '-', '_')"
        self.check_name(path, key, r"[a-z0-9][a-z0-9._-]{0,63}", rule)
        return self.validate(RawModel, table, path).to_spec(key)

    def command(self, name: str, table: Mapping[str, Any], known: tuple[Any, Any]) -> CommandSpec:
        path, rule = f"commands.{name}", "is not a valid command name (a-z, 0-9, '-', '_'; 31 max)"
        self.check_name(path, name, r"[a-z0-9_-]{1,31}", rule)  # Slack's (32 with the slash)
        if name in RESERVED_COMMANDS:
            raise self.fail(path, f"'/{name}' is Conjure's own admin command")
        options: dict[str, Any] = {}
        for option in self.options(path, table.get("options", [])):
            if not option.get("enabled", True):
                continue
            if (key := option["name"]) in options:  # a merged list has each name once
                raise self.fail(f"{path}.options.{key}", f"--{key} is already used by --{key}")
            options[key] = option
        raw = self.validate(RawCommand, {**table, "options": options}, path, known)
        return raw.to_spec(name, known[0])


@functools.cache
def default_catalog() -> Catalog:
    """The built-in commands and models (immutable, so one shared instance is safe)."""
    return _Loader("built-in catalog").build({})


def load_catalog(path: Path | str | None) -> Catalog:
    """The built-ins, with `path` (a conjure.toml) merged over them; None means built-ins only.

    [quotas] belongs to bot.quotas.limits; any other top-level table or key is refused (a typo
    such as [comands.paint] must not be dropped unseen).
    """
    if path is None:
        return default_catalog()
    source = str(path)
    try:
        raw = read_toml(path)
    except TomlFileError as exc:
        raise CatalogError(str(exc)) from None
    return _Loader(source).build(raw)
