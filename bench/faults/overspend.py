"""Overspend: does a monthly budget hold against Replicate's own bill (issue 11)?

`python -m bench.faults.overspend [--commands 1000] [--budget 0.50] [--factor 30]` starts on
loopback the Replicate sandbox, the benchmark's fake Slack and two `conjure serve` instances on
one fresh PostgreSQL database, sets one user's monthly budget with the operator CLI
(`conjure quota set`), makes every prediction run `factor` times its usual length (the sandbox's
`run_time_factor`), and sends that user's `--commands` signed `/transcribe` commands all at once,
split between the two instances. When every admitted job has finished it adds up the bill as the
sandbox sees it (each prediction's `metrics.predict_time` x the model's per-second price, read
from `GET /v1/predictions`, never from Conjure's database) and checks that it is within the
budget, that Conjure recorded exactly that spend, and that no hold was left behind.

Both instances are given one public URL, as behind a load balancer: a proxy in this process that
hands Replicate's webhooks to the two in turn, so an instance often finishes a job the other one
started. (Per-instance URLs would also work, but would never show that.) Slack's `response_url`s
point at this process too, so every refusal is counted by what it says.

The sandbox runs at the speed at which its `/transcribe` model takes the time Conjure's catalog
expects (`expected_seconds`): 30 x that is a run of 10 minutes, which only the job's cost ceiling
(`Cancel-After`, 3 x expected) stops. Prints a short report, writes
bench/results/faults-overspend.json, exits 1 when the bill passes the budget (or another check
fails).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
from aiohttp import web

from bench.procs import REPO, Child, child_env, free_port, start, stop, wait_ready
from bench.stack import (
    POSTGRES_URL,
    SANDBOX_TOKEN,
    SIGNING_SECRET,
    database,
    slack_serve_env,
    start_fake_slack,
    start_sandbox,
)
from bot.catalog.loader import default_catalog
from bot.money import MICROS_PER_USD, format_usd
from bot.sandbox.config import generate_webhook_secret
from bot.sandbox.models import WHISPER
from bot.sandbox.runner import SPEECH_STEPS
from tests.fakes.slack_api import TEAM_ID, FakeSlack
from tests.slack_harness import command_fields, sign

RESULT = REPO / "bench" / "results" / "faults-overspend.json"
COMMAND = "transcribe"
USER = "U0OVERSPEND"
CHANNEL = "C0OVERSPEND"
BUDGET_WORDS = "monthly budget"  # what a refusal for the USD limit says
POLL_INTERVAL = 3600  # Conjure's polling: off in effect; webhooks (and the sweeper) finish jobs
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


@dataclass
class Front:
    """This process's HTTP face: the load balancer Replicate's webhooks go to (it hands them to
    the instances in turn) and Slack's response_url endpoint (it records what each got)."""

    backends: list[str]
    responses: dict[str, list[str]] = field(default_factory=dict)
    forwarded: list[int] = field(default_factory=list)  # webhooks per backend
    failed_forwards: int = 0
    url: str = ""
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/webhooks/replicate", self._webhook)
        app.router.add_post("/response/{response_id}", self._response)
        return app

    async def _webhook(self, request: web.Request) -> web.Response:
        """Forward to the next instance as it came (body, query, signature headers)."""
        assert self._session is not None
        index = next(self._turn) % len(self.backends)
        self.forwarded[index] += 1
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        target = self.backends[index] + request.path_qs
        try:
            async with self._session.post(
                target, data=await request.read(), headers=headers
            ) as answer:
                return web.Response(status=answer.status, body=await answer.read())
        except (aiohttp.ClientError, TimeoutError):
            self.failed_forwards += 1
            return web.Response(status=502)

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.setdefault(request.match_info["response_id"], []).append(
            str(body.get("text", ""))
        )
        return web.Response(text="ok")

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Front]:
        self.forwarded = [0] * len(self.backends)
        timeout = aiohttp.ClientTimeout(total=30)
        self._session = aiohttp.ClientSession(timeout=timeout)
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()
            await self._session.close()


def sandbox_speed() -> float:
    """The sandbox speed at which a usual `/transcribe` run takes what the catalog expects."""
    model = default_catalog().models[default_catalog().command(COMMAND).model]  # type: ignore[union-attr]
    return model.price.expected_seconds / (SPEECH_STEPS * WHISPER.step_seconds)


