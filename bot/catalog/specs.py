"""The command catalog: which slash commands exist, which Replicate model each runs, its options.

Everything the adapters (Slack usage lines, Discord option lists) and the job service (model route,
price) need comes from here, so a `conjure.toml` can reshape the product without code changes.
The built-in catalog is written in the same raw form as the file and goes through the same
validation, so defaults and overrides can never disagree about what is legal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from bot.money import usd_to_micros

Route = Literal["official", "version", "deployment"]
Kind = Literal["image", "text", "transcript", "audio", "video"]
OptionType = Literal["str", "int", "float", "bool", "choice", "model", "image", "audio"]
FILE_TYPES = frozenset({"image", "audio"})  # option types whose value is a file (bot.inputs)
PromptType = Literal["text", "url"]

OUTPUTS_FIELD = "@outputs"
"""An option `field` meaning "whatever input field the chosen model counts its outputs in"."""

RESERVED_COMMANDS = frozenset({"conjure"})  # the admin command
RESERVED_OPTIONS = frozenset({"prompt"})  # Discord's own option for the prompt text
MAX_CHOICES = 25  # Discord's limit on choices per option
MAX_DESCRIPTION = 100  # Discord's limit on command and option descriptions


class CatalogError(Exception):
    """A bad `conjure.toml`; the message names the file and the key at fault."""


# --------------------------------------------------------------------------- specs


def _dec(value: float) -> Decimal:
    # str() first so 0.003 is exactly 0.003, not the binary float's long tail.
    return Decimal(str(value))


CEILING_FACTOR = 3
"""A by-the-second model without `max_seconds` is stopped at this many times its expected run
time: three times what the person was shown leaves room for honest slow runs (a long input, a
slow GPU) while a runaway is stopped, and a budget holds at most three estimates for a job while
it runs (what is not billed comes back when it ends)."""

MAX_TOKENS_FIELD = "max_tokens"
"""The logical input field bounding a language model's answer (the /ask `--max-tokens` option);
a model that names it otherwise says so with `rename`."""

TEMPLATE_TOKENS = 512
"""Tokens a per-token model's ceiling allows for the prompt template and default system prompt
that Replicate wraps around the input (Llama 3's header tokens and "You are a helpful assistant"
are a few dozen): the input is never counted below what Replicate can bill for it."""

DEFAULT_MAX_OUTPUT_TOKENS = 512
"""A per-token model's `max_output_tokens` when conjure.toml gives none (Llama 3's own default)."""

DEFAULT_EXPECTED_OUTPUT_TOKENS = 300
"""A per-token model's `expected_output_tokens` when conjure.toml gives none: a typical answer."""

BYTES_PER_TOKEN = 4
"""A typical token of English text, for estimates only; ceilings count one token per byte."""


def _text_bytes(value: Any) -> int:
    """The UTF-8 bytes of every string in an input (lists and objects included): a byte-level
    tokenizer never makes more tokens of a text than it has bytes."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, Mapping):
        return sum(_text_bytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_text_bytes(item) for item in value)
    return 0


def _count(value: Any) -> int | None:
    """A token count from Replicate's metrics, or None when it is absent or not a count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


