"""Conjure's buttons on Discord: components on a job's message, and the persistent item that
answers their presses.

A button's `custom_id` names the job, the action and the output (bot.followups.buttons) and
nothing else. Presses are answered by one `DynamicItem` class registered at start
(`client.add_dynamic_items`), matched on that id's template: no view is held in memory, so a
press works after a restart, and on any instance, since everything else comes from the database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Protocol

import discord

from bot.catalog import Catalog
from bot.followups.buttons import CUSTOM_ID_TEMPLATE, Button, job_buttons
from storage.models import Job

log = logging.getLogger(__name__)

MAX_ROWS = 5  # action rows per message
ROW_WIDTH = 5  # buttons per action row


class PressHandler(Protocol):
    """What a press is handed to: the Discord press listener (the client's `presses`)."""

    async def on_press(self, interaction: discord.Interaction, custom_id: str) -> None: ...


class FollowupButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_TEMPLATE):
    """Any of Conjure's buttons, rebuilt from the pressed component itself (its custom_id,
    label and style travel with the message), then handed to the client's press handler."""

    def __init__(self, item: discord.ui.Button[Any]) -> None:
        super().__init__(item)

    @classmethod
    def of(cls, button: Button, row: int) -> FollowupButton:
        style = discord.ButtonStyle.secondary
        if button.danger:
            style = discord.ButtonStyle.danger
        elif button.primary:
            style = discord.ButtonStyle.primary
        return cls(
            discord.ui.Button(label=button.label, custom_id=button.custom_id, style=style, row=row)
        )

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> FollowupButton:
        if not isinstance(item, discord.ui.Button):
            raise TypeError(f"a Conjure custom_id on a {type(item).__name__}")
        return cls(item)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler: PressHandler | None = getattr(interaction.client, "presses", None)
        if handler is None:  # a client started without follow-ups: Discord says it failed
            log.warning("button %s pressed, but no press handler is set", self.custom_id)
            return
        await handler.on_press(interaction, self.custom_id)


def reply_view(buttons: Sequence[Button]) -> discord.ui.View | None:
    """A private answer's buttons (the price question: Run it, Cancel) in one row; None for
    none."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons[:ROW_WIDTH]:
        view.add_item(FollowupButton.of(button, 0))
    return view


def job_view(catalog: Catalog, job: Job) -> discord.ui.View | None:
    """The buttons `job`'s message carries as it stands, as action rows; None for none (an edit
    with None removes the ones it had)."""
    rows = [
        row[start : start + ROW_WIDTH]
        for row in job_buttons(catalog, job)
        for start in range(0, len(row), ROW_WIDTH)
    ][:MAX_ROWS]
    if not rows:
        return None
    view = discord.ui.View(timeout=None)
    for index, row in enumerate(rows):
        for button in row:
            view.add_item(FollowupButton.of(button, index))
    return view
