"""`python -m bench`: Conjure's benchmark (issue 6), every server a process on loopback.

Starts the sandbox (speed 0), the fake Slack Web API, `conjure serve` (SQLite, or `--db
postgres`) and a bare slack-bolt app; then measures ack latency against the bare app, the bot's
overhead beyond model time, a burst of commands at once against a 2 s model, webhooks delivered
per second, and the server's memory with many jobs in flight. Prints a table and writes JSON
under bench/results/.

On PostgreSQL, `serve` can be several processes (`--workers N`, `--instances N`); CPU figures
are summed over all of them, and given for each. `--scaling` adds the webhooks phase with one
process and with two, each on a fresh stack (bench/scaling.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases, report, scaling, speed
from bench.stack import POSTGRES_URL, running_stack


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Conjure on loopback: ack latency against bare bolt, overhead, "
        "webhook throughput and memory. Writes bench/results/latest.json.",
    )
    p.add_argument("-n", "--n", type=int, default=500, help="slash commands measured (500)")
    p.add_argument("-c", "--c", type=int, default=20, help="their concurrency (20)")
    p.add_argument("--webhooks", type=int, default=3000, help="terminal webhooks fired (3000)")
    p.add_argument(
        "--webhook-concurrency", type=int, default=32, help="connections firing them (32)"
    )
    p.add_argument(
        "--webhook-rounds",
        type=int,
        default=3,
        help="times the webhooks are held and fired; the round with the median CPU per "
        "webhook is reported, with every round's figure beside it (3)",
    )
    p.add_argument(
        "--inflight", type=int, default=10_000, help="jobs held in flight for RSS (10000)"
    )
    p.add_argument(
        "--serial", type=int, default=30, help="commands sent one at a time, for overhead (30)"
    )
    p.add_argument(
        "--ttft", type=int, default=20, help="/ask sent one at a time, streamed (20; 0: none)"
    )
    p.add_argument("--warmup", type=int, default=50, help="commands sent to each app first (50)")
    p.add_argument(
        "--burst", type=int, default=500, help="commands sent all at once (500; 0: none)"
    )
    p.add_argument(
        "--burst-model-seconds",
        type=float,
        default=2.0,
        help="how long each of their predictions runs (2)",
    )
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument(
        "--workers", type=int, default=1, help="`conjure serve --workers N` (1; postgres)"
    )
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        help="separate `conjure serve` on their own ports, one database; commands go "
        "round-robin (1; postgres)",
    )
    p.add_argument(
        "--scaling",
        action="store_true",
        help="also the webhooks phase with 1 and with 2 serve processes, a fresh stack each, "
        "and the efficiency of the second (postgres)",
    )
    p.add_argument(
        "--scaling-only", action="store_true", help="only that, not the main run (postgres)"
    )
    p.add_argument(
        "--scale-by",
        choices=["workers", "instances"],
        default="workers",
        help="how --scaling makes 2 processes (workers)",
    )
    p.add_argument(
        "--scaling-rate",
        type=float,
        default=80.0,
        help="webhooks a second for --scaling's efficiency, a load one process carries (80)",
    )
    p.add_argument(
        "--scaling-rounds",
        type=int,
        default=1,
        help="--scaling's runs of each: 2 runs 1, 2, 2, 1 processes and averages each, so that "
        "the machine's speed drifting between them cancels (1)",
    )
    p.add_argument(
        "--postgres-url", default=POSTGRES_URL, help=f"server for --db postgres ({POSTGRES_URL})"
    )
    p.add_argument("--max-seconds", type=float, default=1800, help="stop the run after (1800)")
    p.add_argument("--out", type=Path, default=report.RESULTS, help="where the JSON goes")
    p.add_argument("--keep-logs", action="store_true", help="print where the servers' logs are")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Refuse what cannot run: several serve processes need a shared PostgreSQL database."""
    if args.workers < 1 or args.instances < 1:
        p.error("--workers and --instances are at least 1")
    if args.webhook_rounds < 1:
        p.error("--webhook-rounds is at least 1")
    several = args.workers > 1 or args.instances > 1 or args.scaling or args.scaling_only
    if several and args.db != "postgres":
        p.error("--workers, --instances and --scaling need --db postgres")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    deadline = time.monotonic() + args.max_seconds
    results: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {**report.machine(), "speed_gauge_ms": {"before": speed.gauge()}},
        "args": {
            "db": args.db,
            "n": args.n,
            "c": args.c,
            "webhooks": args.webhooks,
            "webhook_concurrency": args.webhook_concurrency,
            "webhook_rounds": args.webhook_rounds,
            "inflight": args.inflight,
            "warmup": args.warmup,
            "serial": args.serial,
            "ttft": args.ttft,
            "burst": args.burst,
            "burst_model_seconds": args.burst_model_seconds,
            "workers": args.workers,
            "instances": args.instances,
            "scaling": args.scaling or args.scaling_only,
            "scaling_only": args.scaling_only,
            "scale_by": args.scale_by,
            "scaling_rate": args.scaling_rate,
            "scaling_rounds": args.scaling_rounds,
        },
    }
    if not args.scaling_only:
        await main_run(args, results, deadline)
    if args.scaling or args.scaling_only:
        results["scaling"] = await scaling.run(args, deadline, step)
    results["machine"]["speed_gauge_ms"]["after"] = speed.gauge()
    results["seconds"] = round((datetime.now(UTC) - started_at).total_seconds(), 1)
    results["aims_met"] = report.aims_met(results)
    return results


