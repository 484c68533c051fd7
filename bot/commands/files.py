"""An invocation's files, read and sent to Replicate before anything is created or reserved.

Each file is downloaded from its platform's hosts only (a bot token goes nowhere else), within a
deadline and under its option's size cap counted as the bytes arrive (a platform's stated size
is checked first, while parsing, but is not trusted), then sent as a `data:` URL when small, else
through the Files API (bot.replicate.files).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import httpx

from bot.catalog import CommandSpec, OptionSpec
from bot.catalog.files import base_type, contents_not_taken, is_web_page
from bot.commands.parsing import Invocation
from bot.inputs import NOUNS, FileRefused, InputFile, too_large, wrong_type
from bot.replicate.client import ReplicateClient
from bot.replicate.errors import ReplicateError
from bot.replicate.files import image_input
from bot.replicate.outputs import OutputFetcher, OutputRejected, OutputTooLarge

log = logging.getLogger(__name__)

DOWNLOAD_DEADLINE = 30.0  # seconds for one file: a person is waiting for the job to start


class FileInputs:
    """Reads an invocation's files and puts them into its Replicate input."""

    def __init__(
        self, replicate: ReplicateClient, http: httpx.AsyncClient, *, deadline: float = 0.0
    ) -> None:
        self.replicate = replicate
        self.http = http
        self.deadline = deadline or DOWNLOAD_DEADLINE

    async def prepare(self, invocation: Invocation) -> Invocation:
        """The invocation with each file's value a `data:` URL or a Files API URL; raises
        FileRefused (nothing has been spent) when a file cannot be read or sent."""
        given = [
            (option, value)
            for option in invocation.command.options
            if option.is_file
            and isinstance(value := invocation.options.get(option.name), InputFile)
        ]
        if not given:
            return invocation
        replicate_input: dict[str, Any] = dict(invocation.input)
        for option, file in given:
            url = await self._send(invocation.command, option, file)
            for key, value in replicate_input.items():
                if value is file:
                    replicate_input[key] = url
        return dataclasses.replace(invocation, input=replicate_input)

    async def _send(self, command: CommandSpec, option: OptionSpec, file: InputFile) -> str:
        cap = option.max_bytes or 0
        fetcher = OutputFetcher(self.http, file.hosts, cap, deadline=self.deadline)
        noun = NOUNS.get(option.type, "file")
        try:
            downloaded = await fetcher.download(file.url, headers=dict(file.headers))
        except OutputTooLarge:
            raise FileRefused(too_large(option, None)) from None
        except OutputRejected as exc:
            log.info("input file %s not read: %s", file.filename, exc)
            raise FileRefused(
                f"Conjure could not read that {noun} ({file.filename}); please try again."
            ) from None
        if is_web_page(downloaded.content_type, option.accept):
            log.warning("input file %s: a web page came instead of the file", file.filename)
            raise FileRefused(
                f"Conjure could not read that {noun} ({file.filename}): a web page came instead "
                "of the file. The app may be missing permission to read files; an admin can "
                "reinstall it."
            )
        shown = contents_not_taken(downloaded.content, option.accept)
        if shown is not None:  # the model would fail on it, after Replicate billed its start
            log.info("input file %s: its contents are %s", file.filename, shown)
            by_contents = wrong_type(command, option, shown, by=", by its contents")
            raise FileRefused(f"That file ({file.filename}) is {by_contents}")
        try:
            return await image_input(
                self.replicate, downloaded.content, base_type(file.content_type), file.filename
            )
        except (ReplicateError, ValueError) as exc:
            log.warning(
                "input file %s not sent to Replicate (%s)", file.filename, type(exc).__name__
            )
            raise FileRefused(
                f"Conjure could not send that {noun} to Replicate just now; "
                "please try again in a minute."
            ) from None
