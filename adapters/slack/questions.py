"""The price question in Slack ("This will cost about $0.50. Run it?", bot.confirm): Block Kit
for the private answer that carries Run it and Cancel, and what a press of either shows.

The question is ephemeral, so only the person who asked can see and press it; once it is settled
(its job started, or Cancel pressed) it is replaced through the press's response_url by the
outcome, buttons gone. A Run it refused by a limit leaves it in place, to press again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.slack import markup
from adapters.slack.blocks import button_element, clip
from adapters.slack.reach import respond
from bot.adapter import Reply
from bot.followups.buttons import Action, Button, parse_custom_id

BLOCK_ID = "conjure_question"
STARTED = "▶️ Started: its own message shows how it goes."


def reply_blocks(text: str, buttons: Sequence[Button]) -> list[dict[str, Any]]:
    """A private answer with buttons (the price question: Run it, Cancel) as Block Kit."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}},
        {
            "type": "actions",
            "block_id": BLOCK_ID,
            "elements": [button_element(button) for button in buttons],
        },
    ]


async def settle_question(custom_id: str, body: dict[str, Any], reply: Reply) -> bool:
    """For a press that settled a price question, replace the question with the outcome and
    return True; False for any other press (answered as usual)."""
    button = parse_custom_id(custom_id)
    if button is None:
        return False
    started = button.action is Action.CONFIRM and reply.job is not None
    if not started and button.action is not Action.DECLINE:
        return False
    if started:
        text = STARTED
    elif reply.text is not None:
        text = markup.render(reply.text)
    else:
        return True
    await respond(body.get("response_url"), text, in_channel=False, replace_original=True)
    return True
