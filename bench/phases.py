"""The measurements, one function each, run in order against a running Stack.

1+2. `commands`: N signed /imagine commands at concurrency C; ack latency, then the time from
     each command to its files shared in the fake Slack, less the sandbox's predict_time.
5.   `bare_acks`: the same N and C against the bare bolt app.
4.   `fill_in_flight`: with the sandbox holding predictions in `starting`, jobs started through
     slash commands until the given number is in flight; then the server's VmRSS.
3.   `webhooks`: signed terminal webhooks for those jobs, fired as fast as they are taken;
     deliveries (files shared in the job's thread in the fake Slack) per second.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench import webhooks as hooks
from bench.observe import SandboxReader, SlackFeed, prompt_tag
from bench.procs import cpu_used, memory_kib, tree, tree_cpu
from bench.slash import Sent, SlashSender, acked, tag
from bench.stack import SANDBOX_TOKEN, SIGNING_SECRET, Stack
from bench.stats import summary_ms

HOLD_SECONDS = 3600.0  # sandbox slow_start: predictions stay `starting` for the whole run
FLY = "fly"  # the tag phase of the jobs held in flight
FLY_PREFIX = tag(FLY, 0).removesuffix("0")
FILL_BATCH = 250  # commands sent before waiting for their predictions


@dataclass
class Bench:
    """The stack plus the clients the phases share."""

    stack: Stack
    session: aiohttp.ClientSession
    feed: SlackFeed
    sandbox: SandboxReader
    deadline: float

    @classmethod
    def on(cls, stack: Stack, session: aiohttp.ClientSession, deadline: float) -> Bench:
        return cls(
            stack,
            session,
            SlackFeed(stack.slack.url, session),
            SandboxReader(stack.sandbox.url, SANDBOX_TOKEN, session),
            deadline,
        )

    def sender(self, app_url: str | list[str]) -> SlashSender:
        return SlashSender(app_url, self.stack.slack.url, SIGNING_SECRET)

    def conjure(self) -> SlashSender:
        """Commands to Conjure: round-robin over its instances."""
        return self.sender([serve.url for serve in self.stack.serves])

    def remaining(self, at_most: float) -> float:
        return max(1.0, min(at_most, self.deadline - time.monotonic()))

    def cpu_reading(self) -> dict[str, float]:
        """CPU seconds each `conjure serve` process (instances and their workers) has used."""
        return tree_cpu({serve.name: serve.pid for serve in self.stack.serves})

    def rss_mib(self) -> dict[str, float]:
        """VmRSS and VmHWM summed over every `conjure serve` process."""
        total: dict[str, float] = {}
        for serve in self.stack.serves:
            for pid in tree(serve.pid):
                try:
                    kib = memory_kib(pid)
                except OSError:
                    continue
                for key, value in kib.items():
                    total[key] = total.get(key, 0) + value
        return {key: round(value / 1024, 1) for key, value in total.items()}


def note(text: str) -> None:
    """Progress on stderr."""
    print(f"  {text}", file=sys.stderr, flush=True)


def ack_summary(sent: list[Sent]) -> dict[str, Any]:
    ok = [s for s in sent if acked(s)]
    return {**summary_ms([s.seconds for s in ok]), "failed": len(sent) - len(ok)}


async def warm_up(bench: Bench, count: int, concurrency: int) -> None:
    """A few commands through both apps (bolt's auth.test, connection pools, SQLite pages)."""
    await bench.sender(bench.stack.bare.url).send(
        "warmbare", count, concurrency, deadline=bench.deadline
    )
    sent = await bench.conjure().send("warm", count, concurrency, deadline=bench.deadline)
    await bench.feed.wait_for([s.tag for s in sent], uploaded=True, timeout=bench.remaining(60))


async def bare_acks(bench: Bench, n: int, c: int) -> dict[str, Any]:
    sent = await bench.sender(bench.stack.bare.url).send("bare", n, c, deadline=bench.deadline)
    return ack_summary(sent)


async def commands(bench: Bench, n: int, c: int) -> dict[str, Any]:
    """Acks, then end to end: status message, files shared, overhead beyond model time."""
    cpu, calls = bench.cpu_reading(), await bench.feed.calls()
    sent = await bench.conjure().send("cmd", n, c, deadline=bench.deadline)
    ok = [s for s in sent if acked(s)]
    done = await bench.feed.wait_for(
        [s.tag for s in ok], uploaded=True, timeout=bench.remaining(max(60, n / 2))
    )
    per = cpu_ms_per(cpu_used(cpu, bench.cpu_reading()), done)
    return {
        "ack": ack_summary(sent),
        **await delivery(bench, ok),
        "delivered": done,
        "cpu_ms_per_command": per.pop("total"),
        "cpu_ms_per_command_by_process": per,
        "slack_calls_per_command": calls_per(calls, await bench.feed.calls(), done),
    }


def calls_per(before: dict[str, int], after: dict[str, int], done: int) -> dict[str, float]:
    """Web API calls per delivered command, by method, made between two readings."""
    return {
        method: round((count - before.get(method, 0)) / done, 2)
        for method, count in sorted(after.items())
        if done and count > before.get(method, 0)
    }


async def one_at_a_time(bench: Bench, count: int) -> dict[str, Any]:
    """The overhead without queueing: each command sent once the one before is delivered."""
    sender = bench.conjure()
    sent: list[Sent] = []
    for index in range(count):
        sent += await sender.send("one", 1, 1, deadline=bench.deadline, first=index)
        await bench.feed.wait_for(
            [sent[-1].tag], uploaded=True, timeout=bench.remaining(30), interval=0.005
        )
    return await delivery(bench, [s for s in sent if acked(s)])


async def delivery(bench: Bench, sent: list[Sent]) -> dict[str, Any]:
    """For delivered commands: to status message, to files shared, model time, overhead."""
    model_time = {
        prompt_tag(p): float((p.get("metrics") or {}).get("predict_time") or 0.0)
        for p in await bench.sandbox.predictions(limit=len(sent) + 100)
        if p.get("status") == "succeeded"
    }
    to_status, to_upload, overhead, model = [], [], [], []
    for s in sent:
        thread = bench.feed.by_tag.get(s.tag)
        if thread is None:
            continue
        to_status.append(thread.posted_at - s.sent_at)
        if thread.uploaded_at is None or s.tag not in model_time:
            continue
        total = thread.uploaded_at - s.sent_at
        to_upload.append(total)
        model.append(model_time[s.tag])
        overhead.append(total - model_time[s.tag])
    return {
        "status_posted": summary_ms(to_status),
        "end_to_end": summary_ms(to_upload),
        "model_time": summary_ms(model),
        "overhead": summary_ms(overhead),
    }


async def output_urls(bench: Bench) -> list[str]:
    """The file URLs of one finished prediction: what the fired webhooks deliver."""
    for prediction in await bench.sandbox.predictions(limit=100):
        output = prediction.get("output")
        files = isinstance(output, list) and output and str(output[0]).startswith("http")
        if prediction.get("status") == "succeeded" and files:  # not a text answer's tokens
            return [str(url) for url in output]
    raise RuntimeError("no finished prediction to borrow an output from")


async def fill_in_flight(bench: Bench, count: int, c: int, first: int = 0) -> dict[str, Any]:
    """Start `count` jobs whose predictions stay `starting`; VmRSS once all are in flight.

    Sent in batches, each once the one before has its predictions created, so what is measured
    is jobs in flight rather than a backlog of accepted commands not yet started.
    """
    await bench.sandbox.set_faults(slow_start=HOLD_SECONDS)
    before = await bench.sandbox.stats()
    started = time.monotonic()
    sender = bench.conjure()
    sent: list[Sent] = []
    created = before["create_count"]
    for offset in range(0, count, FILL_BATCH):
        size = min(FILL_BATCH, count - offset)
        sent += await sender.send(FLY, size, c, deadline=bench.deadline, first=first + offset)
        wanted = before["create_count"] + sum(1 for s in sent if acked(s))
        created = await bench.sandbox.wait_created(wanted, timeout=bench.remaining(120))
        if created < wanted or time.monotonic() > bench.deadline:
            break
    ok = [s for s in sent if acked(s)]
    in_flight = created - before["create_count"]
    note(f"{in_flight} jobs in flight after {time.monotonic() - started:.1f}s")
    # A prediction that asked for its `start` webhook (not one asked for its outcome only, as
    # a busy workspace's are) sends it at once: wait until Conjure has taken them all.
    queued = (await bench.sandbox.stats())["webhooks_queued"] - before["webhooks_queued"]
    await bench.sandbox.wait_webhooks(
        before["webhook_deliveries"] + queued, timeout=bench.remaining(60)
    )
    await bench.feed.wait_for([s.tag for s in ok], uploaded=False, timeout=bench.remaining(30))
    await asyncio.sleep(1.0)
    return {
        "inflight": in_flight,
        "seconds": round(time.monotonic() - started, 1),
        "ack": ack_summary(sent),
        "rss": bench.rss_mib(),
    }


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median CPU per webhook (the lower middle of an even count), whole,
    so that its figures belong together; each round's CPU per webhook and delivered/s in
    `rounds`, in the order run."""
    measured = [r for r in rounds if r.get("cpu_ms_per_webhook") is not None]
    ordered = sorted(measured, key=lambda r: r["cpu_ms_per_webhook"])
    chosen = ordered[(len(ordered) - 1) // 2] if ordered else rounds[-1]
    return {
        **chosen,
        "rounds": [
            {
                "cpu_ms_per_webhook": r.get("cpu_ms_per_webhook"),
                "delivered_per_second": r.get("delivered_per_second"),
            }
            for r in rounds
        ],
    }


async def webhooks(
    bench: Bench,
    count: int,
    concurrency: int,
    output: list[str],
    rate: float | None = None,
    fired_before: set[str] | None = None,
) -> dict[str, Any]:
    """Fire `count` terminal webhooks for jobs in flight, each delivering `output` (at `rate`
    a second, if given), skipping the predictions in `fired_before` and adding those fired."""
    done = fired_before if fired_before is not None else set()
    waiting = [
        p
        for p in await bench.sandbox.predictions()
        if p.get("status") == "starting"
        and (prompt_tag(p) or "").startswith(FLY_PREFIX)
        and p["id"] not in done
    ][:count]
    done.update(p["id"] for p in waiting)
    signed = hooks.sign_all(bench.stack.webhook_secret, waiting, output)
    tags = [prompt_tag(p) or "" for p in waiting]
    cpu = bench.cpu_reading()
    fired = await hooks.fire(signed, concurrency, deadline=bench.deadline, rate=rate)
    note(f"fired {len(fired)} webhooks")
    accepted = [f for f in fired if f.status == 200]
    await bench.feed.wait_for(tags, uploaded=True, timeout=bench.remaining(max(60, count / 10)))
    first = min((f.sent_at for f in fired), default=0.0)
    last_accept = max((f.sent_at + f.seconds for f in fired), default=first)
    delivered = sorted(
        t.uploaded_at
        for label in tags
        if (t := bench.feed.by_tag.get(label)) is not None and t.uploaded_at is not None
    )
    result: dict[str, Any] = {
        "fired": len(fired),
        "accepted": len(accepted),
        "delivered": len(delivered),
        "concurrency": concurrency,
        "rate": rate,
        "cpu_ms_per_webhook": None,
        "cpu_ms_per_webhook_by_process": {},
        "cpu_seconds": None,
        "delivered_per_cpu_second": None,
        "response": summary_ms([f.seconds for f in accepted]),
        "accepted_per_second": _rate(len(accepted), last_accept - first),
        "delivered_per_second": None,
        "steady_per_second": None,
    }
    if delivered:
        used = cpu_used(cpu, bench.cpu_reading())
        per = cpu_ms_per(used, len(delivered))
        result["cpu_ms_per_webhook"] = per.pop("total")
        result["cpu_ms_per_webhook_by_process"] = per
        result["cpu_seconds"] = round(sum(used.values()), 3)
        result["delivered_per_cpu_second"] = _rate(len(delivered), sum(used.values()))
        result["delivered_per_second"] = _rate(len(delivered), delivered[-1] - first)
        lo, hi = int(len(delivered) * 0.1), int(len(delivered) * 0.9) - 1
        if hi > lo:
            result["steady_per_second"] = _rate(hi - lo, delivered[hi] - delivered[lo])
    return result


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def _per(cpu_seconds: float, count: int) -> float | None:
    """CPU milliseconds per item."""
    return round(cpu_seconds * 1000 / count, 2) if count else None


def cpu_ms_per(used: dict[str, float], count: int) -> dict[str, float | None]:
    """CPU milliseconds per item of each process (`cpu_used`), and of all of them (`total`)."""
    per = {name: _per(seconds, count) for name, seconds in sorted(used.items())}
    return {**per, "total": _per(sum(used.values()), count)}


TOKEN_SECONDS = 0.03  # a token every 30 ms while measuring streaming (~33 tokens/s, Llama 3 8B)


async def time_to_first_token(bench: Bench, count: int) -> dict[str, Any]:
    """/ask one at a time, the sandbox writing a token every TOKEN_SECONDS: from the command to
    the first streamed text in the fake Slack (chat.startStream), and to the whole answer
    (chat.stopStream); the difference is what streaming saves the person waiting."""
    sender = bench.conjure()
    await bench.sandbox.set_faults(token_seconds=TOKEN_SECONDS)
    first, whole = [], []
    try:
        for index in range(count):
            label = tag("ask", index)
            sent = await sender.send_one(label, "/ask", f"why is the sky blue {label}", index)
            if not acked(sent):
                continue
            await bench.feed.wait_for([label], uploaded=False, timeout=bench.remaining(30))
            waited = time.monotonic() + bench.remaining(60)
            thread = bench.feed.by_tag.get(label)
            while thread is not None and thread.answer_at is None and time.monotonic() < waited:
                await asyncio.sleep(0.005)
                await bench.feed.poll()
            if thread is None or thread.first_text_at is None or thread.answer_at is None:
                continue
            first.append(thread.first_text_at - sent.sent_at)
            whole.append(thread.answer_at - sent.sent_at)
    finally:
        await bench.sandbox.set_faults(token_seconds=0.0)
    return {
        "token_seconds": TOKEN_SECONDS,
        "first_token": summary_ms(first),
        "whole_answer": summary_ms(whole),
    }


BURST_ACK_SECONDS = 3.0  # Slack shows the person an error when an ack takes longer


async def burst(bench: Bench, count: int, model_seconds: float) -> dict[str, Any]:
    """`count` /imagine at once (a connection each) against a model that takes `model_seconds`
    (the sandbox fault run_seconds): every ack's latency, and the time from the first command
    to the last image shared in the fake Slack, against the model's time."""
    stack = bench.stack
    others = {"sandbox": stack.sandbox.pid, "fake_slack": stack.slack.pid}
    await bench.sandbox.set_faults(run_seconds=model_seconds)
    try:
        cpu, other_cpu = bench.cpu_reading(), tree_cpu(others)
        sent = await bench.conjure().send("burst", count, count, deadline=bench.deadline)
        ok = [s for s in sent if acked(s)]
        await bench.feed.wait_for(
            [s.tag for s in ok], uploaded=True, timeout=bench.remaining(max(120, count / 2))
        )
        used, other_used = cpu_used(cpu, bench.cpu_reading()), cpu_used(other_cpu, tree_cpu(others))
    finally:
        await bench.sandbox.set_faults(run_seconds=0.0)
    first = min((s.sent_at for s in sent), default=0.0)
    uploaded = [
        t.uploaded_at
        for s in ok
        if (t := bench.feed.by_tag.get(s.tag)) is not None and t.uploaded_at is not None
    ]
    last = max(uploaded) - first if uploaded else None
    per = cpu_ms_per(used, len(uploaded))
    return {
        "commands": count,
        "concurrency": count,
        "model_seconds": model_seconds,
        "ack": ack_summary(sent),
        "ack_ms": [round(s.seconds * 1000, 1) for s in sent],
        "acks_late": sum(1 for s in sent if not acked(s) or s.seconds >= BURST_ACK_SECONDS),
        **await delivery(bench, ok),
        "delivered": len(uploaded),
        "first_command_to_last_image_s": None if last is None else round(last, 3),
        "last_image_over_model_s": None if last is None else round(last - model_seconds, 3),
        "cpu_ms_per_command": per.pop("total"),
        "cpu_ms_per_command_by_process": per,
        "cpu_seconds_others": {name: round(value, 3) for name, value in other_used.items()},
    }
