"""Safety rules: a workspace's banned words and patterns, checked before anything is spent.

An admin adds rules (`/conjure safety ...`, `conjure safety ...`, or the admin page through
`SafetyRules.add`). Every command's prompt (and its other text inputs, such as a negative prompt)
is checked right after parsing, before any file is read, anything reserved or a job created: a
match is refused with one neutral sentence that names neither the rule nor the word, and an audit
row records who, which command and which rule, with a hash of the prompt, not the prompt itself.

Matching:
- `word`: a whole word or phrase, case-insensitive and Unicode-aware: both sides are NFKC-
  normalized and case-folded (full-width letters and "Bad" match "bad"), and the match must not
  touch a word character on either side (`\\w` is Unicode), so "bad" does not match "badge".
- `pattern`: a Python regular expression, case-insensitive, searched in the NFKC-normalized text.
  The stdlib `re` cannot be interrupted, so a pattern is vetted when it is added: at most 200
  characters, and no construct that backtracks catastrophically and is cheap to spot — a
  repeat inside a repeat (`(a+)+`), alternatives that can start alike inside a repeat
  (`(a|ab)*`), backreferences, or more than two unbounded repeats (`.*.*.*`).

Rules change rarely and are read on every command, so each instance keeps a workspace's rules
for `TTL_SECONDS` (5 s): a change made on one instance is seen by every other within 5 seconds,
and at once on the instance that made it.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.models import SafetyRule
from storage.safety import DuplicateRule, SafetyStore

REFUSED = "That prompt isn't allowed in this workspace."
WORD = "word"
PATTERN = "pattern"
KINDS = (WORD, PATTERN)
TTL_SECONDS = 5.0
MAX_PATTERN = 200
MAX_WORD = 100
MAX_UNBOUNDED = 2

try:  # Python 3.11+: the parser behind re.compile
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]


MAX_RULE_ID = 2**31 - 1  # the id column is an INTEGER (PostgreSQL refuses more)


class RuleError(Exception):
    """A rule that cannot be added; the message is shown to the admin as is."""


def parse_rule_id(text: str) -> int | None:
    """`12` or `#12` → 12; None for anything that cannot be a rule's id (not ASCII digits, such
    as `²`, which str.isdigit takes and int refuses, or too large for the column)."""
    digits = text.strip().removeprefix("#")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        return None
    value = int(digits)
    return value if 0 < value <= MAX_RULE_ID else None


@dataclass(frozen=True)
class _Compiled:
    rule: SafetyRule
    regex: re.Pattern[str]
    folded: bool  # matched against case-folded text (words) or normalized text (patterns)


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def word_regex(word: str) -> re.Pattern[str]:
    parts = normalize(word).casefold().split()
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(p) for p in parts) + r"(?!\w)")


def validate_word(word: str) -> str:
    word = " ".join(normalize(word).split())
    if not word:
        raise RuleError("Give a word to ban, e.g. /conjure safety ban someword")
    if len(word) > MAX_WORD:
        raise RuleError(f"A banned word or phrase can be at most {MAX_WORD} characters.")
    if not re.search(r"\w", word):
        raise RuleError("A banned word needs at least one letter or digit.")
    return word


def validate_pattern(pattern: str) -> str:
    """The pattern, if it compiles and cannot obviously backtrack for ever; else RuleError."""
    pattern = pattern.strip()
    if not pattern:
        raise RuleError("Give a pattern, e.g. /conjure safety pattern \\bfoo\\d+")
    if len(pattern) > MAX_PATTERN:
        raise RuleError(f"A pattern can be at most {MAX_PATTERN} characters.")
    try:
        parsed = _sre_parse.parse(pattern, re.IGNORECASE)
        re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        raise RuleError(f"That is not a valid regular expression: {exc}.") from None
    problem = _risky(parsed, inside_repeat=False, counts=[0])
    if problem:
        raise RuleError(f"That pattern could be very slow to check ({problem}); simplify it.")
    return pattern


_REPEATS = {_sre.MAX_REPEAT, _sre.MIN_REPEAT} | (
    {_sre.POSSESSIVE_REPEAT} if hasattr(_sre, "POSSESSIVE_REPEAT") else set()
)


def _risky(items: Iterable[Any], inside_repeat: bool, counts: list[int]) -> str | None:
    for op, av in items:
        if op in _REPEATS:
            _low, high, sub = av
            many = high is _sre.MAXREPEAT or high > 1
            if many and inside_repeat:
                return "a repeat inside a repeat"
            if high is _sre.MAXREPEAT:
                counts[0] += 1
                if counts[0] > MAX_UNBOUNDED:
                    return f"more than {MAX_UNBOUNDED} unbounded repeats"
            problem = _risky(sub, inside_repeat or many, counts)
            if problem:
                return problem
        elif op in (_sre.GROUPREF, _sre.GROUPREF_EXISTS):
            return "a backreference"
        elif op is _sre.SUBPATTERN:
            problem = _risky(av[-1], inside_repeat, counts)
            if problem:
                return problem
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            problem = _risky(av[1], inside_repeat, counts)
            if problem:
                return problem
        elif op is _sre.BRANCH:
            branches = av[1]
            if inside_repeat and not _distinct_starts(branches):
                return "alternatives that can start alike inside a repeat"
            for branch in branches:
                problem = _risky(branch, inside_repeat, counts)
                if problem:
                    return problem
    return None


def _distinct_starts(branches: list[Any]) -> bool:
    """Every alternative starts with a literal character, and no two with the same one."""
    seen: set[str] = set()
    for branch in branches:
        items = list(branch)
        if not items or items[0][0] is not _sre.LITERAL:
            return False
        first = chr(items[0][1]).casefold()
        if first in seen:
            return False
        seen.add(first)
    return True


def prompt_digest(texts: Iterable[str]) -> str:
    """What the audit trail keeps of a refused prompt: a short hash, so repeats can be told
    apart, never the words themselves."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


