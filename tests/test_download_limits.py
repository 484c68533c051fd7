"""Downloads of outputs are bounded in size as uploaded and in time, whatever the server does.

A real file host on loopback serves what a hostile or broken one would: a few kilobytes that
inflate to gigabytes (`Content-Encoding: gzip`, or `gzip, gzip`), a body trickling in a byte at
a time, an encoding nobody asked for. Each is refused with a reason the person is shown, memory
stays near the cap, and the rest of the result is still delivered.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bot.http_transport import http_client
from bot.replicate.client import Prediction
from bot.replicate.outputs import OutputFetcher
from bot.serving import serve_app
from storage.models import Delivery, JobStatus
from tests.slack_harness import running_slack_conjure

CAP = 1_000_000
MiB = 1 << 20
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@functools.cache
def gzip_bomb() -> bytes:
    """8 KB that inflate to 8 MiB of zeros."""
    return gzip.compress(bytes(8 * MiB), 9)


@functools.cache
def double_gzip_bomb(inflated: int = 256 * MiB) -> bytes:
    """About 700 bytes that inflate, twice, to 256 MiB of zeros; built without allocating them
    (after a full flush, every MiB of zeros deflates to the same bytes)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MiB)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeat = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated // MiB):
        crc = zlib.crc32(zeros, crc)
    body = first + repeat * (inflated // MiB - 1) + deflate.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    inner = header + body + struct.pack("<II", crc, inflated & 0xFFFFFFFF)
    return gzip.compress(inner, 9)


@dataclass
class FileHost:
    url: str
    accept_encodings: list[str | None] = field(default_factory=list)

    @property
    def netloc(self) -> str:
        return self.url.removeprefix("http://")


@pytest.fixture
async def file_host() -> AsyncIterator[FileHost]:
    host = FileHost("")

    def served(body: bytes, encoding: str | None = None) -> Route:
        async def endpoint(request: Request) -> Response:
            host.accept_encodings.append(request.headers.get("accept-encoding"))
            headers = {"Content-Encoding": encoding} if encoding else None
            return Response(body, media_type="image/png", headers=headers)

        return endpoint

    async def trickle(request: Request) -> Response:
        async def one_byte_at_a_time() -> AsyncIterator[bytes]:
            for _ in range(200):  # 10 s, far past any deadline below
                yield b"x"
                await asyncio.sleep(0.05)

        return StreamingResponse(one_byte_at_a_time(), media_type="image/png")

    app = Starlette(
        routes=[
            Route("/image.png", served(PNG)),
            Route("/compressed.png", served(gzip.compress(PNG), "gzip")),
            Route("/bomb.png", served(gzip_bomb(), "gzip")),
            Route("/double-bomb.png", served(double_gzip_bomb(), "gzip, gzip")),
            Route("/brotli.png", served(PNG, "br")),
            Route("/empty.png", served(b"")),
            Route("/empty-gzip.png", served(gzip.compress(b""), "gzip")),
            Route("/trickle.png", trickle),
        ]
    )
    async with serve_app(app) as url:
        host.url = url
        yield host


async def fetch(host: FileHost, paths: list[str], deadline: float = 5.0):
    async with http_client(30) as http:
        fetcher = OutputFetcher(http, [host.netloc], CAP, deadline=deadline)
        return await fetcher.fetch([f"{host.url}{path}" for path in paths])


async def test_files_are_asked_for_uncompressed_and_compressed_ones_still_arrive_whole(
    file_host: FileHost,
) -> None:
    result = await fetch(file_host, ["/image.png", "/compressed.png"])
    assert [file.content for file in result.files] == [PNG, PNG]
    assert result.skipped == []
    assert file_host.accept_encodings == ["identity", "identity"]


@pytest.mark.parametrize(
    ("path", "inflates_to"), [("/bomb.png", 8 * MiB), ("/double-bomb.png", 256 * MiB)]
)
async def test_a_compression_bomb_is_refused_as_too_large_with_memory_near_the_cap(
    file_host: FileHost, path: str, inflates_to: int
) -> None:
    body = gzip_bomb() if path == "/bomb.png" else double_gzip_bomb()
    assert len(body) < 10_000 and inflates_to > 8 * CAP
    tracemalloc.start()
    try:
        result = await fetch(file_host, [path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.files == []
    assert result.skipped == ["output 1 is larger than 1 MB"]
    assert peak < 4 * CAP, f"{peak / MiB:.1f} MiB at peak"


async def test_a_trickling_download_is_refused_at_the_deadline(file_host: FileHost) -> None:
    started = time.monotonic()
    # A second: room for the next, quick download on a loaded machine; the trickle takes 10.
    result = await fetch(file_host, ["/trickle.png", "/image.png"], deadline=1.0)
    elapsed = time.monotonic() - started
    assert result.skipped == ["output 1 took longer than 1 s to download"]
    assert [file.content for file in result.files] == [PNG]  # the next one still came
    assert elapsed < 4.0


async def test_an_encoding_nobody_asked_for_is_refused(file_host: FileHost) -> None:
    result = await fetch(file_host, ["/brotli.png"])
    assert result.files == []
    assert result.skipped == ["output 1 came in an encoding Conjure does not accept"]


async def test_refused_outputs_are_named_or_linked_in_the_thread_and_the_rest_is_delivered(
    sandbox_server, sqlite_url: str, file_host: FileHost
) -> None:
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000  # the result below is the test's
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        service = conjure.service
        fetcher = service.fetcher
        service.fetcher = OutputFetcher(
            fetcher.http, [*fetcher.allowed_hosts, file_host.netloc], CAP, deadline=1.0
        )
        await conjure.slash("/imagine", "a red fox")
        await service.wait_idle()
        [prediction_id] = sandbox_server.sandbox.predictions
        await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 10)
        final: Prediction = await conjure.runtime.replicate.get_prediction(prediction_id)
        output = [f"{file_host.url}{path}" for path in ("/image.png", "/bomb.png", "/trickle.png")]
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None
        await service.apply_prediction(job.id, final.model_copy(update={"output": output}))
        await service.wait_idle()

        [upload] = conjure.fake.shared_uploads()
        assert upload.content == PNG
        assert upload.initial_comment is not None
        # Too large to upload: linked instead, with when Replicate's link dies.
        linked = [
            m.text for m in conjure.fake.messages if "🔗 Image 2" in (getattr(m, "text", "") or "")
        ]
        assert len(linked) == 1 and f"{file_host.url}/bomb.png" in linked[0]
        assert "an hour after the run" in linked[0]
        # Too slow to download: still on Replicate for the hour, so linked too, not lost.
        assert (
            f"🔗 Image 3 took longer than 1 s to download, so here is Replicate's link to it: "
            f"{file_host.url}/trickle.png\n"
        ) in linked[0]
        assert "Not delivered" not in upload.initial_comment
        delivered = await conjure.runtime.store.get(job.id)
        assert delivered is not None and delivered.job_status is JobStatus.SUCCEEDED
        assert delivered.delivery == Delivery.DELIVERED and delivered.delivery_error is None


async def test_an_empty_output_is_named_not_shared_as_a_broken_file(file_host: FileHost) -> None:
    empty_data = "data:image/png;base64,"
    result = await fetch(file_host, ["/empty.png", "/image.png", "/empty-gzip.png"])
    assert [file.content for file in result.files] == [PNG]  # the rest still comes
    assert result.skipped == ["output 1 is empty", "output 3 is empty"]
    async with http_client(30) as http:
        fetcher = OutputFetcher(http, [file_host.netloc], CAP)
        result = await fetcher.fetch([empty_data, f"{file_host.url}/image.png"])
    assert [file.content for file in result.files] == [PNG]
    assert result.skipped == ["output 1 is empty"]
