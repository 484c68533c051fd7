"""The command catalog: which slash commands exist, which model each runs, its options and price.

`specs` holds the value types, `builtin` the built-in commands and models (as raw data, in the
same form as conjure.toml), `loader` the validation that turns raw data into specs.
"""

from bot.catalog.loader import default_catalog, load_catalog
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

__all__ = [
    "MAX_CHOICES",
    "MAX_DESCRIPTION",
    "OUTPUTS_FIELD",
    "RESERVED_COMMANDS",
    "RESERVED_OPTIONS",
    "TRANSLATORS",
    "Catalog",
    "CatalogError",
    "CommandSpec",
    "Followups",
    "ImageFollowup",
    "Kind",
    "ModelSpec",
    "OptionSpec",
    "OptionType",
    "Price",
    "PromptType",
    "Route",
    "default_catalog",
    "format_number",
    "load_catalog",
]
