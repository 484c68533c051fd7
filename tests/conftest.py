"""Shared fixtures: settings isolated from the developer's environment, and loopback servers."""

from __future__ import annotations

import atexit
import functools
import gc
import os
import ssl
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.sandbox_fixtures", "tests.db_fixtures"]


def _cache_bytecode() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set (as in many containers), every xdist worker and every
    `conjure` the tests start compiled the project again, and pytest re-wrote the asserts of
    every module of its plugins' packages (all of hypothesis), on each run: a sixth of the
    suite's CPU. This process's children cache bytecode (in __pycache__, which git ignores)."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_cache_bytecode()

_PREFIXES = ("CONJURE_", "REPLICATE_", "SLACK_", "DISCORD_")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """No developer variable (a real token, a quota) leaks into a test; no .env is read."""
    for name in list(os.environ):
        if name.startswith(_PREFIXES) and name != "CONJURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True, scope="session")
def _one_default_tls_context() -> Iterator[None]:
    """Every httpx client builds its default TLS context up front, reading certifi's CA bundle:
    ~20 ms of CPU each, a fifth of the suite's CPU, for clients that only ever speak plain HTTP
    to loopback. Within the test process, clients with default TLS settings share one context
    (httpx's own advice for many clients); any other setting still gets its own."""
    import httpx._transports.default as httpx_transports

    create = httpx_transports.create_ssl_context

    @functools.cache
    def default_context(trust_env: bool) -> ssl.SSLContext:
        return create(verify=True, cert=None, trust_env=trust_env)

    def shared(verify=True, cert=None, trust_env=True):  # type: ignore[no-untyped-def]
        if verify is True and cert is None:
            return default_context(trust_env)
        return create(verify=verify, cert=cert, trust_env=trust_env)

    httpx_transports.create_ssl_context = shared
    try:
        yield
    finally:
        httpx_transports.create_ssl_context = create


def pytest_configure(config: pytest.Config) -> None:
    # At exit, after pytest's own last collection (which reports unraisable exceptions), leave
    # the heap to the OS: the collector walking it in each exiting worker held the run ~1 s.
    atexit.register(gc.freeze)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: three workers more than the CPUs this process may use. Much of a test is
    waiting (on sockets, timers, child processes), which another worker's CPU work fills: on 2
    CPUs, 5 workers ran the ~1,000 tests in 36.5-37 s, 4 in 38.6-39.2 s (idle machine)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus + 3


# Slowest tests first: each test's last duration is kept in pytest's cache, and with
# `--dist load --maxschedchunk 1` the workers take the tests one by one from that order, so the
# run does not end with one worker still in a long test while the others wait. (No fixture here
# is module- or class-scoped, so running a module's tests apart costs no extra set-up.)
_DURATIONS = "conjure/durations"
_durations_seen: dict[str, float] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # type: ignore[no-untyped-def]
    """pytest-xdist's controller: every worker gets the same durations (the cache may change)."""
    cache = getattr(node.config, "cache", None)
    node.workerinput[_DURATIONS] = cache.get(_DURATIONS, {}) if cache else {}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    durations = getattr(config, "workerinput", {}).get(_DURATIONS)
    if durations:  # stable: tests never timed keep their order, at the end
        items.sort(key=lambda item: -durations.get(item.nodeid, 0.0))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations_seen[report.nodeid] = _durations_seen.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _durations_seen:
        return
    cache.set(_DURATIONS, {**cache.get(_DURATIONS, {}), **_durations_seen})
