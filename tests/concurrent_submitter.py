"""Run N concurrent submits from one user in this process (its own engine), print the results.

Used by tests/test_quotas.py to show that two OS processes against one database cannot pass a
limit between them: `python -m tests.concurrent_submitter <sandbox> <token> <secret> <db> <n>`.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tempfile
from pathlib import Path

from adapters.console import ConsoleAdapter
from adapters.platforms import attached
from bot.adapter import CommandRequest
from bot.config import Settings
from bot.runtime import Runtime


async def main(sandbox_url: str, token: str, secret: str, database: str, count: int) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        replicate_api_token=token,
        replicate_base_url=sandbox_url,
        conjure_webhook_secret=secret,
        conjure_database_url=database,
        conjure_public_url="http://127.0.0.1:9/unused",
        conjure_user_jobs_per_day=5,
    )
    runtime = await Runtime.start(settings)
    console = ConsoleAdapter(runtime.commands, Path(tempfile.mkdtemp()), out=io.StringIO())
    request = CommandRequest("console", "local", "terminal", "racer", "imagine", "a race")

    async def one() -> str:
        reply = await runtime.commands.handle(request)
        return "refused" if reply.refused else "accepted"

    print("ready", flush=True)
    sys.stdin.readline()  # both processes start together
    with attached(runtime.service, console):
        results = await asyncio.gather(*(one() for _ in range(count)))
    await runtime.aclose()
    print(json.dumps({"accepted": results.count("accepted"), "refused": results.count("refused")}))


if __name__ == "__main__":
    url, token, secret, database, count = sys.argv[1:6]
    asyncio.run(main(url, token, secret, database, int(count)))
