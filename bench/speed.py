"""How fast this machine runs Python right now: a fixed workload's CPU time, in a fresh process.

Shared VMs change speed from one minute to the next (here by up to 1.8x), and the bench's CPU
figures move with it. Each run measures the same workload (JSON, hashing, dict and string churn,
the kind of work serve does) before and after its phases, so two runs' CPU figures can be put on
the same footing: a run whose gauge read 20 % slower spent about 20 % more CPU on the same work.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 5


def workload() -> None:
    """About 0.2 s of CPU on this machine (2 cores, AMD EPYC), when it is quiet."""
    record = {"id": "abc123", "input": {"prompt": "a red fox in the snow " * 4}, "n": 0}
    for i in range(36_000):
        record["n"] = i
        text = json.dumps(record)
        hashlib.sha256(text.encode()).hexdigest()
        parsed = json.loads(text)
        {key: str(value) for key, value in parsed.items()}
        f"{parsed['id']}:{i}".split(":")


def _one() -> float:
    """CPU milliseconds of `workload` in a new interpreter (no state from the bench)."""
    code = (
        "import time; from bench.speed import workload; t = time.process_time(); workload(); "
        "print((time.process_time() - t) * 1000)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return float(out.stdout.strip())


def gauge() -> float:
    """The median of a few readings, in CPU milliseconds (lower is faster)."""
    return round(statistics.median(_one() for _ in range(ROUNDS)), 1)


if __name__ == "__main__":  # pragma: no cover - by hand: python -m bench.speed
    started = time.perf_counter()
    print(gauge(), "ms", f"({time.perf_counter() - started:.1f} s)")
