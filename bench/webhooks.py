"""Terminal Replicate webhooks for jobs in flight, signed with the sandbox's secret.

Each body is the prediction as the sandbox would send it on success (Standard Webhooks signature
from the `standardwebhooks` package, as Replicate signs), addressed to `?job=<id>` of a job whose
real prediction is held in `starting`. The output points at a file the sandbox already serves, so
Conjure downloads it and uploads it into the job's thread exactly as for a real result.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from bench.observe import job_id

PREDICT_TIME = 1.5


@dataclass
class SignedWebhook:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Fired:
    """One webhook POST: when it left (monotonic), how long it took, the status."""

    sent_at: float
    seconds: float
    status: int


def succeeded(prediction: dict[str, Any], output: list[str]) -> dict[str, Any]:
    """The `completed` body of a successful run of `prediction`."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        **prediction,
        "status": "succeeded",
        "output": output,
        "logs": "Using seed: 1\n100%|██████████| 4/4 [00:01<00:00,  2.67it/s]\n",
        "started_at": now,
        "completed_at": now,
        "metrics": {"predict_time": PREDICT_TIME, "total_time": PREDICT_TIME + 0.2},
    }


def sign_all(
    secret: str, predictions: list[dict[str, Any]], output: list[str]
) -> list[SignedWebhook]:
    """A signed terminal webhook for each prediction, to the webhook URL its job gave (so with
    several instances, to the one that started it, as the sandbox would send it)."""
    signer = Webhook(secret)
    signed = []
    for prediction in predictions:
        if job_id(prediction) is None:
            continue
        body = json.dumps(
            succeeded(prediction, output), ensure_ascii=False, separators=(",", ":")
        ).encode()
        msg_id = "msg_" + secrets.token_hex(12)
        moment = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "Replicate-Sandbox-Webhook/1.0",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signer.sign(msg_id, moment, body.decode()),
        }
        signed.append(SignedWebhook(str(prediction["webhook"]), body, headers))
    return signed


async def fire(
    hooks: list[SignedWebhook], concurrency: int, *, deadline: float, rate: float | None = None
) -> list[Fired]:
    """POST every webhook from `concurrency` keep-alive connections, as fast as they are taken,
    or, with `rate`, the i-th at i / rate seconds after the first (a load the servers can
    carry, instead of as much as the machine allows)."""
    results: list[Fired] = []
    pending = enumerate(hooks)
    start = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def worker() -> None:
            for index, hook in pending:
                if rate:
                    await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
                if time.monotonic() > deadline:
                    return
                sent_at = time.monotonic()
                started = time.perf_counter()
                try:
                    async with session.post(hook.url, data=hook.body, headers=hook.headers) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                results.append(Fired(sent_at, time.perf_counter() - started, status))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results
