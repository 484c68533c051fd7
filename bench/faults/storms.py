"""`python -m bench.faults.storms`: Slack, Discord or the file host failing while results are
being delivered.

One `conjure serve` (Slack over HTTP and Discord over the fake gateway) runs against the sandbox.
For each storm, `--deliveries` commands are sent while the sandbox keeps their predictions
starting for a few seconds; once all are sent, one side answers 500 (or 429 with Retry-After)
to every call for `--storm-seconds` while the predictions finish and their results are
delivered: the fake Slack's Web API and upload route, the fake Discord's message routes, or the
sandbox's output files (downloaded from Slack jobs). The bench then waits for every result and
checks each was delivered exactly once and none marked failed. Writes
bench/results/faults-storms.json; exits 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.faults.charges import charge_problem
from bench.faults.discord_side import DiscordSide, outage_paths, running_discord
from bench.faults.rig import Rig, running_rig, wait_until
from bench.stack import POSTGRES_URL

RESULTS = Path(__file__).resolve().parent.parent / "results"
STARTING = 6.0  # seconds the sandbox keeps each prediction starting: the storm has begun by then
SEND_RATE = 40.0  # commands per second (Discord gives 3 s to answer an interaction)
WAIT_LIMIT = 150.0  # seconds after the storm for every result to arrive
RETRY_AFTER = 2.0  # seconds, on the 429s
DISCORD_USER_BASE = 1_200_000_000_000_000_000


@dataclass(frozen=True)
class Storm:
    """One run: which side fails, and how."""

    target: str  # "slack", "discord" or "files"
    status: int

    @property
    def name(self) -> str:
        return f"{self.target}-{self.status}"


STORMS = tuple(Storm(t, s) for t in ("slack", "discord", "files") for s in (500, 429))


@dataclass
class StormReport:
    """The numbers of one storm."""

    storm: str
    deliveries: int
    acked: int = 0
    delivered: int = 0
    doubled: int = 0
    lost: int = 0
    failed: int = 0
    charged_wrong: int = 0
    failed_calls: int = 0  # calls the storm answered with its status, as far as seen
    seconds_to_all: float | None = None  # from the storm's start to the last delivery
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.delivered == self.deliveries
            and not (self.doubled or self.lost or self.failed or self.charged_wrong)
            and self.acked == self.deliveries
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.faults.storms",
        description="Slack, Discord and the file host answering 500 or 429 for a while during "
        "many deliveries: every result delivered once, none failed.",
    )
    add_arguments(p)
    p.add_argument("--postgres-url", default=POSTGRES_URL, help=f"({POSTGRES_URL})")
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The storm bench's options (also offered by `python -m bench.faults`); --postgres-url is
    the crash bench's, shared."""
    p.add_argument("--deliveries", type=int, default=200, help="results per storm (200)")
    p.add_argument("--storm-seconds", type=float, default=10.0, help="how long it fails (10)")
    p.add_argument("--storms", default="", help="e.g. slack-500,files-429 (all six)")
    p.add_argument("--storm-db", choices=["sqlite", "postgres"], default="sqlite")