def prices_by_ref() -> dict[str, Decimal]:
    """Per-second USD price of each built-in model, by `owner/name` (a prediction's `model`)."""
    prices = {}
    for model in default_catalog().models.values():
        if model.price.per_second_usd is not None:
            prices[model.owner_name] = Decimal(str(model.price.per_second_usd))
    return prices


def _cli(database_url: str, *argv: str) -> str:
    """Run `conjure <argv>` (the operator CLI) against the bench database."""
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", *argv],
        env=child_env({"CONJURE_DATABASE_URL": database_url}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"conjure {' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


async def _send(
    session: aiohttp.ClientSession, url: str, addresses: FakeSlack, index: int, delay: float = 0
) -> tuple[int, str]:
    """One signed `/transcribe` from the bench's one user, `delay` seconds from now; its ack's
    status and body."""
    await asyncio.sleep(delay)
    fields = command_fields(
        addresses,
        f"/{COMMAND}",
        f"https://example.com/overspend/meeting-{index}.mp3",
        user_id=USER,
        user_name="overspender",
        channel_id=CHANNEL,
        channel_name="overspend",
        response_id=f"c{index}",
    )
    body = urlencode(fields)
    stamp = int(time.time())
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(stamp),
        "x-slack-signature": sign(SIGNING_SECRET, stamp, body),
    }
    try:
        async with session.post(f"{url}/slack/events", data=body, headers=headers) as answer:
            return answer.status, await answer.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, type(exc).__name__


async def _predictions(session: aiohttp.ClientSession, sandbox_url: str) -> list[dict[str, Any]]:
    """Every prediction the sandbox created, through its Replicate API (`next` pages)."""
    found: list[dict[str, Any]] = []
    url: str | None = f"{sandbox_url}/v1/predictions"
    auth = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    while url:
        async with session.get(url, headers=auth) as answer:
            answer.raise_for_status()
            page = await answer.json()
        found += page["results"]
        url = page.get("next")
    return found


async def _jobs(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, status, reservation, delivery, estimated_micros, actual_micros,"
        " prediction_id FROM job WHERE user_id = $1",
        USER,
    )


def _finished(jobs: list[asyncpg.Record]) -> bool:
    """Terminal, the hold settled or released, and the outcome posted (or given up)."""
    return all(
        job["status"] in TERMINAL
        and job["reservation"] != "held"
        and job["delivery"] not in ("pending", "delivering")
        for job in jobs
    )


async def run_overspend(args: argparse.Namespace) -> dict[str, Any]:
    """Run the bench once; the report as a dict (also written to RESULT)."""
    budget_micros = int(Decimal(str(args.budget)) * MICROS_PER_USD)
    speed = args.speed if args.speed is not None else sandbox_speed()
    prices = prices_by_ref()
    secret = generate_webhook_secret()
    children: list[Child] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = Path(
            args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="overspend-"))
        )
        logs = work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            async with database("postgres", work, args.postgres_url) as database_url:
                sandbox = start_sandbox(logs, work, secret, speed)
                children.append(sandbox)
                slack = start_fake_slack(logs, work)
                children.append(slack)
                ports = [free_port(), free_port()]
                front = Front([f"http://127.0.0.1:{p}" for p in ports])
                async with front.serving():
                    for number, port in enumerate(ports, 1):
                        env = {
                            **slack_serve_env(slack, sandbox, secret, database_url),
                            "CONJURE_PUBLIC_URL": front.url,  # the same for both
                            "CONJURE_POLL_INTERVAL": str(POLL_INTERVAL),
                        }
                        children.append(
                            start(
                                f"serve-{number}",
                                [
                                    *("-m", "bot.cli", "serve", "--host", "127.0.0.1"),
                                    *("--port", str(port)),
                                ],
                                port,
                                logs,
                                env=child_env(env),
                                cwd=work,
                            )
                        )
                    await wait_ready(sandbox, "/_sandbox/stats")
                    await wait_ready(slack, "/_bench/events")
                    # Both started at once on the fresh database, each migrating it at start.
                    for serve in children[2:]:
                        await wait_ready(serve, "/healthz", timeout=60)
                    # The budget, set as an operator would (README: `conjure quota set`).
                    _cli(
                        database_url,
                        *("quota", "set", "--platform", "slack", "--workspace", TEAM_ID),
                        *("--user", USER, "--usd-per-month", f"{args.budget}"),
                    )
                    limits = _cli(
                        database_url,
                        *("quota", "show", "--platform", "slack", "--workspace", TEAM_ID),
                        *("--user", USER),
                    )
                    report = await _measure(
                        args, front, sandbox, children[2:], database_url, prices, budget_micros
                    )
                report.update(
                    sandbox_speed=speed, limits_shown=limits, log_tails=_tails(children, report)
                )
        finally:
            for child in reversed(children):
                stop(child)
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _tails(children: list[Child], report: dict[str, Any]) -> dict[str, str]:
    """The end of every log, kept in the result only when a check failed."""
    if report["passed"]:
        return {}
    return {child.name: child.tail(15) for child in children}


