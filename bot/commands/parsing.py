"""Turn `/imagine a red fox --ar 16:9` into a validated Replicate input, or a plain usage error.

Pure: nothing is created or charged here, so an adapter can parse before it acknowledges and answer
bad input with the error's text alone. Slack delivers one string (`parse_invocation`); Discord
delivers typed options beside the prompt (`parse_options`); both end in the same validation.

Quoting only protects text from option parsing: a quoted phrase inside a prompt is kept as typed
(image models read quotes as "render this text"), and only a prompt that is one quoted whole is
unwrapped. Slack's smart quotes and iOS's em dash for `--` are accepted.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bot.catalog import OUTPUTS_FIELD, Catalog, CommandSpec, ModelSpec, OptionSpec, format_number
from bot.inputs import NOUNS, InputFile, file_problem

MAX_PROMPT_CHARS = 2000

_DOUBLE_QUOTES = '"“”„'
_SINGLE_QUOTES = "'‘’‚"  # noqa: RUF001
_QUOTES = _DOUBLE_QUOTES + _SINGLE_QUOTES
_OPTION = re.compile(r"(?:--|[—–])([A-Za-z][A-Za-z0-9_-]*)(=.*)?", re.DOTALL)  # noqa: RUF001
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_INTEGER = re.compile(r"[+-]?\d+")
MAX_INT_DIGITS = 100  # no option takes more; int() refuses past 4,300 (a Discord prompt has 6,000)


class UsageError(Exception):
    """Bad input from a person: `message` says what is wrong, `usage` shows how it should look."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message, usage)
        self.message = message
        self.usage = usage

    def __str__(self) -> str:
        return f"{self.message}\nUsage: {self.usage}" if self.usage else self.message


@dataclass(frozen=True)
class Invocation:
    """A validated command, ready to submit: the complete Replicate input and the model to run."""

    command: CommandSpec
    model: ModelSpec
    prompt: str
    input: dict[str, Any]
    outputs: int
    options: Mapping[str, Any] = field(default_factory=dict)  # the values given, by option name

    def estimate_micros(self) -> int:
        """What this run usually costs, in micro-dollars: what a person is shown."""
        return self.model.price.estimate_micros(self.outputs, self.model.token_budget(self.input))

    def ceiling_micros(self) -> int:
        """The most this run can cost, in micro-dollars: what a budget reserves."""
        return self.model.price.ceiling_micros(self.outputs, self.model.token_budget(self.input))

    def deadline_seconds(self) -> float | None:
        """When Replicate must stop this run (`Cancel-After`); None for a per-output price."""
        return self.model.price.deadline_seconds(self.outputs)


# --------------------------------------------------------------------------- words


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    raw: str  # as typed, quotes included
    text: str  # quotes removed
    quoted: bool  # begins with a quote, so it is never an option
    whole_quoted: bool  # exactly one quoted span and nothing else


def _closers(text: str) -> tuple[list[int | None], list[int | None]]:
    """For each position, the next double and the next single quote that can close a span.

    A single quote closes only before whitespace or punctuation, so "fox's" stays an apostrophe.
    Computed in one pass from the right, so hostile text full of quotes stays linear.
    """
    length = len(text)
    double: list[int | None] = [None] * (length + 1)
    single: list[int | None] = [None] * (length + 1)
    for index in range(length - 1, -1, -1):
        char = text[index]
        double[index] = index if char in _DOUBLE_QUOTES else double[index + 1]
        after = text[index + 1 : index + 2]
        closes = char in _SINGLE_QUOTES and (not after or not after.isalnum())
        single[index] = index if closes else single[index + 1]
    return double, single


