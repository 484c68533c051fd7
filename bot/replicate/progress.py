"""Progress from a prediction's logs: the last tqdm-style percentage ("  50%|█████     | 2/4")."""

from __future__ import annotations

import re

# Every `logs` webhook carries all the logs so far (megabytes, for a chatty model): only their
# end is read, where the last bar is. Read whole, 4 MiB cost ~180 ms of CPU per webhook.
TAIL = 16 * 1024
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3})%\|")
# Bounded: int() refuses more than 4,300 digits, and no run has a billion steps.
_STEPS = re.compile(r"\|\s*(\d{1,9})/(\d{1,9})\s*\[")
_BREAK = re.compile(r"[\r\n]")


def progress_from_logs(logs: str | None) -> int | None:
    """The most recent percentage in `logs` (0..100), or None when their end shows none."""
    if not logs:
        return None
    if len(logs) > TAIL:
        logs = logs[-TAIL:]
        cut = _BREAK.search(logs)  # the first line is cut: its digits may be a number's end
        logs = logs[cut.end() :] if cut else ""
    for line in reversed(logs.replace("\r", "\n").splitlines()):
        match = _PERCENT.search(line)
        if match:
            return min(int(match.group(1)), 100)
        steps = _STEPS.search(line)
        if steps and int(steps.group(2)) > 0:
            return min(100 * int(steps.group(1)) // int(steps.group(2)), 100)
    return None
