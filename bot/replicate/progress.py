"""Progress from a prediction's logs: the last tqdm-style percentage ("  50%|█████     | 2/4")."""

from __future__ import annotations

import re

_PERCENT = re.compile(r"(?<![\d.])(\d{1,3})%\|")
_STEPS = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


def progress_from_logs(logs: str | None) -> int | None:
    """The most recent percentage in `logs` (0..100), or None when the logs show none."""
    if not logs:
        return None
    for line in reversed(logs.replace("\r", "\n").splitlines()):
        match = _PERCENT.search(line)
        if match:
            return min(int(match.group(1)), 100)
        steps = _STEPS.search(line)
        if steps and int(steps.group(2)) > 0:
            return min(100 * int(steps.group(1)) // int(steps.group(2)), 100)
    return None