async def main_run(args: argparse.Namespace, results: dict[str, Any], deadline: float) -> None:
    """Every phase but the scaling one, on one stack."""
    work = Path(tempfile.mkdtemp(prefix="conjure-bench-"))
    async with running_stack(
        args.db, work, args.postgres_url, workers=args.workers, instances=args.instances
    ) as stack:
        if args.keep_logs:
            print(f"server logs: {work / 'logs'}", file=sys.stderr)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            bench = phases.Bench.on(stack, session, deadline)
            idle = bench.rss_mib()
            step("warming up")
            await phases.warm_up(bench, args.warmup, args.c)
            step(f"bare bolt: {args.n} commands at concurrency {args.c}")
            bare = await phases.bare_acks(bench, args.n, args.c)
            step(f"Conjure: {args.n} commands at concurrency {args.c}, until delivered")
            cmd = await phases.commands(bench, args.n, args.c)
            ratio = None
            if bare.get("n") and cmd["ack"].get("n"):
                ratio = round(cmd["ack"]["p99"] / bare["p99"], 2)
            results["ack"] = {"conjure": cmd["ack"], "bare": bare, "p99_ratio": ratio}
            for key in ("status_posted", "end_to_end", "model_time", "overhead"):
                results[key] = cmd[key]
            results["cpu_ms_per_command"] = cmd["cpu_ms_per_command"]
            results["cpu_ms_per_command_by_process"] = cmd["cpu_ms_per_command_by_process"]
            results["slack_calls_per_command"] = cmd["slack_calls_per_command"]
            results["delivered"] = cmd["delivered"]
            if args.serial:
                step(f"Conjure: {args.serial} commands one at a time")
                results["one_at_a_time"] = await phases.one_at_a_time(bench, args.serial)
            if args.ttft:
                step(f"Conjure: {args.ttft} /ask one at a time, streamed")
                results["ask_streamed"] = await phases.time_to_first_token(bench, args.ttft)
            if args.burst:
                step(
                    f"Conjure: a burst of {args.burst} commands at once, "
                    f"a {args.burst_model_seconds:g} s model"
                )
                results["burst"] = await phases.burst(bench, args.burst, args.burst_model_seconds)
            output = await phases.output_urls(bench)
            # Webhooks first, on jobs held just for them: held jobs silent for 5 minutes are
            # polled by the sweeper, which would compete with the webhooks being measured.
            # Several rounds: on this 2-core VM one round's CPU per webhook moved by up to a
            # third within a run (and more between runs), so one round alone says little.
            rounds: list[dict[str, Any]] = []
            fired_before: set[str] = set()
            for number in range(args.webhook_rounds):
                of = f" (round {number + 1} of {args.webhook_rounds})"
                step(f"holding {args.webhooks} jobs for the webhooks{of}")
                first = number * args.webhooks  # tags stay unique across the run
                await phases.fill_in_flight(bench, args.webhooks, args.c, first=first)
                step(f"firing {args.webhooks} terminal webhooks{of}")
                rounds.append(
                    await phases.webhooks(
                        bench,
                        args.webhooks,
                        args.webhook_concurrency,
                        output,
                        fired_before=fired_before,
                    )
                )
            results["webhooks"] = phases.median_round(rounds)
            step(f"holding {args.inflight} jobs in flight")
            first = args.webhook_rounds * args.webhooks
            fly = await phases.fill_in_flight(bench, args.inflight, args.c, first=first)
            results["inflight_ack"] = fly["ack"]
            peak = bench.rss_mib()
            results["memory"] = {
                "idle_rss_mib": idle.get("VmRSS"),
                "inflight": fly["inflight"],
                "inflight_fill_seconds": fly["seconds"],
                "inflight_rss_mib": fly["rss"].get("VmRSS"),
                "peak_rss_mib": peak.get("VmHWM"),
            }


def step(text: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = check(p, p.parse_args(argv))
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    print(report.table(results))
    path = report.write(results, args.out)
    print(f"\nwrote {path} and {path.parent / 'latest.json'}")
    return 0
