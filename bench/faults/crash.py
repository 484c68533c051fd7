"""`python -m bench.faults.crash`: kill -9 `conjure serve` at each step of a job's life.

For each step (bench/faults/steps.py), `--rounds` jobs are each caught at that step, `--per-kill`
at a time (`after_ack`, a burst, 20 at a time): the outside world is held there, the server
SIGKILLed the moment every job of the batch has reached it, the holds lifted and the server
started again on the same port and database. Per job the bench checks: delivered (its image
shared once, the row marked delivered) within 30 s of the restart, never posted twice, charged
once (the job settled, and the user's spend equal to what the job cost, nothing left reserved
or in flight). Writes bench/results/faults-crash.json; exits 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.faults.charges import charge_problem
from bench.faults.rig import Rig, running_rig, wait_until
from bench.faults.steps import STEPS, Step
from bench.stack import POSTGRES_URL

RESULTS = Path(__file__).resolve().parent.parent / "results"
DELIVERY_LIMIT = 30.0  # seconds from the restart: the bound
WAIT_LIMIT = 75.0  # seconds the bench waits for a batch before calling its jobs lost
REACH_LIMIT = 30.0  # seconds for a batch to reach its step


@dataclass
class JobOutcome:
    """One job of the crash bench."""

    step: str
    user: str
    acked: bool
    reached: bool
    seconds: float | None = None  # from the restart to delivered (None: not delivered)
    posts: int = 0
    status: str | None = None
    delivery: str | None = None
    charge_problem: str | None = None


@dataclass
class StepReport:
    """The numbers of one step."""

    step: str
    rounds: int = 0
    kills: int = 0
    not_acked: int = 0
    not_reached: int = 0
    lost: int = 0
    doubled: int = 0
    late: int = 0
    failed: int = 0
    charged_wrong: int = 0
    max_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.not_acked
            or self.not_reached
            or self.lost
            or self.doubled
            or self.late
            or self.failed
            or self.charged_wrong
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.faults.crash",
        description="kill -9 conjure serve at each step of a job's life; check lost, doubled, "
        "late and charged-once per job.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The crash bench's options (also offered by `python -m bench.faults`)."""
    p.add_argument("--rounds", type=int, default=20, help="jobs killed at each step (20)")
    p.add_argument("--per-kill", type=int, default=10, help="jobs caught by one kill (10)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--postgres-url", default=POSTGRES_URL, help=f"({POSTGRES_URL})")
    p.add_argument("--steps", default="", help="comma-separated step names (all)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds waited for late doubles")
    p.add_argument("--keep", type=Path, default=None, help="keep the servers' logs here")


