"""What an admin's change to one limit can be: a type of its own, free of the database layer,
so that reading settings (`bot.config`, every CLI start) does not load SQLAlchemy."""

from __future__ import annotations

from enum import Enum


class Default(Enum):
    """An override change that clears the field, so the configured default applies again."""

    DEFAULT = "default"


DEFAULT = Default.DEFAULT
LimitChange = int | None | Default
"""A change to one override field: a limit (None = unlimited, 0 = none allowed) or DEFAULT."""
