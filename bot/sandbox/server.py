"""`conjure sandbox`: serve the sandbox until cancelled, saying where and with which secrets."""

from __future__ import annotations

import asyncio

from bot.sandbox.app import create_sandbox_app
from bot.sandbox.config import SandboxConfig
from bot.serving import serve_app


async def run_sandbox(host: str, port: int, config: SandboxConfig) -> None:
    """Serve on host:port until the task is cancelled (Ctrl-C in the CLI)."""
    app = create_sandbox_app(config)
    async with serve_app(app, host=host, port=port) as url:
        print(
            f"Replicate sandbox on {url} "
            f"(token {config.api_token}, webhook secret {config.secret})",
            flush=True,
        )
        await asyncio.Event().wait()