def _words(text: str) -> Iterator[_Word]:
    """Split on whitespace, except inside quotes, which open only at a word start or after `=`.

    A quote that never closes is an ordinary character.
    """
    double, single = _closers(text)
    index, length = 0, len(text)
    while index < length:
        if text[index].isspace():
            index += 1
            continue
        start, pieces, spans, plain = index, [], 0, False
        may_open, opened = True, False
        while index < length and not text[index].isspace():
            char = text[index]
            close = None
            if may_open and char in _QUOTES:
                close = (double if char in _DOUBLE_QUOTES else single)[index + 1]
            if close is not None:
                pieces.append(text[index + 1 : close])
                opened = opened or index == start
                spans += 1
                index = close + 1
                may_open = False
                continue
            pieces.append(char)
            plain = True
            may_open = char == "="
            index += 1
        yield _Word(
            start=start,
            end=index,
            raw=text[start:index],
            text="".join(pieces),
            quoted=opened,
            whole_quoted=spans == 1 and not plain,
        )


def _is_option_word(word: _Word) -> bool:
    return not word.quoted and (word.raw == "--" or _OPTION.fullmatch(word.raw) is not None)


# --------------------------------------------------------------------------- scanning


@dataclass
class _Given:
    """One option value as received: `label` is how the person spelled the option."""

    spec: OptionSpec
    label: str
    value: Any


def _clip(value: Any, limit: int = 40) -> str:
    """A value fit to quote in a one-line message."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unknown_option(command: CommandSpec, name: str) -> UsageError:
    spellings = [s for option in command.options for s in (option.name, *option.aliases)]
    close = difflib.get_close_matches(name, spellings, n=1)
    hint = f" Did you mean --{close[0]}?" if close else ""
    return UsageError(f"Unknown option --{name}.{hint}", command.usage())


def _add(command: CommandSpec, given: dict[str, _Given], item: _Given) -> None:
    if item.spec.name in given:
        raise UsageError(f"Option --{item.spec.name} is given more than once.", command.usage())
    given[item.spec.name] = item


def _scan(command: CommandSpec, text: str, given: dict[str, _Given]) -> str:
    """Collect options from `text` into `given`; return the prompt (the remaining words)."""
    words = list(_words(text))
    runs: list[tuple[int, int]] = []  # spans of consecutive prompt words, kept as typed
    prompt_words: list[_Word] = []
    rest = ""
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word.quoted or not _is_option_word(word):
            if runs and runs[-1][1] == index - 2:
                runs[-1] = (runs[-1][0], index - 1)
            else:
                runs.append((index - 1, index - 1))
            prompt_words.append(word)
            continue
        if word.raw == "--":
            rest = text[word.end :].strip()
            break
        match = _OPTION.fullmatch(word.raw)
        assert match is not None
        name = match[1].lower()
        spec = command.option(name)
        if spec is None:
            raise _unknown_option(command, name)
        label = f"--{name}"
        if match[2] is not None:
            value: Any = word.text[word.text.index("=") + 1 :]
        elif spec.type == "bool":
            value = True
            following = words[index] if index < len(words) else None
            if following and not following.quoted and following.raw.lower() in _TRUE | _FALSE:
                value = following.raw
                index += 1
        else:
            following = words[index] if index < len(words) else None
            if following is None or _is_option_word(following):
                raise UsageError(f"Option {label} needs a value.", command.usage())
            value = following.text
            index += 1
        _add(command, given, _Given(spec, label, value))

    if len(prompt_words) == 1 and prompt_words[0].whole_quoted and not rest:
        return prompt_words[0].text.strip()
    parts = [text[words[first].start : words[last].end] for first, last in runs]
    if rest:
        parts.append(rest)
    return " ".join(parts).strip()


# --------------------------------------------------------------------------- values


def _in_range(spec: OptionSpec, label: str, value: float, usage: str) -> None:
    low, high = spec.minimum, spec.maximum
    if (low is None or value >= low) and (high is None or value <= high):
        return
    shown = format_number(value)
    if low is not None and high is not None:
        wanted = f"between {format_number(low)} and {format_number(high)}"
    elif low is not None:
        wanted = f"at least {format_number(low)}"
    else:
        wanted = f"at most {format_number(high)}"  # type: ignore[arg-type]
    raise UsageError(f"Option {label} must be {wanted}, not {shown}.", usage)


def _choice(value: Any, choices: tuple[str, ...]) -> str | None:
    wanted = str(value).strip().lower()
    return next((choice for choice in choices if choice.lower() == wanted), None)


def _coerce(command: CommandSpec, item: _Given) -> Any:
    """The typed value of one option, or a UsageError naming the option as the person wrote it."""
    spec, label, value, usage = item.spec, item.label, item.value, command.usage()
    if spec.type == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            if len(value.strip()) > MAX_INT_DIGITS:
                raise UsageError(f"Option {label} is too large a number ('{_clip(value)}').", usage)
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"Option {label} needs a whole number, not '{_clip(value)}'.", usage)
        _in_range(spec, label, value, usage)
        return value
    if spec.type == "float":
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise UsageError(f"Option {label} needs a number, not '{_clip(value)}'.", usage)
        _in_range(spec, label, number, usage)
        return number
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise UsageError(f"Option {label} must be true or false, not '{_clip(value)}'.", usage)
    if spec.type == "choice":
        choice = _choice(value, spec.choices)
        if choice is None:
            choices = ", ".join(spec.choices)
            raise UsageError(
                f"Option {label} must be one of {choices}; '{_clip(value)}' is not.", usage
            )
        return choice
    if spec.type == "model":
        choice = _choice(value, command.models)
        if choice is None:
            close = difflib.get_close_matches(str(value).strip().lower(), command.models, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(
                f"Model '{_clip(value)}' is not available for /{command.name}; "
                f"choose {', '.join(command.models)}.{hint}",
                usage,
            )
        return choice
    if spec.is_file:
        return _file(command, item)
    return str(value).strip()


def _file(command: CommandSpec, item: _Given) -> InputFile:
    """A file option's value: a file its platform vouches for (type, size), never typed text."""
    if not isinstance(item.value, InputFile):
        raise UsageError(
            f"Option {item.label} takes a file: attach it on Discord, or use Conjure's "
            "shortcut on a Slack message that has the file.",
            command.usage(),
        )
    problem = file_problem(command, item.spec, item.value)
    if problem is not None:
        raise UsageError(problem)
    return item.value


