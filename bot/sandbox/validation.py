"""Checking a create's `input` against a fake model, with Replicate's `invalid_fields` shapes.

The error types and descriptions follow Replicate's JSON-schema messages (`required`,
`invalid_type`, `enum`, `number_gte`, `number_lte`, `format`), so clients that surface them to
users can be tested against the sandbox.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bot.sandbox.models import FakeModel, Param


def validate_input(model: FakeModel, raw: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The input with defaults filled in, and Replicate-style `invalid_fields` (empty if valid)."""
    if not isinstance(raw, dict):
        return {}, [invalid_type("input", "object", raw)]
    errors: list[dict[str, str]] = []
    values: dict[str, Any] = {p.name: p.default for p in model.params if p.default is not None}
    for p in model.params:
        if p.name not in raw:
            if p.required:
                errors.append(
                    {"type": "required", "field": "input", "description": f"{p.name} is required"}
                )
            continue
        value, error = _check(p, raw[p.name])
        if error:
            errors.append(error)
        else:
            values[p.name] = value
    for name, value in raw.items():
        if model.param(name) is None:
            values[name] = value  # Replicate passes unknown inputs through untouched
    return values, errors


def _check(p: Param, value: Any) -> tuple[Any, dict[str, str] | None]:
    field = f"input.{p.name}"
    if p.type == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _has_type(value, p.type):
        return None, invalid_type(field, p.type, value)
    if p.choices is not None and value not in p.choices:
        allowed = ", ".join(f'"{c}"' for c in p.choices)
        return None, {
            "type": "enum",
            "field": field,
            "description": f"{field} must be one of the following: {allowed}",
        }
    if p.minimum is not None and value < p.minimum:
        return None, {
            "type": "number_gte",
            "field": field,
            "description": f"Must be greater than or equal to {_num(p.minimum)}",
        }
    if p.maximum is not None and value > p.maximum:
        return None, {
            "type": "number_lte",
            "field": field,
            "description": f"Must be less than or equal to {_num(p.maximum)}",
        }
    if p.format == "uri" and not _is_uri(value):
        return None, {
            "type": "format",
            "field": field,
            "description": "Does not match format 'uri'",
        }
    return value, None


def _is_uri(value: str) -> bool:
    """What JSON Schema's `format: uri` asks: an absolute URI (a scheme, then the rest)."""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. "http://[broken": not a URI, and not a reason for a 500
        return False
    return bool(parts.scheme) and len(value) > len(parts.scheme) + 1


def _has_type(value: Any, type_: str) -> bool:
    if type_ == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if type_ == "integer":
        return isinstance(value, int)
    if type_ == "number":
        return isinstance(value, int | float)
    return isinstance(value, str)


def invalid_type(field: str, expected: str, value: Any) -> dict[str, str]:
    return {
        "type": "invalid_type",
        "field": field,
        "description": f"Invalid type. Expected: {expected}, given: {json_type(value)}",
    }


def json_type(value: Any) -> str:
    """The JSON Schema name of a decoded JSON value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