@dataclass(frozen=True)
class TokenBudget:
    """What a per-token price needs of one run's input: how much text it sends and the most
    tokens it may write (`max_tokens`, always sent; see ModelSpec.build_input)."""

    text_bytes: int
    max_output_tokens: int

    @property
    def max_input_tokens(self) -> int:
        """The most input tokens Replicate can bill: one a byte, plus the template allowance."""
        return self.text_bytes + TEMPLATE_TOKENS

    @property
    def typical_input_tokens(self) -> int:
        """About one token per four bytes: what an estimate counts."""
        return -(-self.text_bytes // BYTES_PER_TOKEN)


@dataclass(frozen=True)
class Price:
    """What a model costs: per output, per second of hardware, per token, or (rarely) several
    added together.

    `expected_seconds` and `max_seconds` are per output, so a batch of four is estimated as four
    runs' worth of time and may run four times as long. `max_seconds` (default CEILING_FACTOR x
    `expected_seconds`) is where Replicate stops a by-the-second run (`Cancel-After`), so
    `ceiling_micros` is the most a run can cost: that is what a budget reserves, never the
    estimate, which is only what a person is shown.

    A per-token price (Replicate's official language models) charges input and output tokens
    per million. Its ceiling is every byte of the input as a token (plus TEMPLATE_TOKENS) and
    the run's `max_tokens`, which Conjure always sends (`max_output_tokens` when the person gave
    none) so Replicate stops the answer there; no deadline is needed. Its estimate is a quarter
    of a token a byte and `expected_output_tokens`. Per-token methods need the run's
    TokenBudget (ModelSpec.token_budget).
    """

    per_output_usd: float | None = None
    per_second_usd: float | None = None
    expected_seconds: float = 10.0
    max_seconds: float | None = None
    per_million_input_tokens_usd: float | None = None
    per_million_output_tokens_usd: float | None = None
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS

    @property
    def per_token(self) -> bool:
        """Whether any part of the price is per token."""
        return (
            self.per_million_input_tokens_usd is not None
            or self.per_million_output_tokens_usd is not None
        )

    @property
    def run_limit_seconds(self) -> float:
        """Seconds one output may run: `max_seconds`, else CEILING_FACTOR x expected."""
        if self.max_seconds is not None:
            return self.max_seconds
        return float(_dec(self.expected_seconds) * CEILING_FACTOR)

    def estimate_micros(self, outputs: int, tokens: TokenBudget | None = None) -> int:
        """What a run usually costs (expected seconds, typical tokens), in micro-dollars: what
        a person is shown."""
        total = self._usd(outputs, self.expected_seconds)
        if self.per_token:
            budget = self._budget(tokens)
            answer = min(self.expected_output_tokens, budget.max_output_tokens)
            total += self._tokens_usd(budget.typical_input_tokens, answer)
        return usd_to_micros(total)

    def ceiling_micros(self, outputs: int, tokens: TokenBudget | None = None) -> int:
        """The most a run can cost (stopped at `deadline_seconds`, or at `max_tokens`): what a
        budget reserves."""
        total = self._usd(outputs, self.run_limit_seconds)
        if self.per_token:
            budget = self._budget(tokens)
            total += self._tokens_usd(budget.max_input_tokens, budget.max_output_tokens)
        return usd_to_micros(total)

    def deadline_seconds(self, outputs: int) -> float | None:
        """When Replicate must stop the run (`Cancel-After`), or None for a per-output or
        per-token price, whose cost no run time can raise (`max_tokens` bounds an answer)."""
        if self.per_second_usd is None:
            return None
        return float(_dec(self.run_limit_seconds) * max(int(outputs), 1))

    def _usd(self, outputs: int, seconds: float) -> Decimal:
        outputs = max(int(outputs), 0)
        total = Decimal(0)
        if self.per_output_usd is not None:
            total += _dec(self.per_output_usd) * outputs
        if self.per_second_usd is not None:
            total += _dec(self.per_second_usd) * _dec(seconds) * outputs
        return total

    def _budget(self, tokens: TokenBudget | None) -> TokenBudget:
        if tokens is None:
            # Without the input the ceiling is unknown: refusing beats reserving too little.
            raise ValueError("a per-token price needs the run's TokenBudget")
        return tokens

    def _tokens_usd(self, input_tokens: int, output_tokens: int) -> Decimal:
        total = Decimal(0)
        if self.per_million_input_tokens_usd is not None:
            total += _dec(self.per_million_input_tokens_usd) * input_tokens / 1_000_000
        if self.per_million_output_tokens_usd is not None:
            total += _dec(self.per_million_output_tokens_usd) * output_tokens / 1_000_000
        return total

    def actual_micros(
        self,
        outputs: int,
        predict_time: float | None,
        *,
        tokens: TokenBudget | None = None,
        input_tokens: Any = None,
        output_tokens: Any = None,
        ran: bool = True,
    ) -> int:
        """What Replicate billed: outputs x price, plus `predict_time` x rate (0 when unknown),
        plus the token counts of `metrics` x their prices. A count Replicate did not report is
        charged at its bound (the ceiling's share), never guessed low, so a budget cannot pass
        Replicate's bill; a run that never ran (`ran` false: aborted, or ended with no time and
        no tokens reported) is charged no tokens."""
        total = Decimal(0)
        if self.per_output_usd is not None:
            total += _dec(self.per_output_usd) * max(int(outputs), 0)
        if self.per_second_usd is not None and predict_time is not None:
            seconds = predict_time if math.isfinite(predict_time) else 0.0
            total += _dec(self.per_second_usd) * _dec(max(seconds, 0.0))
        if self.per_token and ran:
            used_in, used_out = _count(input_tokens), _count(output_tokens)
            if used_in is None or used_out is None:
                budget = self._budget(tokens)
                used_in = budget.max_input_tokens if used_in is None else used_in
                used_out = budget.max_output_tokens if used_out is None else used_out
            total += self._tokens_usd(used_in, used_out)
        return usd_to_micros(total)


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
        if self.price.per_token:
            # Always sent: it is what stops the answer, so what bounds the cost.
            result.setdefault(self.max_tokens_field, self.price.max_output_tokens)
        return result

    @property
    def max_tokens_field(self) -> str:
        """The model's own name for `max_tokens`."""
        return self.rename.get(MAX_TOKENS_FIELD, MAX_TOKENS_FIELD)

    def token_budget(self, input: Mapping[str, Any]) -> TokenBudget | None:
        """What a per-token price needs of a run's Replicate `input`, or None when the model is
        not priced per token. A `max_tokens` that is not a positive whole number (a job saved
        before it was always sent) counts as the model's default."""
        if not self.price.per_token:
            return None
        sent = input.get(self.max_tokens_field)
        if isinstance(sent, bool) or not isinstance(sent, int) or sent < 1:
            sent = self.price.max_output_tokens
        return TokenBudget(_text_bytes(input), sent)


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
    models: tuple[str, ...] = ()
    """The models that take this option, for when their schema is unknown; () means all. With
    a model's schema, the schema decides (is the option's input among its properties)."""
    # File options (type image/audio): accepted content types, the size cap, and the model the
    # command runs instead when a file is given (e.g. /ask with an image runs a vision model).
    accept: tuple[str, ...] = ()
    max_bytes: int | None = None
    model: str | None = None

    @property
    def is_file(self) -> bool:
        """Whether the value is a file (a Discord attachment, a Slack message's file)."""
        return self.type in FILE_TYPES

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
class ImageFollowup:
    """A follow-up that sends one delivered image to a model: Variations or Upscale.

    Field names are the follow-up model's own input names (conjure.toml cannot check them
    offline, so a wrong one is Replicate's 422 when pressed): the image goes to `image_field`,
    `strength` (0..1) to `strength_field` when set, and `inputs` are sent as they are.
    """

    model: str  # a key of Catalog.models, of kind "image"
    image_field: str
    strength_field: str | None = None
    strength: float | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _frozen(self.inputs))

    def fields(self, image_url: str) -> dict[str, Any]:
        """The inputs this follow-up sets for the image at `image_url` (a URL or `data:` URL):
        `inputs`, then the strength, then the image, over whatever else the job sends."""
        result = dict(self.inputs)
        if self.strength_field is not None and self.strength is not None:
            result[self.strength_field] = self.strength
        result[self.image_field] = image_url
        return result


@dataclass(frozen=True)
class Followups:
    """Which follow-ups a command's results offer; None (or False) is a follow-up turned off.

    Re-roll runs the same command again with a new seed; Variations and Upscale send one of the
    result's images to their model.
    """

    reroll: bool = False
    variations: ImageFollowup | None = None
    upscale: ImageFollowup | None = None

    @property
    def any(self) -> bool:
        """Whether a result gets any follow-up button at all."""
        return self.reroll or self.variations is not None or self.upscale is not None


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
    followups: Followups = Followups()

    def usage_hint(self) -> str:
        """The usage line without the command, as Slack's manifest `usage_hint` wants it."""
        parts = [f"<{self.prompt_label}>"]
        for option in self.options:
            if option.is_file:
                continue  # files are attached (Discord) or shared (Slack), never typed
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