async def run_crashes(args: argparse.Namespace) -> dict[str, Any]:
    """Every step x rounds; returns the JSON report (also written to faults-crash.json)."""
    wanted = [s for s in args.steps.split(",") if s] if getattr(args, "steps", "") else []
    steps = [s for s in STEPS if not wanted or s.name in wanted]
    started = time.monotonic()
    outcomes: list[JobOutcome] = []
    kills: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="conjure-crash-") as tmp:
        work = Path(tmp) if getattr(args, "keep", None) is None else Path(args.keep)
        async with running_rig(work, args.db, args.postgres_url) as rig:
            await rig.start_serve()
            for number, step in enumerate(steps, start=1):
                done = 0
                while done < args.rounds:
                    n = min(step.batch or args.per_kill, args.rounds - done)
                    users = [f"U{number}K{done + i:04d}" for i in range(n)]
                    outcomes += await _round(rig, step, users)
                    kills[step.name] = kills.get(step.name, 0) + 1
                    done += n
            await asyncio.sleep(args.settle)
            await _final_check(rig, outcomes)
            logs = _log_summary(work / "logs")
    reports = _reports(outcomes, kills, steps)
    result = {
        "db": args.db,
        "rounds": args.rounds,
        "per_kill": args.per_kill,
        "seconds": round(time.monotonic() - started, 1),
        "ok": all(r.ok for r in reports),
        "steps": [asdict(r) for r in reports],
        "serve_log_errors": logs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faults-crash.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


async def _round(rig: Rig, step: Step, users: list[str]) -> list[JobOutcome]:
    """One kill: arm the hold, send the commands, kill once all reached it, restart, wait."""
    moment = await step.arm(rig, len(users))
    sends = asyncio.gather(*(rig.send_imagine(u, f"a fox in the snow {u}") for u in users))
    reached = await wait_until(
        lambda: step.reached(rig, len(users), moment, users), timeout=REACH_LIMIT
    )
    acks = await sends
    rig.kill_serve()
    await rig.clear_slack_faults()
    await rig.clear_sandbox_faults()
    restarted = await rig.start_serve()
    outcomes = {
        user: JobOutcome(step.name, user, acked=status == 200, reached=reached)
        for user, status in zip(users, acks, strict=True)
    }
    deadline = restarted + WAIT_LIMIT
    while time.monotonic() < deadline:
        ledger = await rig.poll_slack()
        jobs = await rig.jobs(users)
        now = time.monotonic()
        for user, outcome in outcomes.items():
            rows = jobs.get(user) or []
            if outcome.seconds is None and ledger.uploads.get(user) and rows:
                if rows[0]["delivery"] == "delivered":
                    outcome.seconds = round(now - restarted, 2)
        if all(o.seconds is not None for o in outcomes.values()):
            break
        await asyncio.sleep(0.1)
    return list(outcomes.values())


async def _final_check(rig: Rig, outcomes: list[JobOutcome]) -> None:
    """Posts per job, and what each job and its user were charged, from the fake and the DB."""
    ledger = await rig.poll_slack()
    users = [o.user for o in outcomes]
    jobs = await rig.jobs(users)
    counters = await rig.counters()
    for outcome in outcomes:
        outcome.posts = len(ledger.uploads.get(outcome.user, []))
        rows = jobs.get(outcome.user) or []
        outcome.charge_problem = charge_problem(rows, counters.get(outcome.user, []))
        if rows:
            outcome.status, outcome.delivery = rows[0]["status"], rows[0]["delivery"]


def _reports(
    outcomes: list[JobOutcome], kills: dict[str, int], steps: list[Step]
) -> list[StepReport]:
    reports = []
    for step in steps:
        report = StepReport(step.name, kills=kills.get(step.name, 0))
        for o in (o for o in outcomes if o.step == step.name):
            report.rounds += 1
            report.not_acked += not o.acked
            report.not_reached += not o.reached
            lost = o.posts == 0 or o.seconds is None
            report.lost += lost
            report.doubled += o.posts > 1
            report.failed += o.status != "succeeded" or o.delivery != "delivered"
            report.charged_wrong += o.charge_problem is not None
            if o.seconds is not None:
                report.late += o.seconds > DELIVERY_LIMIT
                report.max_seconds = max(report.max_seconds, o.seconds)
            if lost or o.posts > 1 or o.charge_problem or o.status != "succeeded":
                report.problems.append(
                    f"{o.user}: posts={o.posts} status={o.status} delivery={o.delivery} "
                    f"seconds={o.seconds} charge={o.charge_problem}"
                )
        reports.append(report)
    return reports


def _log_summary(logs: Path) -> dict[str, int]:
    """Tracebacks and ERROR lines per serve lifetime's log (a crash bench expects warnings)."""
    found: dict[str, int] = {}
    for log in sorted(logs.glob("serve-*.log")):
        text = log.read_text(errors="replace")
        count = text.count("Traceback") + text.count(" ERROR ")
        if count:
            found[log.stem] = count
    return found


def print_report(result: dict[str, Any]) -> None:
    """The short human report."""
    print(
        f"crash bench ({result['db']}): {result['rounds']} jobs per step, "
        f"{result['per_kill']} per kill, {result['seconds']} s"
    )
    print(
        f"{'step':<16} {'jobs':>4} {'kills':>5} {'lost':>4} {'twice':>5} {'late':>4} "
        f"{'failed':>6} {'charge':>6} {'max s':>6}"
    )
    for s in result["steps"]:
        print(
            f"{s['step']:<16} {s['rounds']:>4} {s['kills']:>5} {s['lost']:>4} {s['doubled']:>5} "
            f"{s['late']:>4} {s['failed']:>6} {s['charged_wrong']:>6} {s['max_seconds']:>6.1f}"
        )
        for problem in s["problems"][:5]:
            print(f"    {problem}")
        if s["not_acked"] or s["not_reached"]:
            print(f"    not acked {s['not_acked']}, kill point not reached {s['not_reached']}")
    if result["serve_log_errors"]:
        print(f"serve logs with errors/tracebacks: {result['serve_log_errors']}")
    print("PASS" if result["ok"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = asyncio.run(run_crashes(args))
    print_report(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
