"""Cog-style OpenAPI documents for the fake models.

Enums are `allOf` references to a separate schema, as Cog emits them, so code that reads
`components.schemas.Input` from the sandbox is ready for what real models publish.
"""

from __future__ import annotations

from typing import Any

from bot.sandbox.models import FakeModel


def input_schema(model: FakeModel) -> dict[str, Any]:
    """The Cog OpenAPI document of a model; inputs are `components.schemas.Input`."""
    properties: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for order, p in enumerate(model.params):
        prop: dict[str, Any] = {"x-order": order}
        if p.choices is not None:
            schemas[p.name] = {
                "enum": list(p.choices),
                "type": p.type,
                "title": p.name,
                "description": "An enumeration.",
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{p.name}"}]
        else:
            prop.update(type=p.type, title=p.name.replace("_", " ").title())
        if p.description:
            prop["description"] = p.description
        if p.default is not None:
            prop["default"] = p.default
        if p.minimum is not None:
            prop["minimum"] = p.minimum
        if p.maximum is not None:
            prop["maximum"] = p.maximum
        if p.format is not None:
            prop["format"] = p.format
        properties[p.name] = prop
    required = [p.name for p in model.params if p.required]
    schemas["Input"] = {
        "type": "object",
        "title": "Input",
        "required": required,
        "properties": properties,
    }
    schemas["Output"] = model.output_schema
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": schemas},
    }
