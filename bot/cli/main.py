"""The `conjure` command: serve, demo, sandbox, migrate (and manifest, with the Slack adapter).

This is the composition root: the only place in `bot/` that knows the adapters exist, and it
imports them lazily so that the core stays platform-free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure as configure_logging
from bot.serving import bind_socket, freeze_startup_heap, run_event_loop, serve_app, socket_url

if TYPE_CHECKING:
    from adapters.console import ConsoleAdapter
    from bot.catalog import Catalog
    from bot.cli.startup_errors import HeldLogs

log = logging.getLogger("conjure")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

ONE_SHOT_PRICE = (
    "conjure demo: this command asks before it runs; answer /confirm in `conjure demo` "
    "(interactive), or set CONJURE_CONFIRM_ABOVE_USD=0 to never ask"
)


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up (imports, the catalog, clients) makes long-lived objects only: the collector's
    # passes over them meanwhile were a sixth of a command's start. Long-running commands turn
    # it back on once started (freeze_startup_heap); short ones end first.
    gc.disable()
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_CONFIG
    configure_logging(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    try:
        return int(run_event_loop(args.run(args)) or 0)
    except ConfigError as exc:
        if args.debug:
            raise
        lines = str(exc).splitlines()  # "Invalid configuration:" then one line per variable
        _fail(
            args,
            [line.strip() for line in lines[1:]] if lines[0] == "Invalid configuration:" else lines,
        )
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        _fail(args, [_startup_error(exc, args)])
        return EXIT_FAILED


def _fail(args: argparse.Namespace, lines: list[str]) -> None:
    """Say why a command stopped: on stderr, or (a worker of `serve --workers`) to the parent,
    which prints it once for all its workers."""
    if getattr(args, "worker_socket", None) is not None:
        from bot.cli.workers import FAILED, tell_parent

        tell_parent(FAILED + "; ".join(lines))
        return
    for line in lines:
        print(f"conjure: {line}", file=sys.stderr)


def _startup_error(exc: Exception, args: argparse.Namespace) -> str:
    """One line for a failure: what to fix when it is known (bot.cli.startup_errors)."""
    from bot.cli.startup_errors import describe, one_line

    settings = None
    with contextlib.suppress(Exception):
        settings = load_settings()
    listen = f"{args.host}:{args.port}" if hasattr(args, "port") else None
    line = describe(exc, settings, listen)
    return line or f"{one_line(exc)} (conjure --debug shows where)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("conjure")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conjure", description="Run Replicate models from Slack and Discord."
    )
    parser.add_argument("--version", action="version", version=f"conjure {_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback when a command fails"
    )
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the bot: webhooks, Slack and Discord")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes serving the port (default: CONJURE_WORKERS, else 1)",
    )
    serve.add_argument("--worker-socket", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve, verbose=True)  # a server logs what it does

    demo = commands.add_parser("demo", help="the whole flow in this terminal, offline")
    demo.add_argument("line", nargs="?", help='one command to run, e.g. "/imagine a red fox"')
    demo.add_argument("--live", action="store_true", help="use the real Replicate API")
    demo.add_argument("--speed", type=float, default=0.3, help="sandbox speed factor (0 = instant)")
    demo.add_argument("--output", type=Path, default=Path("conjure-output"))
    demo.add_argument("-v", "--verbose", action="store_true", help="log what happens inside")
    demo.set_defaults(run=_demo)

    sandbox = commands.add_parser("sandbox", help="a Replicate-compatible API on loopback")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8787)
    sandbox.add_argument("--speed", type=float, default=1.0)
    sandbox.add_argument("--token", default=None, help="the API token it accepts")
    sandbox.add_argument("--webhook-secret", default=None)
    sandbox.set_defaults(run=_sandbox)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(run=_migrate)

    from bot.cli.operator import add_commands

    add_commands(commands)
    from bot.cli.jobs import add_command as add_jobs_command

    add_jobs_command(commands)
    from bot.cli.safety import add_command as add_safety_command

    add_safety_command(commands)

    manifest = commands.add_parser("manifest", help="print a Slack app manifest for the commands")
    manifest.add_argument(
        "--url", help="public base URL, e.g. https://bot.example (default: CONJURE_PUBLIC_URL)"
    )
    manifest.set_defaults(run=_manifest)
    return parser


async def _manifest(args: argparse.Namespace) -> int:
    from adapters.slack.manifest import render_manifest
    from bot.catalog import load_catalog

    settings = load_settings()
    given = args.url if args.url is not None else settings.public_url
    if given is None:
        raise ConfigError(MANIFEST_URL_MISSING)
    try:
        url = manifest_base_url(given)
    except ConfigError:
        if args.url is not None:
            raise
        raise ConfigError(MANIFEST_URL_RULE.replace("--url", "CONJURE_PUBLIC_URL", 1)) from None
    print(render_manifest(load_catalog(settings.config_path()), url), end="")
    return EXIT_OK


MANIFEST_URL_MISSING = (
    "--url: required (the public base URL, e.g. --url https://bot.example), or set "
    "CONJURE_PUBLIC_URL"
)
MANIFEST_URL_RULE = (
    "--url: must be https://host or https://host:port, without a path, query or user "
    "(Slack calls HTTPS only; http:// is accepted for a loopback host, for tests)"
)


def manifest_base_url(value: str) -> str:
    """`value` as the manifest's base URL, or a ConfigError saying what the rule is."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 (raises ValueError when the port is not a number)
    except ValueError:
        raise ConfigError(MANIFEST_URL_RULE) from None
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if (
        not host
        or not (parts.scheme == "https" or (parts.scheme == "http" and loopback))
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ConfigError(MANIFEST_URL_RULE)
    return f"{parts.scheme}://{parts.netloc}"


async def _migrate(_: argparse.Namespace) -> int:
    from storage.engine import create_engine
    from storage.migrate import head_revisions, migrate

    settings = load_settings()
    engine = create_engine(settings.conjure_database_url)
    try:
        applied = await migrate(engine)
    finally:
        await engine.dispose()
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print(f"already at {', '.join(sorted(head_revisions()))}: nothing to apply")
    return EXIT_OK


SPEED_RULE = "--speed: must be 0 or more (0 = instant, 1 = real time)"
PORT_RULE = "--port: must be from 0 to 65535 (0: any free port)"


def _check_speed(speed: float) -> None:
    """nan and inf pass `< 0`: a job then failed (nan) or never finished (inf)."""
    if not (math.isfinite(speed) and speed >= 0):
        raise ConfigError(SPEED_RULE)


def _check_port(port: int) -> None:
    """Said before anything starts, not as bind()'s OverflowError once everything has."""
    if not 0 <= port <= 65535:
        raise ConfigError(PORT_RULE)


async def _sandbox(args: argparse.Namespace) -> int:
    from bot.sandbox import SandboxConfig, run_sandbox

    _check_speed(args.speed)
    _check_port(args.port)
    config = SandboxConfig(speed=args.speed, webhook_secret=args.webhook_secret)
    if args.token:
        config.api_token = args.token
    freeze_startup_heap()
    await run_sandbox(args.host, args.port, config)
    return EXIT_OK


async def _serve(args: argparse.Namespace) -> int:
    from bot.cli.startup_errors import HeldLogs

    _check_port(args.port)
    settings = load_settings()  # first: a setting to fix is named before anything heavy loads
    configure_logging(settings.conjure_log_format)  # before the hold, which wraps its handler
    held = HeldLogs()  # a failed start prints its one line, not what came before
    try:
        workers = settings.conjure_workers if args.workers is None else args.workers
        if workers < 1:
            raise ConfigError("--workers: must be 1 or more (the processes serving the port)")
        settings = settings.model_copy(update={"conjure_workers": workers})
        platforms = _serve_platforms(settings)
        if not platforms:
            print(NO_PLATFORM_HELP, file=sys.stderr)
            return EXIT_CONFIG
        if args.worker_socket is None and workers > 1:
            return await _supervise(args, settings, held, platforms, workers)
        return await _start_and_serve(args, settings, held, platforms)
    finally:
        held.release(show=args.debug)


def _serve_platforms(settings: Settings) -> list[str]:
    """The platforms `serve` will start, once the settings they need are checked."""
    from adapters.platforms import configured_platforms

    if settings.replicate_api_token is None:
        raise ConfigError("REPLICATE_API_TOKEN: required to run models (see README, Configuration)")
    if settings.slack_bot_token and not (settings.slack_signing_secret or settings.slack_app_token):
        raise ConfigError(
            "SLACK_SIGNING_SECRET: required with SLACK_BOT_TOKEN (or SLACK_APP_TOKEN for "
            "Socket Mode); README: Set up in Slack"
        )
    if not settings.slack_bot_token and (settings.slack_signing_secret or settings.slack_app_token):
        raise ConfigError("SLACK_BOT_TOKEN: required with SLACK_SIGNING_SECRET or SLACK_APP_TOKEN")
    return configured_platforms(settings)


async def _start_and_serve(
    args: argparse.Namespace, settings: Settings, held: HeldLogs, platforms: list[str]
) -> int:
    """Serve in this process: alone (binding the port), or as one worker of several (on the
    socket its parent bound and passed down)."""
    from adapters.platforms import start_platforms
    from bot.app import create_app
    from bot.cli import workers
    from bot.leadership import Leadership, lock_for
    from bot.logs import log_startup, startup_summary
    from bot.runtime import Runtime

    worker = args.worker_socket is not None
    runtime = await Runtime.start(settings, migrated=worker)
    # Even alone: other instances may share the database (PostgreSQL behind a load balancer).
    runtime.leadership = Leadership(lock_for(settings.conjure_database_url))
    try:
        async with start_platforms(runtime) as routes:
            app = create_app(runtime, routes)
            if worker:
                app = workers.tagged(app, args.worker_index)  # type: ignore[assignment]
            freeze_startup_heap()
            if worker:
                sock = workers.inherited_socket(args.worker_socket)
            else:
                sock = bind_socket(args.host, args.port)
            held.release()
            if not worker:
                print(
                    f"Conjure listening on {socket_url(sock)} ({', '.join(platforms)})", flush=True
                )
            log_startup(
                startup_summary(
                    settings,
                    platforms,
                    len(runtime.catalog.commands),
                    len(runtime.catalog.models),
                    socket_url(sock),
                )
            )
            async with serve_app(app, sock=sock, log_level="info"):
                if worker:
                    workers.tell_parent(workers.READY)
                    await workers.until_stopped()
                else:
                    await asyncio.Event().wait()
    finally:
        await runtime.aclose()
    return EXIT_OK


async def _supervise(
    args: argparse.Namespace, settings: Settings, held: HeldLogs, platforms: list[str], count: int
) -> int:
    """`serve --workers N`: check, migrate and bind once here, then run N workers on the socket
    (bot.cli.workers)."""
    from bot.catalog import load_catalog
    from bot.cli.workers import Supervisor, worker_command
    from storage.engine import create_engine
    from storage.schema_head import migrate_unless_at_head

    load_catalog(settings.config_path())  # a CONJURE_CONFIG mistake is named once, here
    engine = create_engine(settings.conjure_database_url)
    try:
        await migrate_unless_at_head(engine)
    finally:
        await engine.dispose()
    sock = bind_socket(args.host, args.port)
    if settings.conjure_database_url.startswith("sqlite"):
        log.warning(
            "%d workers share one SQLite file: each write waits for the others' (use "
            "PostgreSQL to scale; README: Running several instances)",
            count,
        )
    supervisor = Supervisor(worker_command(args, sock, count), sock, count)
    try:
        failed = await supervisor.start()
        if failed is None and not supervisor.stopping:
            held.release()
            gc.enable()  # a long-lived parent (main() turned it off for start-up)
            print(
                f"Conjure listening on {socket_url(sock)} ({', '.join(platforms)}; "
                f"{count} workers)",
                flush=True,
            )
            failed = await supervisor.watch()
    finally:
        await supervisor.stop()
        sock.close()
    if failed is None:
        return EXIT_OK
    assert failed.process is not None
    code = failed.process.returncode
    if failed.failure:
        print(f"conjure: {failed.failure}", file=sys.stderr)
    elif code != 130:  # Ctrl-C while it started says nothing
        print(f"conjure: worker {failed.index} stopped before it was listening", file=sys.stderr)
    return code if code and code > 0 else EXIT_FAILED


NO_PLATFORM_HELP = """\
No chat platform is configured, so there is nothing to serve.
Set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode) for Slack,
or DISCORD_TOKEN for Discord
(README: "Set up in Slack" / "Set up in Discord"). To try Conjure without either: conjure demo"""


async def _demo(args: argparse.Namespace) -> int:
    _check_speed(args.speed)
    from adapters.console import ConsoleAdapter
    from adapters.platforms import attached
    from bot.app import create_app
    from bot.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="conjure-demo-") as scratch:
        database = f"sqlite+aiosqlite:///{Path(scratch) / 'demo.db'}"
        async with _replicate_for_demo(args) as replicate:
            app_socket = bind_socket()
            settings = load_settings(
                conjure_database_url=database,
                conjure_public_url=None if args.live else socket_url(app_socket),
                **replicate,
            )
            runtime = await Runtime.start(settings)
            freeze_startup_heap()
            console = ConsoleAdapter(runtime.commands, args.output, followups=runtime.followups)
            try:
                with attached(runtime.service, console):
                    async with serve_app(create_app(runtime), sock=app_socket):
                        if args.line:
                            outcome = await console.run_line(args.line)
                            if console.asking:  # nobody to answer in a one-shot demo
                                print(ONE_SHOT_PRICE, file=sys.stderr)
                            if not outcome.ok:
                                print(f"conjure demo: {outcome.error}", file=sys.stderr)
                            return EXIT_OK if outcome.ok else EXIT_FAILED
                        await _interactive(console, runtime.catalog)
            finally:
                await runtime.aclose()
    return EXIT_OK


