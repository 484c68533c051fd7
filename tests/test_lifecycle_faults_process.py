"""`conjure serve` (one process, as it runs by default) stopped the way process managers stop it:
SIGTERM (systemd, Docker, Kubernetes), not only Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import httpx

from tests.discord_harness import serve_env
from tests.fakes.discord_api import running_fake_discord, running_fake_gateway
from tests.harness import port_for_another_process, start_serve
from tests.sandbox_fixtures import SandboxServer

STOP_WITHIN = 30  # seconds; well under one normally (see tests/test_serve_process.py)


async def test_sigterm_stops_a_single_process_serve_gracefully(
    sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """SIGTERM was not handled at all in a single-process serve: the process died at once
    (status -15), mid-request, without closing its gateway connection or its database. It must
    stop as Ctrl-C does: the gateway closed, exit status 0, no traceback."""
    async with running_fake_discord() as fake, running_fake_gateway(fake) as gateway:
        port = port_for_another_process()
        env = {
            "CONJURE_DATABASE_URL": f"sqlite:///{tmp_path / 'conjure.db'}",
            **serve_env(fake, gateway),
        }
        process = await start_serve(sandbox_server, tmp_path, port, env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and process.returncode is None:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(gateway.ready.wait(), timeout=30)
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=STOP_WITHIN)
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
        log = stderr.decode()
        assert process.returncode == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert gateway.connected == 0  # the client closed its connection on the way out
