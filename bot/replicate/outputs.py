"""Turn a prediction's output into files and text, fetching files only from trusted hosts.

Replicate's file URLs expire after an hour, so results are downloaded and re-uploaded. A webhook
body is attacker-shaped data until proven otherwise: outputs are fetched only from Replicate's
delivery hosts (or the configured sandbox), never by following redirects, never past a size cap
(counted on the bytes as they will be uploaded, decoded a bounded step at a time, so a few
compressed kilobytes cannot inflate to gigabytes in memory) and never past a deadline (a body
trickling in a byte at a time never trips a read timeout).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import mimetypes
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import httpx

from bot.adapter import JobResult, LinkedOutput, OutputFile
from bot.http_transport import stream_get

REPLICATE_FILE_HOSTS = ("replicate.delivery",)
DOWNLOAD_DEADLINE = 60.0  # seconds for one output, from the request to its last byte
DECODE_STEP = 64 * 1024  # the most bytes one step of decompression may produce
MAX_CODINGS = 2  # content-codings stacked on one body ("gzip, gzip"); more are refused
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 15}


class OutputFetcher:
    """Downloads output files for delivery."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        allowed_hosts: Iterable[str],
        max_bytes: int,
        *,
        deadline: float = DOWNLOAD_DEADLINE,
    ) -> None:
        self.http = http
        self.allowed_hosts = tuple(host.lower() for host in allowed_hosts)
        self.max_bytes = max_bytes
        self.deadline = deadline

    async def fetch(
        self, output: Any, *, link: bool = False, limit: int | None = None
    ) -> JobResult:
        """Files for URL outputs, text for token lists, transcripts and other values.

        With `link`, a file larger than the destination takes (`limit`, or the size cap) is
        linked instead (`JobResult.links`): known from its Content-Length, it is not
        downloaded at all; else the download stops at the limit.
        """
        urls, text = split_output(output)
        cap = self.max_bytes if limit is None else min(self.max_bytes, limit)
        files: list[OutputFile] = []
        skipped: list[str] = []
        links: list[LinkedOutput] = []
        for index, url in enumerate(urls):
            try:
                files.append(await self._download(url, index, max_bytes=cap))
            except OutputUnavailable:
                raise  # the host should be back soon: the delivery is tried again, not shorted
            except OutputTooLarge as exc:
                if link and not url.startswith("data:"):
                    links.append(LinkedOutput(url, index + 1, exc.size, cap))
                else:
                    skipped.append(str(exc))
            except OutputTooSlow as exc:
                # Replicate still has it for the hour: its link, not "not delivered".
                if link:
                    links.append(LinkedOutput(url, index + 1, None, cap, too_slow=self.deadline))
                else:
                    skipped.append(str(exc))
            except OutputRejected as exc:
                skipped.append(str(exc))
        return JobResult(files=files, text=text, skipped=skipped, links=links)

    def is_allowed(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:  # "https://[x]/": a model's output is any string it likes
            return False
        if parts.scheme not in ("https", "http"):
            return False
        netloc = parts.netloc.lower().rpartition("@")[2]
        for allowed in self.allowed_hosts:
            if ":" in allowed:
                if netloc == allowed:
                    return True
            elif parts.scheme == "https" and (host == allowed or host.endswith("." + allowed)):
                return True
        return False

    async def download(
        self, url: str, index: int = 0, headers: dict[str, str] | None = None
    ) -> OutputFile:
        """One file (output `index`, for messages), with `headers` (a platform's token: it goes
        only to the allowed hosts); OutputRejected or OutputUnavailable say why not."""
        return await self._download(url, index, headers)

    async def _download(
        self,
        url: str,
        index: int,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> OutputFile:
        cap = self.max_bytes if max_bytes is None else max_bytes
        if url.startswith("data:"):
            return _from_data_url(url, index, cap)
        if not self.is_allowed(url):
            raise OutputRejected(f"output {index + 1} is not on a Replicate file host")
        try:
            async with asyncio.timeout(self.deadline):
                content, content_type = await self._read(url, index, headers or {}, cap)
        except TimeoutError:
            raise OutputTooSlow(
                f"output {index + 1} took longer than {self.deadline:g} s to download"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A URL no client can request (a backslash in its host, no such port): trying again
            # cannot help, so it is this output refused, not the whole delivery held back.
            raise OutputRejected(f"output {index + 1} is not a URL Conjure can read") from exc
        except httpx.TransportError as exc:  # refused, reset, a read timeout: it may pass
            raise OutputUnavailable(
                f"output {index + 1} could not be downloaded ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise OutputRejected(
                f"output {index + 1} could not be downloaded ({type(exc).__name__})"
            ) from exc
        if not content:
            raise _empty(index)
        content_type = content_type or mimetypes.guess_type(_filename(url, index))[0] or ""
        filename = _filename(url, index, content_type)
        return OutputFile(
            filename=filename,
            content=content,
            content_type=content_type or "application/octet-stream",
            source_url=url,
        )

    async def _read(
        self, url: str, index: int, headers: dict[str, str], cap: int
    ) -> tuple[bytes, str]:
        """The body as it will be uploaded, and its content type; stops at the size cap.

        The body is asked for uncompressed and read raw; a server that compresses anyway is
        decoded here, one bounded step at a time, instead of by httpx, which inflates each
        network chunk whole before anyone can count it.
        """
        headers = {**headers, "Accept-Encoding": "identity"}
        async with stream_get(self.http, url, headers) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise OutputUnavailable(
                    f"output {index + 1} could not be downloaded (HTTP {response.status_code})",
                    retry_after=_retry_after(response.headers.get("retry-after")),
                )
            if response.status_code != 200:
                raise OutputRejected(
                    f"output {index + 1} could not be downloaded (HTTP {response.status_code})"
                )
            stages = _decoders(response.headers.get("content-encoding", ""), index)
            length = response.headers.get("content-length", "")
            if not stages and length.isdigit() and int(length) > cap:
                raise _too_large(index, cap, int(length))
            chunks: list[bytes] = []
            size = 0
            try:
                async for raw in response.body:
                    for piece in _decode(stages, raw):
                        size += len(piece)
                        if size > cap:
                            raise _too_large(index, cap, None)
                        chunks.append(piece)
            except zlib.error as exc:
                raise OutputRejected(f"output {index + 1} could not be decoded") from exc
            content_type = response.headers.get("content-type", "").split(";")[0]
        return b"".join(chunks), content_type


def _empty(index: int) -> OutputRejected:
    """No bytes at all (a 200 with an empty body, `data:image/png;base64,`): shared, it would
    be a broken image or an empty video, so it is named as not delivered instead."""
    return OutputRejected(f"output {index + 1} is empty")


def _too_large(index: int, cap: int, size: int | None) -> OutputTooLarge:
    return OutputTooLarge(f"output {index + 1} is larger than {cap // 1_000_000} MB", size)


class _Inflater:
    """Undoes one content-coding, never producing more than DECODE_STEP bytes at once."""

    def __init__(self, wbits: int) -> None:
        self._inflate = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            piece = self._inflate.decompress(data, DECODE_STEP)
            if piece:
                yield piece
            data = self._inflate.unconsumed_tail
            if not data and len(piece) < DECODE_STEP:
                return


def _decoders(header: str, index: int) -> list[_Inflater]:
    """The decoders for a Content-Encoding, in the order to apply them (the last coding first)."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    unknown = [c for c in codings if c not in _INFLATE_WBITS]
    if unknown or len(codings) > MAX_CODINGS:
        raise OutputRejected(f"output {index + 1} came in an encoding Conjure does not accept")
    return [_Inflater(_INFLATE_WBITS[coding]) for coding in reversed(codings)]


def _decode(stages: Sequence[_Inflater], data: bytes) -> Iterator[bytes]:
    """`data` through every stage, piece by piece: no stage ever holds more than one step."""
    if not stages:
        if data:
            yield data
        return
    for piece in stages[0].feed(data):
        yield from _decode(stages[1:], piece)


class OutputRejected(Exception):
    """An output file that will not be delivered; the message is safe to show."""


class OutputTooLarge(OutputRejected):
    """An output over the size cap; `size` is its length when the host said (Content-Length)."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class OutputTooSlow(OutputRejected):
    """An output whose download outlasted the deadline (a slow host, a huge file trickling)."""


class OutputUnavailable(OutputRejected):
    """The file host failed in a way that passes (429, 5xx, a dropped connection): the whole
    delivery is tried again later (at least `retry_after` seconds) instead of skipping it."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float:
    """A Retry-After in seconds (0 when absent, or a date, or unreadable)."""
    try:
        return max(0.0, float(value or 0))
    except ValueError:
        return 0.0


def split_output(output: Any) -> tuple[list[str], str | None]:
    """(file URLs, text) of an output in any of Replicate's shapes."""
    if output is None:
        return [], None
    if isinstance(output, str):
        return ([output], None) if _is_file_url(output) else ([], output)
    if isinstance(output, list):
        if output and all(isinstance(item, str) and _is_file_url(item) for item in output):
            return list(output), None
        if all(isinstance(item, str) for item in output):
            return [], "".join(output)  # a language model's tokens
        return [], json.dumps(output, indent=2, ensure_ascii=False)
    if isinstance(output, dict):
        for key in IMAGE_KEYS:  # {"images": [...], "has_nsfw_concepts": [...]}
            files = output.get(key)
            if isinstance(files, list) and files:
                if all(isinstance(item, str) and _is_file_url(item) for item in files):
                    return list(files), None
        for key in ("transcription", "text", "output"):
            if isinstance(output.get(key), str):
                return [], output[key].strip()
        return [], json.dumps(output, indent=2, ensure_ascii=False)
    return [], str(output)


IMAGE_KEYS = ("images", "output")
NSFW_KEYS = ("has_nsfw_concepts", "nsfw_content_detected", "nsfw")


def output_flagged(output: Any) -> bool:
    """Whether the model flagged any of its outputs as not safe for work: some image models
    return `{"images": [...], "has_nsfw_concepts": [false, true]}` (or a single bool)."""
    if not isinstance(output, dict):
        return False
    for key in NSFW_KEYS:
        flags = output.get(key)
        if isinstance(flags, bool):
            return flags
        if isinstance(flags, list):
            return any(flag is True for flag in flags)
    return False


def _is_file_url(value: str) -> bool:
    return value.startswith(("https://", "http://", "data:")) and " " not in value.strip()


NAME_MAX = 100  # characters of an output's file name


def _filename(url: str, index: int, content_type: str = "") -> str:
    """The URL's last segment, safe as an upload's name (no separators, no leading dots), at
    most NAME_MAX characters with its extension kept (or, without one, the content type's):
    Discord shows an attachment inline, as an image or a player, by its name's extension."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = "".join(ch for ch in name if ch.isalnum() or ch in "-_.").lstrip(".")
    stem, dot, extension = name.rpartition(".")
    if not (dot and stem and 0 < len(extension) <= 10):
        stem, extension = name.rstrip("."), (mimetypes.guess_extension(content_type) or ".")[1:]
    stem = stem or f"output-{index}"
    if not extension:
        return stem[:NAME_MAX]
    return f"{stem[: NAME_MAX - len(extension) - 1]}.{extension}"


def _from_data_url(url: str, index: int, max_bytes: int) -> OutputFile:
    header, _, payload = url.partition(",")
    content_type = header[5:].split(";")[0] or "application/octet-stream"
    try:
        if ";base64" in header:
            # Strictly: a lenient decode drops what is not base64 and delivers a garbled file.
            # The payload may be percent-encoded (RFC 2397) and wrapped; nothing else is let by.
            content = base64.b64decode("".join(unquote(payload).split()), validate=True)
        else:
            content = unquote_to_bytes(payload)  # %89 is the byte 0x89, not a UTF-8 error
    except (binascii.Error, ValueError) as exc:
        raise OutputRejected(f"output {index + 1} is not valid data") from exc
    if len(content) > max_bytes:
        raise _too_large(index, max_bytes, len(content))
    if not content:
        raise _empty(index)
    extension = mimetypes.guess_extension(content_type) or ""
    return OutputFile(
        filename=f"out-{index}{extension}", content=content, content_type=content_type
    )