def _file_prompt(command: CommandSpec, prompt: str, values: Mapping[str, Any]) -> str | None:
    """The prompt of a command given a file in place of it (/transcribe's audio URL or an
    audio file): the file's name; None when no file stands for the prompt."""
    for option in command.options:
        file = values.get(option.name)
        if option.is_file and option.field == command.prompt_field and file is not None:
            if prompt:
                label = command.prompt_label
                raise UsageError(f"Give either the {label} or a file, not both.", command.usage())
            return str(file)
    return None


def _no_prompt_nor_file(command: CommandSpec) -> None:
    """Neither the prompt nor the file that may stand for it: say both ways to give it."""
    for option in command.options:
        if option.is_file and option.field == command.prompt_field:
            noun = NOUNS.get(option.type, "file")
            raise UsageError(
                f"The {command.prompt_label} is missing: give one, or an {noun} "
                f"(on Discord attach it as `{option.name}`; on Slack use Conjure's shortcut "
                "on a message that has the file).",
                command.usage(),
            )


def _file_model(command: CommandSpec, values: Mapping[str, Any], model_key: str) -> str:
    """The model to run: a file option's own model when its file is given (/ask with an image
    runs a vision model), unless the person chose one."""
    if any(o.type == "model" and values.get(o.name) for o in command.options):
        return model_key
    for option in command.options:
        if option.is_file and option.model and values.get(option.name) is not None:
            return option.model
    return model_key


