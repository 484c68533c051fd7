"""Start-up failures as one line naming what to fix (`conjure --debug` shows the traceback).

`describe` turns an exception that stopped a command into a sentence such as
`CONJURE_DATABASE_URL: cannot reach the database at 127.0.0.1:5432 (connection refused)`, or
None when it does not recognise it (then the caller still prints one line: the exception's type
and first line). Which thing failed is read from where the exception was raised (the modules in
its traceback), what went wrong from its type. Nothing here prints a secret: a database URL is
shown as host and port only, and tokens are never part of an exception this module quotes.
"""

from __future__ import annotations

import errno
import logging
import socket
import traceback
from collections.abc import Iterator
from logging.handlers import MemoryHandler
from urllib.parse import urlsplit

from bot.config import Settings

_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.ECONNRESET: "connection reset",
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "address not available on this machine",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _modules(exc: BaseException) -> list[str]:
    """The modules of every frame the exception (and those it came from) passed through."""
    names = []
    for link in _chain(exc):
        for frame, _ in traceback.walk_tb(link.__traceback__):
            names.append(str(frame.f_globals.get("__name__", "")))
    return names


def _passed(exc: BaseException, *prefixes: str) -> bool:
    return any(name.startswith(prefixes) for name in _modules(exc))


def _raised_in(exc: BaseException, function: str) -> bool:
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return bool(frames) and frames[-1].f_code.co_name == function


def _reason(exc: BaseException) -> str | None:
    """Why a connection failed, in a few words, or None when it is not a network failure."""
    for link in _chain(exc):
        if isinstance(link, socket.gaierror):
            return "unknown host"
        if isinstance(link, TimeoutError):
            return "timed out"
        if isinstance(link, OSError) and link.errno in _REASONS:
            return _REASONS[link.errno]
        if isinstance(link, ConnectionError):
            return "connection failed"
    return None


def _host_port(url: str, default_port: int | None = None) -> str:
    parts = urlsplit(url)
    port = parts.port or default_port or (443 if parts.scheme in ("https", "wss") else 80)
    return f"{parts.hostname}:{port}"


UNREADABLE_DATABASE_URL = (
    "CONJURE_DATABASE_URL: not a URL that can be read (is the port a number? %-escape any "
    "'@', ':' or '/' in the user name or password)"
)


def _database(exc: BaseException, settings: Settings | None) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    where = "the database"
    if settings is not None:
        try:
            url = make_url(settings.conjure_database_url)
        except (ArgumentError, ValueError):  # what failed was reading it: never quote it
            return UNREADABLE_DATABASE_URL
        if url.host and "@" in url.host:  # the password ended at its first '@': the rest of
            return UNREADABLE_DATABASE_URL  # it is read as the host, and must not be shown
        if url.host:
            where = f"the database at {url.host}:{url.port or 5432}"
        elif url.database:
            where = f"the database file {url.database}"
    reason = _reason(exc)
    if reason is not None:
        return f"CONJURE_DATABASE_URL: cannot reach {where} ({reason})"
    return f"CONJURE_DATABASE_URL: {where}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy's message adds the SQL)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return text[0] if text else type(inner).__name__


def describe(
    exc: BaseException, settings: Settings | None = None, listen: str | None = None
) -> str | None:
    """One line naming the variable or the thing to fix, or None when `exc` is not known.

    `settings` (when loaded) lets a line say which host was unreachable; `listen` is the
    host:port `conjure serve` was asked to listen on.
    """
    from bot.catalog.specs import CatalogError

    for link in _chain(exc):
        if isinstance(link, CatalogError):
            return "CONJURE_CONFIG: " + "; ".join(str(link).splitlines())
    if _raised_in(exc, "bind_socket") and isinstance(exc, OSError) and listen is not None:
        reason = _REASONS.get(exc.errno or 0, exc.strerror or "cannot listen")
        return f"--host/--port: cannot listen on {listen} ({reason}); choose another --port"
    if _passed(exc, "sqlalchemy", "asyncpg", "aiosqlite", "storage."):
        return _database(exc, settings)
    reason = _reason(exc)
    if reason is None:
        return None
    if _passed(exc, "adapters.discord", "discord."):
        url = str(settings.discord_api_url) if settings else "https://discord.com/api/v10"
        return (
            f"DISCORD_API_URL: cannot reach Discord at {_host_port(url)} ({reason}); "
            "check the network (DISCORD_TOKEN is set, so Conjure starts Discord)"
        )
    if _passed(exc, "adapters.slack", "slack_sdk", "slack_bolt"):
        url = str(settings.slack_api_url) if settings else "https://slack.com/api/"
        return f"SLACK_API_URL: cannot reach Slack at {_host_port(url)} ({reason})"
    return None


def one_line(exc: BaseException) -> str:
    """The fallback for an exception `describe` does not know: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class HeldLogs:
    """The log lines of a server's start-up, held back until it is listening.

    A start-up that fails then prints only its one line, not the migrations and sign-ins that
    came before; one that succeeds prints them all when it starts listening (`release`). With
    `--debug` a failed start-up's lines are printed too (`release` from the error path).
    """

    def __init__(self) -> None:
        root = logging.getLogger()
        self._targets = list(root.handlers)
        self._buffers = [
            MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1, target=handler)
            for handler in self._targets
        ]
        for handler, buffer in zip(self._targets, self._buffers, strict=True):
            buffer.setLevel(handler.level)
            root.removeHandler(handler)
            root.addHandler(buffer)

    def release(self, *, show: bool = True) -> None:
        """Put the real handlers back, printing what was held (or dropping it)."""
        root = logging.getLogger()
        for handler, buffer in zip(self._targets, self._buffers, strict=True):
            if buffer not in root.handlers:
                continue
            root.removeHandler(buffer)
            root.addHandler(handler)
            if show:
                buffer.flush()
            buffer.buffer.clear()
            buffer.close()