async def run_storms(args: argparse.Namespace) -> dict[str, Any]:
    """Every storm; returns the JSON report (also written to faults-storms.json)."""
    wanted = [s for s in args.storms.split(",") if s] if getattr(args, "storms", "") else []
    storms = [s for s in STORMS if not wanted or s.name in wanted]
    started = time.monotonic()
    reports: list[StormReport] = []
    with tempfile.TemporaryDirectory(prefix="conjure-storms-") as tmp:
        async with running_discord() as discord:
            async with running_rig(
                Path(tmp),
                args.storm_db,
                getattr(args, "postgres_url", POSTGRES_URL),
                platform_env=discord.env,
            ) as rig:
                await rig.start_serve()
                if not await wait_until(_synced(discord), timeout=30, interval=0.1):
                    raise RuntimeError("conjure serve did not connect to the fake Discord")
                for number, storm in enumerate(storms, start=1):
                    reports.append(await _storm(rig, discord, storm, number, args))
    result = {
        "deliveries": args.deliveries,
        "storm_seconds": args.storm_seconds,
        "seconds": round(time.monotonic() - started, 1),
        "ok": all(r.ok for r in reports),
        "storms": [asdict(r) for r in reports],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faults-storms.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _synced(discord: DiscordSide) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return discord.synced()

    return check


async def _storm(
    rig: Rig, discord: DiscordSide, storm: Storm, number: int, args: argparse.Namespace
) -> StormReport:
    """Send, fail for a while, then wait for every result and count."""
    report = StormReport(storm.name, args.deliveries)
    if storm.target == "discord":
        users = [str(DISCORD_USER_BASE + number * 10_000 + i) for i in range(args.deliveries)]
    else:
        users = [f"U{number}S{i:04d}" for i in range(args.deliveries)]
    await rig.sandbox_faults(slow_start=STARTING)
    report.acked = await _send(rig, discord, storm, users)
    storm_started = time.monotonic()
    await _start(rig, discord, storm, args.storm_seconds)
    await rig.sandbox_faults(slow_start=0.0)
    await asyncio.sleep(max(0.0, storm_started + args.storm_seconds - time.monotonic()))
    await _end(rig, storm)
    delivered_at: dict[str, float] = {}
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline and len(delivered_at) < len(users):
        posts = await _posts(rig, discord, storm, users)
        jobs = await rig.jobs([u for u in users if u not in delivered_at])
        now = time.monotonic()
        for user, rows in jobs.items():
            if posts.get(user) and rows and rows[0]["delivery"] == "delivered":
                delivered_at[user] = now
        await asyncio.sleep(0.25)
    await asyncio.sleep(2.0)  # a late second post would show here
    posts = await _posts(rig, discord, storm, users)
    jobs = await rig.jobs(users)
    counters = await rig.counters()
    for user in users:
        rows = jobs.get(user) or []
        count = posts.get(user, 0)
        charge = charge_problem(rows, counters.get(user, []))
        report.charged_wrong += charge is not None
        status = rows[0]["status"] if rows else None
        delivery = rows[0]["delivery"] if rows else None
        report.delivered += user in delivered_at and count == 1
        report.doubled += count > 1
        report.lost += count == 0
        report.failed += status == "failed" or delivery == "failed"
        if count != 1 or status != "succeeded" or delivery != "delivered" or charge:
            report.problems.append(
                f"{user}: posts={count} jobs={len(rows)} status={status} "
                f"delivery={delivery} charge={charge}"
            )
    if delivered_at:
        report.seconds_to_all = round(max(delivered_at.values()) - storm_started, 1)
    report.failed_calls = await _failed_calls(rig, discord, storm)
    return report


async def _send(rig: Rig, discord: DiscordSide, storm: Storm, users: list[str]) -> int:
    """Every command, at SEND_RATE; how many were acknowledged (Discord: dispatched)."""
    acked = 0

    async def one(index: int, user: str) -> None:
        nonlocal acked
        await asyncio.sleep(index / SEND_RATE)
        prompt = f"a fox in a storm {user}"
        if storm.target == "discord":
            await discord.imagine(int(user), prompt)
            acked += 1
        else:
            status = await rig.send_imagine(user, prompt)  # read before `acked` is
            acked += status == 200

    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    return acked


async def _start(rig: Rig, discord: DiscordSide, storm: Storm, seconds: float) -> None:
    retry_after = RETRY_AFTER if storm.status == 429 else None
    if storm.target == "slack":
        for method in ("*", "upload"):
            await rig.slack_fault(
                method=method,
                action="fail",
                status=storm.status,
                retry_after=retry_after,
                seconds=seconds,
            )
    elif storm.target == "discord":
        discord.fake.outage(storm.status, seconds, path=outage_paths(), retry_after=RETRY_AFTER)
    else:
        fault: dict[str, Any] = {
            "status": storm.status,
            "count": 1 << 30,
            "method": "GET",
            "path_prefix": "/files/",
        }
        if retry_after is not None:
            fault["retry_after"] = retry_after
        await rig.sandbox_faults(http=[fault])


async def _end(rig: Rig, storm: Storm) -> None:
    if storm.target == "files":
        await rig.sandbox_faults(http=[])
    elif storm.target == "slack":
        await rig.clear_slack_faults()


async def _posts(rig: Rig, discord: DiscordSide, storm: Storm, users: list[str]) -> dict[str, int]:
    if storm.target == "discord":
        return discord.results()
    ledger = await rig.poll_slack()
    return {user: len(ledger.uploads.get(user, [])) for user in users}


async def _failed_calls(rig: Rig, discord: DiscordSide, storm: Storm) -> int:
    if storm.target == "discord":
        return sum(1 for c in discord.fake.calls if c.status == storm.status)
    if storm.target == "slack":
        ledger = await rig.poll_slack()
        return sum(1 for e in ledger.faults if e.get("status") == storm.status)
    return 0  # the sandbox does not count the faults it answered


def print_report(result: dict[str, Any]) -> None:
    """The short human report."""
    print(
        f"storm bench: {result['deliveries']} deliveries per storm, "
        f"{result['storm_seconds']:g} s of failures, {result['seconds']} s"
    )
    print(
        f"{'storm':<12} {'acked':>5} {'once':>5} {'twice':>5} {'lost':>4} {'failed':>6} "
        f"{'charge':>6} {'errors':>6} {'all in s':>8}"
    )
    for s in result["storms"]:
        print(
            f"{s['storm']:<12} {s['acked']:>5} {s['delivered']:>5} {s['doubled']:>5} "
            f"{s['lost']:>4} {s['failed']:>6} {s['charged_wrong']:>6} {s['failed_calls']:>6} "
            f"{s['seconds_to_all'] if s['seconds_to_all'] is not None else '-':>8}"
        )
        for problem in s["problems"][:5]:
            print(f"    {problem}")
    print("PASS" if result["ok"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = asyncio.run(run_storms(args))
    print_report(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
