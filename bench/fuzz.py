"""`python -m bench.fuzz`: junk at a running `conjure serve`, as anyone on the internet could send.

Starts the same processes as `python -m bench` (the sandbox, the fake Slack Web API and `conjure
serve` on SQLite, each its own process on loopback), then sends N seeded garbage requests to each
of POST /slack/events and POST /webhooks/replicate (tests/garbage.py: invalid UTF-8, wrong
content types, non-integer timestamps, deep JSON, garbage `payload=`, huge headers, line breaks
meant to forge log lines; some signed with the real secrets, so the checks past the signature are
exercised too), and a 300 MiB body to each. It prints the answers by status, the 5xx count (must
be 0), what the 300 MiB bodies got, and how much the server's memory and log grew. Exit status 1
when any answer was a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.procs import memory_kib
from bench.stack import POSTGRES_URL, SIGNING_SECRET, Stack, running_stack
from tests.garbage import SLACK_PATH, WEBHOOK_PATH, Garbage

MiB = 1024 * 1024
HUGE = 300 * MiB
CLOSED = 0  # the status recorded when the server answered by closing the connection


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.fuzz",
        description="Send garbage and 300 MiB bodies to a running conjure serve; count 5xx, "
        "and measure its memory and log growth.",
    )
    p.add_argument("-n", "--n", type=int, default=10_000, help="requests per endpoint (10000)")
    p.add_argument("-c", "--c", type=int, default=32, help="concurrent connections (32)")
    p.add_argument("--seed", type=int, default=11, help="the garbage generator's seed (11)")
    p.add_argument("--keep-logs", action="store_true", help="print where the servers' logs are")
    return p


async def send_garbage(
    http: httpx.AsyncClient, garbage: Garbage, path: str, n: int, concurrency: int
) -> collections.Counter[int]:
    """Send `n` garbage requests for `path`, `concurrency` at a time; statuses counted."""
    statuses: collections.Counter[int] = collections.Counter()
    requests = iter(list(garbage.requests(n, path)))

    async def worker() -> None:
        for request in requests:
            try:
                response = await http.post(
                    request.path, content=request.body, headers=request.headers
                )
            except httpx.TransportError:
                statuses[CLOSED] += 1
            else:
                statuses[response.status_code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def huge_body(http: httpx.AsyncClient, path: str, *, declared: bool) -> tuple[str, int]:
    """POST 300 MiB from a generator: what came back, and how much could be sent."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        piece = b"\x00" * (256 * 1024)
        while sent < HUGE:
            sent += len(piece)
            yield piece

    headers = {"content-type": "application/json"}
    if declared:
        headers["content-length"] = str(HUGE)
    try:
        response = await http.post(path, content=body(), headers=headers)
    except httpx.TransportError as exc:
        return f"connection closed ({type(exc).__name__})", sent
    return str(response.status_code), sent


async def declared_head_only(url: str, path: str) -> str:
    """A 300 MiB Content-Length and no body at all: the status line of the answer."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: conjure\r\ncontent-length: {HUGE}\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    except TimeoutError:
        return "no answer within 10 s (the server waits for the body)"
    finally:
        writer.close()
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def rss_mib(stack: Stack) -> tuple[float, float]:
    """The server's RSS and peak RSS, MiB."""
    values = memory_kib(stack.serve.pid)
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="conjure-fuzz-"))
    async with running_stack("sqlite", work, POSTGRES_URL) as stack:
        if args.keep_logs:
            print(f"server logs: {work / 'logs'}", file=sys.stderr)
        garbage = Garbage(
            args.seed, slack_secret=SIGNING_SECRET, webhook_secret=stack.webhook_secret
        )
        limits = httpx.Limits(max_connections=args.c, max_keepalive_connections=args.c)
        async with httpx.AsyncClient(base_url=stack.serve.url, timeout=30, limits=limits) as http:
            rss_before, _ = rss_mib(stack)
            log_before = stack.serve.log.stat().st_size
            started = time.perf_counter()
            results = {
                path: await send_garbage(http, garbage, path, args.n, args.c)
                for path in (SLACK_PATH, WEBHOOK_PATH)
            }
            seconds = time.perf_counter() - started
            rss_after_garbage, _ = rss_mib(stack)
            log_after_garbage = stack.serve.log.stat().st_size
            huge = [
                (
                    path,
                    "streamed, Content-Length declared",
                    await huge_body(http, path, declared=True),
                )
                for path in (SLACK_PATH, WEBHOOK_PATH)
            ] + [
                (path, "streamed, chunked", await huge_body(http, path, declared=False))
                for path in (SLACK_PATH, WEBHOOK_PATH)
            ]
            heads_only = {
                path: await declared_head_only(stack.serve.url, path)
                for path in (SLACK_PATH, WEBHOOK_PATH)
            }
            await asyncio.sleep(0.5)  # let the server finish whatever it was doing
            rss_after, peak = rss_mib(stack)
            log_after = stack.serve.log.stat().st_size

    errors = sum(
        count for result in results.values() for code, count in result.items() if code >= 500
    )
    print(f"garbage: {args.n} requests per endpoint, {args.c} at a time, in {seconds:.1f} s")
    for path, statuses in results.items():
        shown = ", ".join(
            f"{'closed' if code == CLOSED else code}: {count}"
            for code, count in sorted(statuses.items())
        )
        print(f"  {path:22} {shown}")
    print(f"  5xx answers: {errors}")
    print("300 MiB bodies:")
    for path, how in heads_only.items():
        print(f"  {path:22} Content-Length only, no body sent: {how}")
    for path, how, (outcome, sent) in huge:
        print(f"  {path:22} {how}: {outcome} after {sent / MiB:.1f} MiB sent")
    print(
        f"serve RSS: {rss_before:.0f} MiB before, {rss_after_garbage:.0f} MiB after the garbage, "
        f"{rss_after:.0f} MiB after the 300 MiB bodies (peak {peak:.0f} MiB); "
        f"growth {rss_after - rss_before:+.0f} MiB"
    )
    print(
        f"serve log: {log_after_garbage - log_before:+d} bytes for the garbage, "
        f"{log_after - log_after_garbage:+d} bytes for the 300 MiB bodies"
    )
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
