"""The scaling measurement (`python -m bench --scaling`): the webhooks phase on PostgreSQL with
one `conjure serve` process, then, on a fresh stack, with two, and how much of the second
process's CPU turns into deliveries.

Two processes are `--workers 2` (one port) or, with `--scale-by instances`, two instances on their
own ports sharing the database. Each run holds twice `--webhooks` jobs in flight and fires
`--webhooks` terminal webhooks as the main run does (as fast as they are taken: delivered/s),
then as many at `--scaling-rate` a second; CPU is summed over every serve process. The efficiency
of the second is (delivered per serve-CPU-second with 2) / (the same with 1) at that rate: 1.0
when two processes spend what one does per webhook, lower when sharing the work costs CPU. At
full load the same ratio is also given (`efficiency_at_full_load`), but there it measures the
machine more than Conjure: one serve process already keeps the 2 cores busy together with
PostgreSQL, the sandbox, the fake Slack and the load generator, and a second one only adds
contention for them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases, speed
from bench.stack import running_stack

PROCESSES = (1, 2)


def efficiency(one: dict[str, Any], two: dict[str, Any]) -> float | None:
    """Delivered per serve-CPU-second with two processes over the same with one."""
    a, b = one.get("delivered_per_cpu_second"), two.get("delivered_per_cpu_second")
    return round(b / a, 3) if a and b else None


def at_the_same_speed(
    ratio: float | None, one: dict[str, Any], two: dict[str, Any]
) -> float | None:
    """`ratio` as if both runs had met the machine at one speed: CPU per webhook moves with the
    speed gauge (bench/speed.py), and the two runs are minutes apart on a VM whose speed drifts."""
    g1, g2 = _mean_gauge(one), _mean_gauge(two)
    return round(ratio * g2 / g1, 3) if ratio and g1 and g2 else None


def _mean_gauge(run: dict[str, Any]) -> float | None:
    gauge = run.get("speed_gauge_ms") or {}
    readings = [v for v in (gauge.get("before"), gauge.get("after")) if v]
    return sum(readings) / len(readings) if readings else None


async def measure(args: argparse.Namespace, processes: int, deadline: float) -> dict[str, Any]:
    """The webhooks phase on a fresh stack of `processes` serve processes."""
    workers = processes if args.scale_by == "workers" else 1
    instances = processes if args.scale_by == "instances" else 1
    work = Path(tempfile.mkdtemp(prefix=f"conjure-bench-scaling{processes}-"))
    gauge_before = speed.gauge()
    async with running_stack(
        args.db, work, args.postgres_url, workers=workers, instances=instances
    ) as stack:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            bench = phases.Bench.on(stack, session, deadline)
            await phases.warm_up(bench, args.warmup, args.c)
            output = await phases.output_urls(bench)
            await phases.fill_in_flight(bench, args.webhooks * 2, args.c)
            done: set[str] = set()
            fired = await phases.webhooks(
                bench, args.webhooks, args.webhook_concurrency, output, fired_before=done
            )
            paced = await phases.webhooks(
                bench, args.webhooks, args.webhook_concurrency, output, args.scaling_rate, done
            )
    return {
        "processes": processes,
        "speed_gauge_ms": {"before": gauge_before, "after": speed.gauge()},
        "workers": workers,
        "instances": instances,
        # False when the run's --max-seconds cut the phase short: fewer webhooks than asked.
        "complete": fired["fired"] == args.webhooks and fired["delivered"] == fired["fired"],
        "fired": fired["fired"],
        "delivered": fired["delivered"],
        "delivered_per_second": fired["delivered_per_second"],
        "steady_per_second": fired["steady_per_second"],
        "cpu_seconds": fired["cpu_seconds"],
        "cpu_ms_per_webhook": fired["cpu_ms_per_webhook"],
        "cpu_ms_per_webhook_by_process": fired["cpu_ms_per_webhook_by_process"],
        "delivered_per_cpu_second": fired["delivered_per_cpu_second"],
        "at_rate": {
            "rate": args.scaling_rate,
            "complete": paced["fired"] == args.webhooks and paced["delivered"] == paced["fired"],
            "delivered_per_second": paced["delivered_per_second"],
            "cpu_ms_per_webhook": paced["cpu_ms_per_webhook"],
            "cpu_ms_per_webhook_by_process": paced["cpu_ms_per_webhook_by_process"],
            "delivered_per_cpu_second": paced["delivered_per_cpu_second"],
        },
    }


def order(rounds: int) -> list[int]:
    """The processes of each run: 1, 2; with two rounds 1, 2, 2, 1 (a drift in the machine's
    speed over the runs weighs on both the same)."""
    ahead = list(PROCESSES)
    return [n for i in range(rounds) for n in (ahead if i % 2 == 0 else ahead[::-1])]


def average(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's shape, each number the mean over `measured` (the rest as the first has it)."""
    first = measured[0]
    mean: dict[str, Any] = {}
    for key, value in first.items():
        values = [m.get(key) for m in measured]
        if isinstance(value, dict):
            dicts = [v for v in values if isinstance(v, dict)]
            same = all(d.keys() == value.keys() for d in dicts)
            mean[key] = average(dicts) if same else _by_rank(dicts)
        elif isinstance(value, bool):
            mean[key] = all(values)  # "complete": only if every run was
        elif isinstance(value, int | float):
            numbers = [v for v in values if isinstance(v, int | float)]
            mean[key] = round(sum(numbers) / len(numbers), 3) if key != "processes" else value
        else:
            mean[key] = value
    return mean


def _by_rank(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-process figures of runs whose processes differ (new pids each run): the busiest of
    each run averaged together, then the next, and so on."""
    ranked = [sorted(m.values(), reverse=True) for m in measured]
    count = min(len(r) for r in ranked)
    return {
        f"process {i + 1}": round(sum(r[i] for r in ranked) / len(ranked), 3) for i in range(count)
    }


async def run(args: argparse.Namespace, deadline: float, step: Any) -> dict[str, Any]:
    """Both measurements, a fresh stack each, and the efficiency of the second process."""
    measured: dict[str, list[dict[str, Any]]] = {str(n): [] for n in PROCESSES}
    for processes in order(max(1, getattr(args, "scaling_rounds", 1))):
        step(f"scaling: {args.webhooks} webhooks with {processes} serve process(es)")
        measured[str(processes)].append(await measure(args, processes, deadline))
    runs = {key: average(each) for key, each in measured.items()}
    return {
        "rounds": len(measured["1"]),
        "each_run": measured,  # in the order run, for a look at the machine's drift
        "scale_by": args.scale_by,
        "webhooks": args.webhooks,
        **runs,
        # At a rate one process carries: what the second process costs (coordination), not
        # what two cores shared by five busy processes can no longer give (saturation).
        "efficiency": (rated := efficiency(runs["1"]["at_rate"], runs["2"]["at_rate"])),
        "efficiency_at_full_load": efficiency(runs["1"], runs["2"]),
        # The same, corrected for the machine's speed drift between the two runs (an estimate).
        "efficiency_at_the_same_speed": at_the_same_speed(rated, runs["1"], runs["2"]),
    }