def _check_prompt(command: CommandSpec, prompt: str) -> str:
    usage, label = command.usage(), command.prompt_label
    # A NUL shows as nothing, and PostgreSQL stores none in text: kept, it made the command
    # fail as "cannot reach its database".
    prompt = prompt.replace("\x00", "").strip()
    if command.prompt_type == "url":
        # Slack wraps links as <https://...> or <https://...|label>.
        if prompt.startswith("<") and prompt.endswith(">"):
            prompt = prompt[1:-1].split("|", 1)[0].strip()
    if not prompt:
        raise UsageError(f"The {label} is missing.", usage)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(
            f"The {label} is {len(prompt):,} characters long; the limit is {MAX_PROMPT_CHARS:,}.",
            usage,
        )
    if command.prompt_type == "url":
        parts = urlsplit(prompt)
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or any(char.isspace() for char in prompt)
        ):
            raise UsageError(f"The {label} must be an http:// or https:// link.", usage)
    return prompt


def _finish(
    command: CommandSpec, catalog: Catalog, prompt: str, given: Mapping[str, _Given]
) -> Invocation:
    values = {name: _coerce(command, item) for name, item in given.items()}
    file_prompt = _file_prompt(command, prompt, values)
    if file_prompt is None and not prompt.strip():
        _no_prompt_nor_file(command)
    prompt = _check_prompt(command, prompt) if file_prompt is None else file_prompt
    model_key = command.model
    fields: dict[str, Any] = {command.prompt_field: prompt}
    for option in command.options:
        value = values.get(option.name, option.default)
        if option.type == "model":
            model_key = value or model_key
        elif value is not None:
            fields[option.field] = value
    model_key = _file_model(command, values, model_key)
    model = catalog.models.get(model_key)
    if model is None:  # only a hand-built catalog can get here
        raise UsageError(f"Model '{model_key}' is not available.", command.usage())
    wanted = fields.get(OUTPUTS_FIELD)
    if model.outputs_field is None and wanted not in (None, 1):
        names = [o.name for o in command.options if o.field == OUTPUTS_FIELD]
        raise UsageError(
            f"{model.key} makes one {model.kind} at a time; leave out --{names[0]}.",
            command.usage(),
        )
    try:
        replicate_input = model.build_input(fields)
    except ValueError as exc:
        raise UsageError(f"{str(exc).rstrip('.')}.", command.usage()) from None
    return Invocation(
        command=command,
        model=model,
        prompt=prompt,
        input=replicate_input,
        outputs=_outputs(model, replicate_input),
        options=values,
    )


def _outputs(model: ModelSpec, replicate_input: Mapping[str, Any]) -> int:
    """How many outputs to pay for: the model's outputs field, else one."""
    if model.outputs_field is None:
        return 1
    value = replicate_input.get(model.outputs_field, 1)
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


# --------------------------------------------------------------------------- entry points


def parse_invocation(catalog: Catalog, command: str, text: str) -> Invocation:
    """Parse the text typed after a slash command (`command` as `imagine` or `/imagine`)."""
    spec = catalog.command(command)
    if spec is None:
        known = ", ".join(f"/{name}" for name in catalog.commands)
        raise UsageError(f"Unknown command /{command.strip().lstrip('/')}. Try {known}.")
    given: dict[str, _Given] = {}
    prompt = _scan(spec, text, given)
    return _finish(spec, catalog, prompt, given)


def parse_options(
    command: CommandSpec, catalog: Catalog, prompt: str, options: Mapping[str, Any]
) -> Invocation:
    """Validate a prompt with separately delivered typed options (Discord), keyed by option name.

    Flags typed inside the prompt (`a fox --ar 16:9`, as Midjourney users do) count too; giving an
    option both ways is an error. None values are options the person left out.
    """
    given: dict[str, _Given] = {}
    text_prompt = _scan(command, prompt, given)
    for name, value in options.items():
        if value is None:
            continue
        spec = command.option(name)
        if spec is None:
            raise _unknown_option(command, name.lstrip("-").lower())
        _add(command, given, _Given(spec, f"--{spec.name}", value))
    return _finish(command, catalog, text_prompt, given)
