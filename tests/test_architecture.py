"""The house rules, checked on the project's own source (bot/, adapters/, storage/) with `ast`.

- bot/ imports no chat platform's library; the core (bot/ but its entry points, bot/cli, the
  composition root) imports no adapter, and the entry points import one only inside the command
  that starts it;
- storage/ imports nothing from bot/ or adapters/;
- no import cycle among the project's modules;
- every chat adapter (a class in adapters/ with a `platform` that posts jobs) is a ChatAdapter.

Every import counts, wherever it is in the file (inside a function, under TYPE_CHECKING): a rule
that holds only at import time still ties the modules together.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.adapter import ChatAdapter

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "adapters", "storage")
PLATFORM_LIBRARIES = frozenset({"slack_bolt", "slack_sdk", "discord", "aiohttp", "yarl"})
ADAPTER_METHODS = frozenset(
    {"post_status", "update_status", "post_result", "post_error", "post_notice"}
)


@dataclass(frozen=True)
class Import:
    """One dependency: `module` imports `target` (absolute, as written) at `line`."""

    module: str
    target: str
    line: int
    names: tuple[str, ...] = ()  # for `from target import names`

    @property
    def top(self) -> str:
        return self.target.partition(".")[0]

    def where(self) -> str:
        return f"{sources()[self.module].relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.cache
def sources() -> dict[str, Path]:
    """Every module of the project, by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


