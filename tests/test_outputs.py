"""Output handling: trusted hosts only, no redirects, a size cap; progress and money text."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.http_transport import http_client
from bot.messages import format_duration
from bot.money import format_usd
from bot.replicate.outputs import OutputFetcher, split_output
from bot.replicate.progress import progress_from_logs
from bot.serving import serve_app


@pytest.fixture
async def file_host() -> AsyncIterator[str]:
    async def image(_request):
        return Response(b"\x89PNG" + b"x" * 100, media_type="image/png")

    async def big(_request):
        return Response(b"x" * 5000, media_type="image/png")

    async def redirect(_request):
        return RedirectResponse("http://169.254.169.254/latest/meta-data")

    app = Starlette(
        routes=[
            Route("/out-0.png", image),
            Route("/big.png", big),
            Route("/redirect.png", redirect),
        ]
    )
    async with serve_app(app) as url:
        yield url


async def fetch(url_host: str, output: object, max_bytes: int = 1000):
    async with http_client(30) as http:
        netloc = url_host.removeprefix("http://")
        return await OutputFetcher(http, ["replicate.delivery", netloc], max_bytes).fetch(output)


async def test_files_from_the_allowed_host_are_downloaded(file_host: str) -> None:
    result = await fetch(file_host, [f"{file_host}/out-0.png"])
    [file] = result.files
    assert file.filename == "out-0.png" and file.content_type == "image/png"
    assert file.content.startswith(b"\x89PNG") and file.source_url == f"{file_host}/out-0.png"


async def test_other_hosts_redirects_and_oversize_files_are_refused(file_host: str) -> None:
    result = await fetch(
        file_host,
        [
            "http://127.0.0.2:1/evil.png",
            "https://replicate.delivery.evil.example/x.png",
            f"{file_host}/redirect.png",
            f"{file_host}/big.png",
        ],
    )
    assert result.files == []
    assert len(result.skipped) == 4
    assert "not on a Replicate file host" in result.skipped[0]
    assert "not on a Replicate file host" in result.skipped[1]
    assert "HTTP 307" in result.skipped[2]
    assert "larger than" in result.skipped[3]


def test_replicate_subdomains_are_trusted_over_https_only() -> None:
    fetcher = OutputFetcher(http_client(30), ["replicate.delivery"], 10)
    assert fetcher.is_allowed("https://replicate.delivery/a/out-0.webp")
    assert fetcher.is_allowed("https://pbxt.replicate.delivery/a/out-0.webp")
    assert not fetcher.is_allowed("http://replicate.delivery/a/out-0.webp")
    assert not fetcher.is_allowed("https://notreplicate.delivery/a.webp")
    assert not fetcher.is_allowed("file:///etc/passwd")


async def test_data_urls_tokens_and_transcripts() -> None:
    data = "data:image/png;base64," + base64.b64encode(b"\x89PNGabc").decode()
    result = await fetch("http://127.0.0.1:1", [data])
    assert result.files[0].content == b"\x89PNGabc"
    assert split_output(["Hello", ",", " world"]) == ([], "Hello, world")
    assert split_output({"transcription": " hi there ", "segments": []}) == ([], "hi there")
    assert split_output("https://replicate.delivery/x/video.mp4") == (
        ["https://replicate.delivery/x/video.mp4"],
        None,
    )
    assert split_output(None) == ([], None)


@pytest.mark.parametrize(
    ("logs", "expected"),
    [
        (None, None),
        ("", None),
        ("loading weights\n", None),
        ("  0%|          | 0/4 [00:00<?, ?it/s]\n 50%|█████     | 2/4 [00:01<00:01]\n", 50),
        ("100%|██████████| 4/4 [00:02<00:00,  1.9it/s]", 100),
        ("step\r 25%|██▌       | 1/4 [00:00<00:01]\r 75%|███▌ | 3/4 [", 75),
        ("|  3/28 [00:01<00:09", 10),
    ],
)
def test_progress_is_the_last_percentage_in_the_logs(
    logs: str | None, expected: int | None
) -> None:
    assert progress_from_logs(logs) == expected


def test_money_and_durations_read_naturally() -> None:
    assert format_usd(3000) == "$0.003"
    assert format_usd(1_250_000) == "$1.25"
    assert format_usd(0) == "$0.00"
    assert format_usd(None) == "$?"
    assert format_duration(4.26) == "4.3s"
    assert format_duration(125) == "2m 05s"
