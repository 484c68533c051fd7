"""The framework floor: a bare slack-bolt AsyncApp whose one listener only acks.

`python -m bench.bare_bolt --port N --api-url URL` serves it exactly as `conjure serve` serves
Conjure's: bolt's Starlette adapter on POST /slack/events, a Starlette app under uvicorn on a
socket bound by bot.serving (TCP_NODELAY), the same Web API client settings (the token is
checked once through auth.test by bolt), the same signing secret from SLACK_SIGNING_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.routing import Route

from bot.serving import bind_socket, freeze_startup_heap, run_event_loop, serve_app


def create_bare_app(api_url: str, token: str, signing_secret: str) -> Starlette:
    """Starlette + bolt with a listener for every slash command that only acks."""
    client = AsyncWebClient(token=token, base_url=api_url.rstrip("/") + "/")
    bolt = AsyncApp(client=client, signing_secret=signing_secret)

    async def only_ack(ack: AsyncAck) -> None:
        await ack()

    bolt.command(re.compile(r"^/.+"))(only_ack)
    handler = AsyncSlackRequestHandler(bolt)
    return Starlette(routes=[Route("/slack/events", handler.handle, methods=["POST"])])


async def serve(host: str, port: int, api_url: str) -> None:
    """Serve until the process is stopped."""
    app = create_bare_app(
        api_url, os.environ["SLACK_BOT_TOKEN"], os.environ["SLACK_SIGNING_SECRET"]
    )
    freeze_startup_heap()  # as `conjure serve` does: the same stack, tuned the same way
    async with serve_app(app, sock=bind_socket(host, port), log_level="info") as url:
        print(f"bare bolt on {url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-url", required=True, help="the (fake) Slack Web API, .../api/")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_event_loop(serve(args.host, args.port, args.api_url))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
