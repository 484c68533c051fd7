"""The terminal backend: `/imagine ...` typed at a prompt, results saved under ./conjure-output/.

Like Errbot's text backend, it exists so the whole flow (catalog, quotas, Replicate, webhooks,
delivery) can be run and watched locally with no chat account at all.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bot.adapter import ChatAdapter, CommandRequest, JobResult
from bot.commands.handler import Commands
from bot.markup import Mention, Text
from bot.messages import status_line, status_text
from storage.models import Job

PLATFORM = "console"


@dataclass
class Outcome:
    """How one command ended: the saved files, any text, or the error the user was shown."""

    ok: bool
    files: list[Path] = field(default_factory=list)
    text: str | None = None
    error: str | None = None


def render(text: Text) -> str:
    """The core's text for a terminal: a person by name, else as typed at the prompt (<@id>)."""
    return text.render(str, _person, str)


def _person(who: Mention) -> str:
    return who.name or f"<@{who.user_id}>"


class ConsoleAdapter(ChatAdapter):
    """Prints status lines and saves outputs as files."""

    platform = PLATFORM

    def __init__(
        self,
        commands: Commands,
        output_dir: Path,
        out: TextIO = sys.stdout,
        user: str = "you",
        workspace: str = "local",
    ) -> None:
        self.commands = commands
        self.output_dir = output_dir
        self.out = out
        self.user = user
        self.workspace = workspace
        self._outcomes: dict[str, asyncio.Future[Outcome]] = {}
        self._last_line: dict[str, str] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _future(self, job_id: str) -> asyncio.Future[Outcome]:
        if job_id not in self._outcomes:
            self._outcomes[job_id] = asyncio.get_running_loop().create_future()
        return self._outcomes[job_id]

    async def post_status(self, job: Job) -> dict[str, Any]:
        self._future(job.id)
        self._print(render(status_text(job)))
        return {}

    async def update_status(self, job: Job) -> None:
        line = status_line(job)
        if self._last_line.get(job.id) != line:
            self._last_line[job.id] = line
            self._print(f"  {line}")

    async def post_result(self, job: Job, result: JobResult) -> None:
        self._print(f"  {status_line(job)}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        for output in result.files:
            path = self.output_dir / f"{job.id[:8]}-{output.filename}"
            path.write_bytes(output.content)
            saved.append(path)
            self._print(f"  saved {path}")
        if result.text:
            self._print(result.text)
        for reason in result.skipped:
            self._print(f"  skipped: {reason}")
        ok = bool(saved or result.text)
        self._settle(job.id, Outcome(ok=ok, files=saved, text=result.text))

    async def post_error(self, job: Job, message: str) -> None:
        self._print(f"  {status_line(job)}")
        self._print(f"  error: {message}")
        self._settle(job.id, Outcome(ok=False, error=message))

    async def post_notice(self, channel: str, text: Text) -> None:
        """Admin notices such as budget alerts."""
        self._print(f"[{channel}] {render(text)}")

    def _settle(self, job_id: str, outcome: Outcome) -> None:
        future = self._future(job_id)
        if not future.done():
            future.set_result(outcome)

    async def run_line(self, line: str, timeout: float = 600) -> Outcome:
        """Run one `/command text` line to its end: the result saved, or the answer shown."""
        command, _, text = line.strip().partition(" ")
        if not command.startswith("/"):
            return self._refuse("Commands start with a slash, e.g. /imagine a red fox --ar 16:9")
        name = command.removeprefix("/").lower()
        reply = await self.commands.handle(self._request(name, text))
        if reply.job is None:
            answer = render(reply.text) if reply.text else ""
            if reply.refused:
                return self._refuse(answer)
            self._print(answer)
            return Outcome(ok=True, text=answer)
        job = reply.job
        try:
            return await asyncio.wait_for(self._future(job.id), timeout)
        except TimeoutError:
            return Outcome(ok=False, error=f"no result within {timeout:.0f} seconds")
        finally:
            self._outcomes.pop(job.id, None)
            self._last_line.pop(job.id, None)

    def _request(self, command: str, text: str) -> CommandRequest:
        return CommandRequest(
            platform=PLATFORM,
            workspace=self.workspace,
            channel="terminal",
            user_id=self.user,
            user_name=self.user,
            command=command,
            text=text,
        )

    def _refuse(self, message: str) -> Outcome:
        self._print(message)
        return Outcome(ok=False, error=message)
