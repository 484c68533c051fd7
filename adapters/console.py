"""The terminal backend: `/imagine ...` typed at a prompt, results saved under ./conjure-output/.

Like Errbot's text backend, it exists so the whole flow (catalog, quotas, Replicate, webhooks,
delivery) can be run and watched locally with no chat account at all. The buttons a chat shows
under a result are commands here: `/reroll`, `/upscale 2`, `/vary 1`, `/cancel`, acting on the
last job, or on the one named by (the start of) its id; a costly job's price question is answered
with `/confirm` or `/decline`.
"""

from __future__ import annotations

import asyncio
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from bot.adapter import ChatAdapter, Checkpoint, CommandRequest, JobResult, OutputFile, Reply
from bot.commands.handler import Commands
from bot.followups.buttons import Action, Button, job_buttons
from bot.followups.service import Followups, Press
from bot.markup import Mention, Text
from bot.messages import status_line, status_text
from storage.models import Job

PLATFORM = "console"
FOLLOW_UPS = {"reroll": Action.REROLL, "upscale": Action.UPSCALE, "vary": Action.VARY}
FOLLOW_UPS["cancel"] = Action.CANCEL
# The answers to a price question ("This will cost about $0.50. Run it?"), as chats' buttons.
ANSWERS = {"confirm": Action.CONFIRM, "decline": Action.DECLINE}
JOB_ID_LENGTH = 20  # secrets.token_hex(10), as bot.jobs makes them


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
        out: TextIO | None = None,
        user: str = "you",
        workspace: str = "local",
        followups: Followups | None = None,
    ) -> None:
        self.commands = commands
        self.followups = followups
        self._jobs: list[str] = []  # ids of the jobs started here, oldest first
        self._question: str | None = None  # the price question waiting for /confirm
        self.output_dir = output_dir
        # sys.stdout as it is now, not as it was when this module was imported (a default
        # argument would keep that one, which may since have been redirected).
        self.out = out if out is not None else sys.stdout
        self.user = user
        self.workspace = workspace
        self._outcomes: dict[str, asyncio.Future[Outcome]] = {}
        self._last_line: dict[str, str] = {}
        self._streamed: dict[str, str] = {}  # job id -> the text printed as it was written

    @property
    def asking(self) -> bool:
        """Whether a price question waits for /confirm or /decline."""
        return self._question is not None

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _future(self, job_id: str) -> asyncio.Future[Outcome]:
        if job_id not in self._outcomes:
            self._outcomes[job_id] = asyncio.get_running_loop().create_future()
        return self._outcomes[job_id]

    async def post_status(self, job: Job) -> dict[str, Any]:
        self._future(job.id)
        self._jobs.append(job.id)
        self._print(f"{render(status_text(job))}  [job {job.id[:8]}]")
        return {}

    async def update_status(self, job: Job) -> None:
        line = status_line(job)
        if job.id in self._streamed:
            return  # the answer is being printed: a status line would cut it in two
        if self._last_line.get(job.id) != line:
            self._last_line[job.id] = line
            self._print(f"  {line}")

    streams_text = True
    stream_interval = 0.1  # a terminal has no rate limit; this only batches tiny tokens

    async def show_partial(self, job: Job, text: str, checkpoint: Checkpoint) -> None:
        """Print what was written since the last call (a continuation: only the new part)."""
        shown = self._streamed.get(job.id, "")
        new = text[len(shown) :] if text.startswith(shown) else "\n" + text
        self._streamed[job.id] = text
        print(new, end="", file=self.out, flush=True)

    def _end_stream(self, job: Job, text: str | None) -> bool:
        """Finish an answer printed as it was written; False when none was."""
        shown = self._streamed.pop(job.id, None)
        if shown is None:
            return False
        rest = (text or "")[len(shown) :] if (text or "").startswith(shown) else "\n" + (text or "")
        self._print(rest)
        return True

    async def post_result(self, job: Job, result: JobResult) -> None:
        streamed = self._end_stream(job, result.text)
        self._print(f"  {status_line(job)}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        for output in result.files:
            path = self.output_dir / f"{job.id[:8]}-{output.filename}"
            path.write_bytes(output.content)
            saved.append(path)
            self._print(f"  saved {path}")
        if result.text and not streamed:
            self._print(result.text)
        for reason in result.skipped:
            self._print(f"  skipped: {reason}")
        hint = self._follow_up_hint(job)
        if hint:
            self._print(hint)
        ok = bool(saved or result.text)
        self._settle(job.id, Outcome(ok=ok, files=saved, text=result.text))

    async def post_error(
        self, job: Job, message: str, checkpoint: Checkpoint | None = None
    ) -> None:
        if self._streamed.pop(job.id, None) is not None:
            self._print("")  # end the half-written line
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
        if name in ANSWERS and self.followups is not None:
            if self._question is None:
                return self._refuse("Nothing is waiting for /confirm or /decline.")
            question, self._question = self._question, None
            reply = await self.followups.press(self._press(Button(ANSWERS[name], question)))
        elif name in FOLLOW_UPS and self.followups is not None:
            button = self._button(FOLLOW_UPS[name], text.split())
            if isinstance(button, str):
                return self._refuse(button)
            reply = await self.followups.press(self._press(button))
        else:
            reply = await self.commands.handle(self._request(name, text))
        return await self._outcome(reply, timeout)

    async def _outcome(self, reply: Reply, timeout: float) -> Outcome:
        if reply.buttons:  # a price question: answered by the next /confirm or /decline
            self._question = reply.buttons[0].job_id
            return self._refuse(
                f"{render(reply.text or Text())}\n  /confirm to run it, /decline not to"
            )
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

    # ---- follow-ups ---------------------------------------------------------------------------

    def _follow_up_hint(self, job: Job) -> str:
        """The buttons a chat would show under this result, as the commands that do the same."""
        if self.followups is None:
            return ""
        words = []
        for row in job_buttons(self.followups.catalog, job):
            action = row[0].action
            if action is Action.REROLL:
                words.append("/reroll")
            elif action in (Action.UPSCALE, Action.VARY):
                words.append(f"/{action.value} 1" + (f"-{len(row)}" if len(row) > 1 else ""))
        return f"  follow up with {', '.join(words)}" if words else ""

    def _button(self, action: Action, words: list[str]) -> Button | str:
        """The button `/upscale [job] N` and the like name, or what is wrong with the words."""
        per_output = action in (Action.UPSCALE, Action.VARY)
        index = 0
        if per_output:
            if not words or not words[-1].isdigit():
                return f"Which image? For example /{action.value} 1"
            index = int(words.pop())
            if not 1 <= index <= 99:
                return f"There is no image {index}."
        if len(words) > 1:
            return f"Usage: /{action.value} [job]" + (" N" if per_output else "")
        job_id = self._job_named(words[0] if words else None)
        if job_id is None:
            named = f"“{words[0]}”" if words else "yet"
            return f"No job {named} was started here." if words else "No job was started here yet."
        return Button(action, job_id, index)

    def _job_named(self, prefix: str | None) -> str | None:
        """The last job, one started here whose id begins with `prefix`, or any job by its
        whole id (one from before a restart)."""
        if prefix is None:
            return self._jobs[-1] if self._jobs else None
        if len(prefix) == JOB_ID_LENGTH:
            return prefix.lower()
        found = [job_id for job_id in self._jobs if job_id.startswith(prefix.lower())]
        return found[0] if len(set(found)) == 1 else None

    def _press(self, button: Button) -> Press:
        return Press(
            platform=PLATFORM,
            workspace=self.workspace,
            channel="terminal",
            user_id=self.user,
            user_name=self.user,
            custom_id=button.custom_id,
            source=self._saved_output,
        )

    async def _saved_output(self, job: Job, index: int) -> OutputFile | None:
        """Output `index` as saved under the output directory (it outlives Replicate's link)."""
        saved = sorted(self.output_dir.glob(f"{job.id[:8]}-*"))
        if not 1 <= index <= len(saved):
            return None
        path = saved[index - 1]
        content = path.read_bytes()
        return OutputFile(path.name, content, _content_type(content))

    def _refuse(self, message: str) -> Outcome:
        self._print(message)
        return Outcome(ok=False, error=message)


def _content_type(content: bytes) -> str:
    """What a saved file really is (it may have been edited since), by its bytes."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            return Image.MIME.get(image.format or "", "application/octet-stream")
    except (OSError, ValueError):
        return "application/octet-stream"
