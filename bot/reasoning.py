"""A reasoning model's `<think>...</think>` part, folded away from the answer it precedes.

DeepSeek R1 (and models like it) write their reasoning first, inside `<think>` tags, then the
answer. Mixed into a chat message the reasoning buries the answer, so every platform shows the
answer alone, after one line that says the model reasoned and for how long (in words: the
output says nothing of seconds, and this must read the same live and at the end). While the
model is still thinking, that line is all there is. The reasoning itself stays in the job's
recorded output. The live text is always a prefix of the next one and of the final text, so a
platform that can only append (Slack's streaming messages) shows it right.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"
THINKING = "💭 Reasoning…"


def folded(text: str) -> str:
    """The text to show at the end: the answer, the reasoning folded into one line."""
    return _fold(text, final=True)


def live(text: str) -> str:
    """The text to show while it is being written (empty while it may yet open `<think>`)."""
    return _fold(text, final=False)


def _fold(text: str, *, final: bool) -> str:
    start = text.lstrip()
    if not start.startswith(OPEN):
        if not final and start and OPEN.startswith(start):
            return ""  # "<thi": wait and see
        return text
    reasoning, closed, answer = start[len(OPEN) :].partition(CLOSE)
    if not closed:
        if final:  # it ran out of tokens while thinking
            return f"{THINKING} (stopped before it answered)"
        return THINKING
    words = len(reasoning.split())
    return f"{THINKING} ({words:,} words, not shown)\n\n{answer.lstrip()}"
