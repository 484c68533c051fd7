"""Block Kit pieces shared by the job's status message (buttons.py) and the price question
(questions.py): one way to draw a button and to fit a section's text."""

from __future__ import annotations

from typing import Any

from bot.followups.buttons import Button

SECTION_TEXT_LIMIT = 3000  # Slack: a section's text


def clip(text: str, limit: int = SECTION_TEXT_LIMIT) -> str:
    """`text`, cut to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def button_element(button: Button) -> dict[str, Any]:
    """A Block Kit button carrying the button's custom id (as action_id and value)."""
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": button.label},
        "action_id": button.custom_id,
        "value": button.custom_id,
    }
    if button.danger:
        element["style"] = "danger"
    elif button.primary:
        element["style"] = "primary"
    return element