async def _measure(
    args: argparse.Namespace,
    front: Front,
    sandbox: Child,
    serves: list[Child],
    database_url: str,
    prices: dict[str, Decimal],
    budget_micros: int,
) -> dict[str, Any]:
    addresses = FakeSlack()
    addresses.url = front.url  # response_url: this process counts what each command was told
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    db = await asyncpg.connect(database_url)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.post(
                f"{sandbox.url}/_sandbox/faults", json={"run_time_factor": args.factor}
            ) as answer:
                answer.raise_for_status()
            sent_at = time.monotonic()
            acks = await asyncio.gather(
                *(
                    _send(
                        session,
                        serves[index % len(serves)].url,
                        addresses,
                        index,
                        args.spread * index / args.commands,
                    )
                    for index in range(args.commands)
                )
            )
            send_seconds = time.monotonic() - sent_at
            # Until every admitted job is finished and every command has had its answer.
            deadline = time.monotonic() + args.timeout
            while True:
                jobs = await _jobs(db)
                predictions = await _predictions(session, sandbox.url)
                answered = len(jobs) + len(_replies(acks, front))
                done = (
                    _finished(jobs)
                    and all(p["status"] in TERMINAL for p in predictions)
                    and answered >= args.commands
                )
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            wait_seconds = time.monotonic() - sent_at
            counters = await db.fetch(
                "SELECT scope, period, jobs, reserved_micros, spent_micros FROM usage_counter"
                " WHERE subject = $1",
                f"slack:{TEAM_ID}:{USER}",
            )
    finally:
        await db.close()
    return _judge(
        args,
        front,
        acks,
        jobs,
        predictions,
        counters,
        prices,
        budget_micros,
        timed_out=not done,
        send_seconds=send_seconds,
        wait_seconds=wait_seconds,
    )


def _replies(acks: list[tuple[int, str]], front: Front) -> dict[int, str]:
    """What each answered command was told, by its index: in the ack itself (an answer ready
    within Slack's deadline rides in it) or, later, through its response_url."""
    told: dict[int, str] = {}
    for index, (_, body) in enumerate(acks):
        texts = list(front.responses.get(f"c{index}", []))
        if body.strip():
            with contextlib.suppress(ValueError, AttributeError):
                texts.insert(0, str(json.loads(body).get("text", "")))
        if texts:
            told[index] = texts[-1]
    return told