@functools.cache
def tree(module: str) -> ast.Module:
    path = sources()[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, relative imports resolved against `module`."""
    if not node.level:
        return node.module or ""
    package = module if sources()[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


@functools.cache
def imports(module: str) -> tuple[Import, ...]:
    """Every import in the module, at any depth."""
    found: list[Import] = []
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append(Import(module, _absolute(module, node), node.lineno, names))
    return tuple(sorted(found, key=lambda i: i.line))


def _project_module(name: str) -> str | None:
    """`name` if it is a module of the project, else its longest prefix that is (a name
    imported from a package, or a broken import), else None (not the project's)."""
    modules = sources()
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def depends_on(imp: Import) -> set[str]:
    """The project modules an import depends on: `import a.b.c` on a.b.c only (not on the
    packages above it); `from pkg import name` on pkg.name where that is a module, else pkg."""
    if not imp.names:
        target = _project_module(imp.target)
        return {target} if target else set()
    found: set[str] = set()
    for name in imp.names:
        submodule = f"{imp.target}.{name}"
        target = submodule if submodule in sources() else _project_module(imp.target)
        if target:
            found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    """The project's module graph: each module to the project modules it imports."""
    return {
        module: {dep for imp in imports(module) for dep in depends_on(imp) if dep != module}
        for module in sources()
    }


def in_package(package: str) -> Iterator[str]:
    return (m for m in sources() if m == package or m.startswith(package + "."))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One readable cycle (a → b → … → a), the group's shortest, per strongly connected group
    of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(start: str) -> None:  # Tarjan's algorithm, iteratively (no recursion limit)
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            connect(module)
    return [
        min((_chain(start, group, edges) for start in group), key=lambda c: (len(c), c))
        for group in groups
    ]


def _chain(start: str, group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through `start`, staying inside its group."""
    members = set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node] & members):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {group}")


def describe(chain: list[str]) -> str:
    """a → b → a, each step with the line that makes it."""
    steps = []
    for here, there in itertools.pairwise(chain):
        line = next(imp.where() for imp in imports(here) if there in depends_on(imp))
        steps.append(f"{here} ({line})")
    return " → ".join([*steps, chain[-1]])


# ---- the rules -------------------------------------------------------------------------------


def test_the_source_tree_is_what_the_rules_are_about() -> None:
    modules = sources()
    assert {"bot.jobs", "bot.adapter", "storage.jobs", "adapters.console"} <= set(modules)
    assert not any(m.startswith(("tests", "bench")) for m in modules)
    # The graph sees imports inside functions and relative imports.
    assert "adapters.slack.lifecycle" in graph()["adapters.platforms"]


# Where a rule is broken today: the module, and what is wrong (strict: fixing it is noticed).
ENTRY_POINTS = "bot.cli"  # the composition root: the one part of bot/ that starts adapters


def core_modules() -> list[str]:
    """Every module of the core: bot/ but its entry points, which wire the adapters in."""
    return [m for m in in_package("bot") if not (m + ".").startswith(ENTRY_POINTS + ".")]


def violations(module: str, forbidden: set[str] | frozenset[str]) -> list[str]:
    return [
        f"{imp.where()}: {imp.module} imports {imp.target}"
        for imp in imports(module)
        if imp.top in forbidden
    ]


# aiohttp carries the core's httpx requests too (bot.http_transport), and only there.
HTTP_TRANSPORT = "bot.http_transport"


@pytest.mark.parametrize("module", list(in_package("bot")))
def test_bot_imports_no_chat_platform_library(module: str) -> None:
    libraries = PLATFORM_LIBRARIES - {"aiohttp"} if module == HTTP_TRANSPORT else PLATFORM_LIBRARIES
    found = violations(module, libraries)
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("module", core_modules())
def test_the_core_imports_no_adapter(module: str) -> None:
    found = violations(module, {"adapters"})
    assert found == [], "\n".join(found)


def test_the_entry_points_load_adapters_and_the_database_only_when_a_command_needs_them() -> None:
    """`conjure migrate` or `conjure quota` must not pull in Slack or Discord: the CLI imports
    the adapters inside the commands that start them. Nor may building the parser and reading
    the settings load the database layer: every `conjure` start does both, and a setting to fix
    is named in a fifth of a second instead of two thirds."""
    loaded = subprocess.run(
        [sys.executable, "-c", LIST_LOADED, *sorted(PLATFORM_LIBRARIES | DATABASE_LIBRARIES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert loaded == []


DATABASE_LIBRARIES = {"adapters", "sqlalchemy", "sqlmodel", "alembic", "asyncpg", "aiosqlite"}
LIST_LOADED = """
import sys
import bot.cli.main
from bot.config import load_settings
bot.cli.main._parser()
load_settings(conjure_database_url="postgresql://u@h/db")
print(*sorted(m for m in sys.modules if m.partition(".")[0] in sys.argv[1:]))
"""


def test_storage_imports_nothing_from_the_core_or_the_adapters() -> None:
    found = [v for module in in_package("storage") for v in violations(module, {"bot", "adapters"})]
    assert found == [], "\n".join(found)


def test_the_modules_import_each_other_without_a_cycle() -> None:
    found = [describe(chain) for chain in cycles(graph())]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_cycle_finder_finds_a_cycle_and_says_where_it_closes() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "b"}}  # a → b → c → a, and b ↔ c
    assert cycles(edges) == [["b", "c", "b"]]
    assert cycles({"x": {"y"}, "y": set()}) == []
    # A chain is reported with the line of each import that makes it.
    chain = describe(["adapters.platforms", "bot.jobs", "storage.jobs"])
    assert chain.startswith("adapters.platforms (adapters/platforms.py:"), chain
    assert " → bot.jobs (bot/jobs.py:" in chain and chain.endswith(" → storage.jobs"), chain


def test_imports_resolve_to_the_modules_they_name() -> None:
    def deps(target: str, *names: str) -> set[str]:
        return depends_on(Import("bot.jobs", target, 1, names))

    assert deps("bot.replicate.client") == {"bot.replicate.client"}  # not bot, bot.replicate
    assert deps("bot.replicate", "client", "Prediction") == {
        "bot.replicate.client",
        "bot.replicate",
    }
    assert deps("bot.sandbox", "HttpFault") == {"bot.sandbox"}
    assert deps("httpx") == set() and deps("sqlalchemy.exc", "SQLAlchemyError") == set()
    relative = ast.parse("from .jobs import JobService\nfrom . import app").body
    assert [_absolute("bot.runtime", node) for node in relative] == ["bot.jobs", "bot"]  # type: ignore[arg-type]


def chat_platform_classes() -> list[tuple[str, ast.ClassDef]]:
    """Classes in adapters/ with a `platform` (class attribute, annotation, or self.platform)
    and at least one of the methods the job service calls to post a job."""
    found = []
    for module in in_package("adapters"):
        for node in ast.walk(tree(module)):
            if not isinstance(node, ast.ClassDef):
                continue
            methods = {
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            if methods & ADAPTER_METHODS and _has_platform(node):
                found.append((module, node))
    return found


def _has_platform(node: ast.ClassDef) -> bool:
    for item in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(item, ast.Assign):
            targets = item.targets
        elif isinstance(item, ast.AnnAssign | ast.AugAssign):
            targets = [item.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "platform":
                return True
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "platform"
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                return True
    return False


def _base_name(base: ast.expr) -> str | None:
    if isinstance(base, ast.Name):
        return base.id
    return base.attr if isinstance(base, ast.Attribute) else None


def test_every_chat_adapter_is_a_chat_adapter() -> None:
    classes = chat_platform_classes()
    names = {node.name for _, node in classes}
    assert {"ConsoleAdapter", "SlackAdapter", "DiscordAdapter"} <= names, names
    wrong = []
    for module, node in classes:
        cls = getattr(importlib.import_module(module), node.name, None)
        if not isinstance(cls, type):  # defined in a function: its bases, as written
            if not any(_base_name(base) == "ChatAdapter" for base in node.bases):
                wrong.append(f"{module}.{node.name} posts jobs but is not a ChatAdapter")
        elif inspect.isabstract(cls):
            continue  # an abstract base is no adapter
        elif not issubclass(cls, ChatAdapter):
            wrong.append(f"{module}.{node.name} posts jobs but is not a ChatAdapter")
    assert wrong == [], "\n".join(wrong)