class SafetyRules:
    """Add, remove, list and check a workspace's rules; the one API for chat, CLI and admin page."""

    def __init__(
        self,
        engine: AsyncEngine,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.store = SafetyStore(engine)
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, list[_Compiled]]] = {}

    async def list(self, platform: str, workspace: str) -> list[SafetyRule]:
        return await self.store.rules(platform, workspace)

    async def add(
        self, platform: str, workspace: str, kind: str, value: str, actor: str
    ) -> SafetyRule:
        """Validate and store a rule (audited); RuleError says what is wrong with it."""
        if kind == WORD:
            value = validate_word(value)
        elif kind == PATTERN:
            value = validate_pattern(value)
        else:
            raise RuleError(f"A rule is a {' or a '.join(KINDS)}, not {kind!r}.")
        try:
            rule = await self.store.add(platform, workspace, kind, value, actor)
        except DuplicateRule:
            raise RuleError(f"This workspace already has that {kind}.") from None
        self._cache.pop((platform, workspace), None)
        return rule

    async def remove(self, platform: str, workspace: str, rule_id: int, actor: str) -> bool:
        removed = await self.store.remove(platform, workspace, rule_id, actor)
        self._cache.pop((platform, workspace), None)
        return removed

    async def check(self, platform: str, workspace: str, texts: Iterable[str]) -> SafetyRule | None:
        """The first rule any of `texts` breaks, or None."""
        texts = [t for t in texts if t]
        if not texts:
            return None
        compiled = await self._rules(platform, workspace)
        if not compiled:
            return None
        normal = [normalize(t) for t in texts]
        folded = [t.casefold() for t in normal]
        for item in compiled:
            for text in folded if item.folded else normal:
                if item.regex.search(text):
                    return item.rule
        return None

    async def refused(
        self,
        actor: str,
        *,
        platform: str,
        workspace: str,
        channel: str,
        command: str,
        rule: SafetyRule,
        texts: Iterable[str],
    ) -> None:
        """The audit row of a refused command: who, where, which command and rule, and a hash of
        what was typed (not the words: the rule id says what matched)."""
        await self.store.audit(
            actor,
            "safety.refused",
            {
                "platform": platform,
                "workspace": workspace,
                "channel": channel,
                "command": command,
                "rule": rule.id,
                "kind": rule.kind,
                "prompt_sha256": prompt_digest(texts),
            },
        )

    async def _rules(self, platform: str, workspace: str) -> list[_Compiled]:
        key = (platform, workspace)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        compiled = [_compile(rule) for rule in await self.store.rules(platform, workspace)]
        self._cache[key] = (now + self.ttl, compiled)
        return compiled


def _compile(rule: SafetyRule) -> _Compiled:
    if rule.kind == WORD:
        return _Compiled(rule, word_regex(rule.value), folded=True)
    return _Compiled(rule, re.compile(rule.value, re.IGNORECASE), folded=False)


def prompt_texts(prompt: str, inputs: dict[str, Any] | None = None) -> list[str]:
    """What a command's rules are checked against: its prompt and its other text inputs. A
    file's URL or its data is not text (a value that is one URL, nothing around it); any
    other value is, whatever it starts with ("http crown" in `--no` is checked)."""
    texts = [prompt]
    for value in (inputs or {}).values():
        if isinstance(value, str) and value not in texts and not _FILE_VALUE.fullmatch(value):
            texts.append(value)
    return texts


_FILE_VALUE = re.compile(r"(?:https?://|data:)\S+", re.IGNORECASE)
