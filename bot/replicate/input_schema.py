"""A model's inputs as its own Cog schema declares them, and a small checker for one value.

Replicate publishes each version's OpenAPI document; the inputs are `components.schemas.Input`.
Only the keywords Cog emits for inputs are read (`type`, `enum` or `allOf: [{$ref}]` to an enum
schema, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `default`, `description`,
`x-order`, `required`): a few dozen lines rather than a JSON Schema library, and every refusal
can say, in words a person understands, what the model itself allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_INTEGER = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "array": "a list",
    "object": "an object",
}


class SchemaUnreadable(ValueError):
    """An OpenAPI document without a usable `components.schemas.Input`."""


@dataclass(frozen=True)
class InputProperty:
    """One input of a model, its `$ref`s resolved: what a value must be, in the model's words."""

    name: str
    type: str | None = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    default: Any = None
    description: str = ""
    order: int = 0

    def hint(self) -> str:
        """`1-4`, `webp|jpg|png`, `N`: the value placeholder usage lines show, as
        OptionSpec.hint does for the catalog's rules ('' for a flag)."""
        if self.enum:
            shown = [str(v) for v in self.enum]
            return "|".join(shown if len(shown) <= 6 else [*shown[:5], "..."])
        if self.minimum is not None and self.maximum is not None:
            return f"{_number(self.minimum)}-{_number(self.maximum)}"
        return {"integer": "N", "number": "X", "boolean": ""}.get(self.type or "", "TEXT")


@dataclass(frozen=True)
class Problem:
    """Why a value does not fit: `wanted` completes "must be ...", `given` is the value shown."""

    kind: str  # "type" | "enum" | "range"
    wanted: str
    given: Any


@dataclass(frozen=True)
class InputSchema:
    """A model version's inputs (`properties`) and which of them are required."""

    properties: Mapping[str, InputProperty]
    required: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.properties, MappingProxyType):
            object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    def has(self, name: str) -> bool:
        return name in self.properties

    @classmethod
    def from_openapi(cls, document: Any) -> InputSchema:
        """The inputs of a Cog OpenAPI document; raises SchemaUnreadable if it has none."""
        schemas = _get(_get(document, "components"), "schemas")
        raw = _get(schemas, "Input")
        properties = _get(raw, "properties")
        if not isinstance(properties, Mapping) or not properties:
            raise SchemaUnreadable("no components.schemas.Input.properties")
        parsed = {
            str(name): _property(str(name), prop, schemas)
            for name, prop in properties.items()
            if isinstance(prop, Mapping)
        }
        required = raw.get("required") if isinstance(raw, Mapping) else None
        names = frozenset(str(n) for n in required) if isinstance(required, list) else frozenset()
        return cls(parsed, names & parsed.keys())

    def check(self, name: str, value: Any) -> tuple[Any, Problem | None]:
        """`value` for input `name`, coerced where that is exact ("4" -> 4 for an integer), and
        the problem when the model would refuse it. Unknown inputs pass (Replicate ignores them;
        whether to refuse that is the caller's business)."""
        prop = self.properties.get(name)
        if prop is None:
            return value, None
        value, ok = _coerce(prop.type, value)
        if not ok:
            return value, Problem("type", _TYPE_WORDS.get(prop.type or "", prop.type or ""), value)
        if prop.enum is not None:
            match = _enum_match(prop.enum, value)
            if match is _MISSING:
                choices = ", ".join(str(choice) for choice in prop.enum)
                return value, Problem("enum", f"one of {choices}", value)
            value = match
        if isinstance(value, int | float) and not isinstance(value, bool):
            wanted = _range_problem(prop, value)
            if wanted:
                return value, Problem("range", wanted, value)
        return value, None


# --------------------------------------------------------------------------- reading


def _get(mapping: Any, key: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise SchemaUnreadable(f"no '{key}'")
    return mapping.get(key)


def _resolved(prop: Mapping[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """`prop` with `allOf`/`anyOf`'s `$ref`s to `#/components/schemas/X` merged in (Cog's enums);
    the property's own keys win (its description, not the enum's "An enumeration.")."""
    merged: dict[str, Any] = {}
    for key in ("allOf", "anyOf"):
        for part in prop.get(key) or []:
            if not isinstance(part, Mapping):
                continue
            ref = part.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                target = schemas.get(ref.rsplit("/", 1)[1])
                if isinstance(target, Mapping):
                    merged.update(target)
            else:
                merged.update(part)
    merged.pop("description", None)
    merged.pop("title", None)
    merged.update({k: v for k, v in prop.items() if k not in ("allOf", "anyOf")})
    return merged


def _bound(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _property(name: str, prop: Mapping[str, Any], schemas: Mapping[str, Any]) -> InputProperty:
    spec = _resolved(prop, schemas)
    kind = spec.get("type")
    enum = spec.get("enum")
    order = spec.get("x-order")
    description = spec.get("description")
    return InputProperty(
        name=name,
        type=kind if isinstance(kind, str) else None,
        enum=tuple(enum) if isinstance(enum, list) and enum else None,
        minimum=_bound(spec.get("minimum")),
        maximum=_bound(spec.get("maximum")),
        exclusive_minimum=_bound(spec.get("exclusiveMinimum")),
        exclusive_maximum=_bound(spec.get("exclusiveMaximum")),
        default=spec.get("default"),
        description=" ".join(description.split()) if isinstance(description, str) else "",
        order=order if isinstance(order, int) and not isinstance(order, bool) else 0,
    )


# --------------------------------------------------------------------------- checking

_MISSING = object()


def _coerce(kind: str | None, value: Any) -> tuple[Any, bool]:
    """(value in the schema's type, fits). Text that spells the type exactly is converted."""
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            return int(value), True
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value.strip()), True
        return value, isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return value, False
            return (number, True) if math.isfinite(number) else (value, False)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return value, ok and math.isfinite(value)
    if kind == "boolean":
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE, True
        return value, isinstance(value, bool)
    if kind == "string":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return format(value), True  # a number where the model wants its text ("0.25")
        return value, isinstance(value, str)
    return value, True  # untyped, or array/object: the model's own business


def _enum_match(choices: tuple[Any, ...], value: Any) -> Any:
    """The choice `value` names (exactly, else ignoring case for text), or _MISSING."""
    for choice in choices:
        if choice == value and type(choice) is type(value):
            return choice
    if isinstance(value, str):
        wanted = value.strip().lower()
        found = [c for c in choices if isinstance(c, str) and c.lower() == wanted]
        if len(found) == 1:
            return found[0]
        found = [c for c in choices if not isinstance(c, str) and str(c) == value.strip()]
        if len(found) == 1:
            return found[0]
    return _MISSING


def _range_problem(prop: InputProperty, value: float) -> str | None:
    low, high = prop.minimum, prop.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            return f"between {_number(low)} and {_number(high)}"
        if low is not None:
            return f"at least {_number(low)}"
        return f"at most {_number(high)}"  # type: ignore[arg-type]
    if prop.exclusive_minimum is not None and value <= prop.exclusive_minimum:
        return f"more than {_number(prop.exclusive_minimum)}"
    if prop.exclusive_maximum is not None and value >= prop.exclusive_maximum:
        return f"less than {_number(prop.exclusive_maximum)}"
    return None


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
