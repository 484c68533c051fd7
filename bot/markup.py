"""Text the core writes for people, with its markup as values that each adapter renders.

The core never writes a platform's syntax: a person is a `Mention`, a usage line is `Code`, and
every `str` part is literal text, which an adapter escapes as its platform needs (Slack reads
`<`, `>` and `&` as markup; Discord reads `<@id>`). So a prompt can never ping a channel, and no
adapter has to parse the core's text back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mention:
    """A person, by their platform user id (and the name to show where mentions don't ping)."""

    user_id: str
    name: str | None = None


@dataclass(frozen=True)
class Code:
    """Text to show as code, such as a usage line."""

    text: str


Part = str | Mention | Code


@dataclass(frozen=True)
class Text:
    """A sequence of literal strings, mentions and code, rendered by each platform its own way."""

    parts: tuple[Part, ...] = ()

    @classmethod
    def of(cls, *pieces: Part | Text) -> Text:
        """Concatenate strings, mentions, code and other Texts."""
        parts: list[Part] = []
        for piece in pieces:
            parts.extend(piece.parts if isinstance(piece, Text) else (piece,))
        return cls(tuple(part for part in parts if part != ""))

    @classmethod
    def lines(cls, lines: Iterable[Part | Text]) -> Text:
        """One Text of several lines."""
        pieces: list[Part | Text] = []
        for index, line in enumerate(lines):
            pieces += ["\n", line] if index else [line]
        return cls.of(*pieces)

    def __add__(self, other: Part | Text) -> Text:
        return Text.of(self, other)

    def __radd__(self, other: Part) -> Text:
        return Text.of(other, self)

    def render(
        self,
        literal: Callable[[str], str],
        mention: Callable[[Mention], str],
        code: Callable[[str], str],
    ) -> str:
        """The platform's text: each part through the function for its kind."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(literal(part))
            elif isinstance(part, Mention):
                out.append(mention(part))
            else:
                out.append(code(part.text))
        return "".join(out)

    def plain(self) -> str:
        """Plain text, for a terminal or a log: names (or @ids) for mentions, code as is."""
        return self.render(str, lambda who: who.name or f"@{who.user_id}", str)

    def __str__(self) -> str:
        return self.plain()
