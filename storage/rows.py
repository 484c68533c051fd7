"""Table models from rows (and new ones), without pydantic's validation.

A row read through a table's columns already holds the columns' Python types (SQLAlchemy's
result processing: JSON parsed, datetimes made, integers as integers), and everything written
was validated when it was built. `Model.model_validate(row)` checked it all again: 0.2 ms of
CPU per job row, several times per job (each webhook, each conditional UPDATE ... RETURNING).
`from_row` builds the instance as SQLAlchemy's own loading does, in a tenth of that.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel

M = TypeVar("M", bound=SQLModel)
_configured = False


def _configure() -> None:
    """Set up the mappers, as SQLAlchemy does before it first builds an instance itself."""
    global _configured
    configure_mappers()
    _configured = True


def from_row(model: type[M], row: Mapping[str, Any]) -> M:
    """An instance of the table model `model` holding `row`'s values (every column)."""
    if not _configured:
        _configure()
    instance: M = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    values = dict(row)
    instance.__dict__.update(values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    return instance


def new_row(table: type[M], /, **values: Any) -> M:
    """`table(**values)` as a table model builds it (no validation either way: SQLModel does
    not validate table models), every field not given at its default. A sixth of the CPU: the
    constructor sets each field through SQLAlchemy's instrumentation, and pydantic inspects a
    default factory's signature (tokenizing it) on every call; 0.2 ms per job."""
    given = set(values)
    for name, factory, default in _defaults(table):
        if name not in values:
            if factory is None and default is PydanticUndefined:
                raise TypeError(f"{table.__name__} needs a value for {name}")
            values[name] = factory() if factory is not None else default
    instance = from_row(table, values)
    object.__setattr__(instance, "__pydantic_fields_set__", given)
    return instance


@functools.cache
def _defaults(table: type[SQLModel]) -> list[tuple[str, Callable[[], Any] | None, Any]]:
    """Each field's name, default factory (taking nothing, as every one here does) and
    default, read once. A list, dict or set as a plain default is refused: pydantic copies it
    for each instance, `new_row` would share one object between rows."""
    for name, field in table.model_fields.items():
        if isinstance(field.default, list | dict | set):
            raise TypeError(f"{table.__name__}.{name}: give a mutable default as default_factory")
    return [
        (name, field.default_factory, field.default)  # type: ignore[misc]
        for name, field in table.model_fields.items()
    ]
