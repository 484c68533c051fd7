"""`python -m bench.faults`: the whole fault suite, one bench after another, each as it runs
alone (`python -m bench.faults.crash`, `.storms`, `.overspend`) with its default sizes.

- crash: `conjure serve` killed with -9 at each of seven steps of a job's life, 20 jobs each;
- storms: Slack, Discord and the file host answering 500, then 429, for 10 s during 200
  deliveries each;
- overspend: 1,000 concurrent commands from one user on two instances sharing PostgreSQL, with a
  by-the-second model running 30 times its estimate, against a $0.50 budget.

Each writes bench/results/faults-<name>.json; this prints their reports and a line per bench,
and exits 1 when any criterion failed. `--only crash,storms` runs a part. (The 10,000 fuzzed
bodies and the 300 MiB body are `python -m bench.fuzz`.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bench.faults import crash, overspend, storms

BENCHES = ("crash", "storms", "overspend")


async def run(names: list[str]) -> dict[str, bool]:
    passed: dict[str, bool] = {}
    for name in names:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        result: dict[str, Any]
        if name == "crash":
            result = await crash.run_crashes(crash.parser().parse_args([]))
            crash.print_report(result)
            passed[name] = bool(result["ok"])
        elif name == "storms":
            result = await storms.run_storms(storms.parser().parse_args([]))
            storms.print_report(result)
            passed[name] = bool(result["ok"])
        else:
            result = await overspend.run_overspend(overspend.parse_args([]))
            overspend.print_report(result)
            passed[name] = bool(result["passed"])
        verdict = "PASS" if passed[name] else "FAIL"
        print(f"== {name}: {verdict} in {time.monotonic() - started:.0f} s")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHES), help="e.g. crash,storms")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown bench: {', '.join(unknown)} (one of {', '.join(BENCHES)})")
    passed = asyncio.run(run(names))
    for name, ok in passed.items():
        print(f"{name:10} {'PASS' if ok else 'FAIL'}")
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