def _judge(
    args: argparse.Namespace,
    front: Front,
    acks: list[tuple[int, str]],
    jobs: list[asyncpg.Record],
    predictions: list[dict[str, Any]],
    counters: list[asyncpg.Record],
    prices: dict[str, Decimal],
    budget_micros: int,
    *,
    timed_out: bool,
    send_seconds: float,
    wait_seconds: float,
) -> dict[str, Any]:
    """The numbers and the checks."""
    # Replicate's bill, from the sandbox alone: predict_time x price, summed exactly, and per
    # prediction in whole micro-dollars rounded up (how Conjure records a charge).
    bill = Decimal(0)
    bill_micros = 0
    by_prediction: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for prediction in predictions:
        seconds = Decimal(str((prediction.get("metrics") or {}).get("predict_time") or 0))
        cost = seconds * prices[prediction["model"]]
        bill += cost
        micros = int((cost * MICROS_PER_USD).to_integral_value(rounding=ROUND_CEILING))
        by_prediction[prediction["id"]] = micros
        bill_micros += micros
        statuses[prediction["status"]] = statuses.get(prediction["status"], 0) + 1
    recorded = {job["prediction_id"]: job["actual_micros"] or 0 for job in jobs}
    spend_jobs = sum(job["actual_micros"] or 0 for job in jobs)
    month = [row for row in counters if row["period"].startswith("month:")]
    live = [row for row in counters if row["period"] == "live"]
    spend_counter = sum(row["spent_micros"] for row in month)
    reserved_left = sum(row["reserved_micros"] for row in counters)
    in_flight_left = sum(row["jobs"] for row in live)
    replies = list(_replies(acks, front).values())
    refused_budget = sum(BUDGET_WORDS in text for text in replies)
    ceilings = {job["estimated_micros"] for job in jobs}
    checks = {
        "bill within budget": bill * MICROS_PER_USD <= budget_micros,
        "every command acked 200": all(status == 200 for status, _ in acks),
        "every command admitted or refused": len(jobs) + len(replies) == args.commands,
        "every refusal names the budget": refused_budget == len(replies),
        "every admitted job finished": not timed_out and _finished(jobs),
        "one prediction per admitted job": sorted(by_prediction)
        == sorted(p for p in recorded if p),
        "each job charged its prediction's bill": all(
            recorded.get(pid) == micros for pid, micros in by_prediction.items()
        ),
        "spend recorded = bill": spend_jobs == spend_counter == bill_micros,
        "no hold left": reserved_left == 0 and in_flight_left == 0,
    }
    return {
        "commands": args.commands,
        "factor": args.factor,
        "spread_seconds": args.spread,
        "instances": len(front.backends),
        "budget_usd": args.budget,
        "admitted": len(jobs),
        "refused": len(replies),
        "refused_for_budget": refused_budget,
        "ceiling_per_job_usd": [format_usd(c) for c in sorted(ceilings)],
        "predictions": len(predictions),
        "prediction_statuses": statuses,
        "bill_usd": str(bill),
        "bill_micros": bill_micros,
        "conjure_spend_micros_jobs": spend_jobs,
        "conjure_spend_micros_counter": spend_counter,
        "reserved_micros_left": reserved_left,
        "in_flight_left": in_flight_left,
        "webhooks_per_instance": front.forwarded,
        "webhook_forward_failures": front.failed_forwards,
        "send_seconds": round(send_seconds, 2),
        "finish_seconds": round(wait_seconds, 1),
        "checks": checks,
        "passed": all(checks.values()),
    }


def print_report(report: dict[str, Any]) -> None:
    budget = Decimal(str(report["budget_usd"]))
    print(
        f"overspend: {report['commands']} x /{COMMAND} from one user on "
        f"{report['instances']} instances, runs {report['factor']:g}x their estimate"
    )
    print(
        f"  admitted {report['admitted']}, refused {report['refused']} "
        f"({report['refused_for_budget']} for the budget); ceiling a job "
        f"{', '.join(report['ceiling_per_job_usd'])}"
    )
    print(
        f"  Replicate's bill ${Decimal(report['bill_usd']):.6f} of a ${budget:.2f} budget "
        f"({report['predictions']} predictions: {report['prediction_statuses']})"
    )
    print(
        f"  Conjure's spend {format_usd(report['conjure_spend_micros_counter'])} "
        f"(jobs {format_usd(report['conjure_spend_micros_jobs'])}, bill "
        f"{format_usd(report['bill_micros'])}); left held "
        f"{format_usd(report['reserved_micros_left'])}, in flight {report['in_flight_left']}"
    )
    print(
        f"  webhooks per instance {report['webhooks_per_instance']}; sent in "
        f"{report['send_seconds']} s, all finished after {report['finish_seconds']} s, "
        f"{report['duration_seconds']} s in all"
    )
    for name, ok in report["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print(f"  -> {RESULT.relative_to(REPO)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=0.50, help="the user's USD a month")
    parser.add_argument("--factor", type=float, default=30, help="sandbox run_time_factor")
    parser.add_argument(
        "--speed", type=float, default=None, help="sandbox speed (default: runs as expected)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for jobs")
    parser.add_argument(
        "--spread",
        type=float,
        default=0,
        help="send the commands evenly over this many seconds instead of all at once (so some "
        "arrive while others settle)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--work", help="keep the logs here (default: a temporary directory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    report = asyncio.run(run_overspend(parse_args(argv)))
    print_report(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