@contextlib.asynccontextmanager
async def _replicate_for_demo(args: argparse.Namespace) -> AsyncIterator[dict[str, object]]:
    """Settings that point at the real Replicate (--live) or at an in-process sandbox."""
    if args.live:
        settings = load_settings()
        if settings.replicate_api_token is None:
            raise ConfigError("REPLICATE_API_TOKEN: required with --live")
        yield {}
        return
    from bot.sandbox import SandboxConfig, create_sandbox_app

    config = SandboxConfig(speed=args.speed)
    app = create_sandbox_app(config)
    async with serve_app(app) as url:
        yield {
            "replicate_api_token": config.api_token,
            "replicate_base_url": url,
            "conjure_webhook_secret": app.state.sandbox.config.webhook_secret,
        }


async def _interactive(console: ConsoleAdapter, catalog: Catalog) -> None:
    print("Conjure demo. Type /imagine <prompt> [--ar 16:9] [--n 2], or 'exit'.")
    for name, spec in catalog.commands.items():
        print(f"  /{name}: {spec.description}")
    print("  After an image: /reroll, /upscale N, /vary N; while a job runs: /cancel")
    print("  Asked to confirm a price: /confirm or /decline")
    while True:
        try:
            line = await asyncio.to_thread(input, "conjure> ")
        except EOFError:
            print()
            return
        if line.strip() in ("exit", "quit"):
            return
        if line.strip():
            await console.run_line(line)
