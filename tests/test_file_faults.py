"""Outputs a model shapes badly: one unreadable output is named and skipped, never the delivery.

A model's output is any string it likes; one that merely looks like a URL (`https://...`) is
downloaded. A URL that no HTTP client can request (a bracketed host that is no address, a
backslash in the authority, a port past 65535) can never be read however often it is tried, and
a `data:` URL whose base64 is broken is not the file the model meant: each is refused as that
one output, with a reason shown, and the rest of the result is delivered at once.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from bot.http_transport import http_client
from bot.replicate.client import Prediction
from bot.replicate.outputs import OutputFetcher
from bot.serving import serve_app
from storage.models import Delivery, JobStatus
from tests.slack_harness import running_slack_conjure

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
async def file_host() -> AsyncIterator[str]:
    async def image(_request: object) -> Response:
        return Response(PNG, media_type="image/png")

    async def webp(_request: object) -> Response:
        return Response(PNG, media_type="image/webp")

    routes = [Route("/image.png", image), Route("/named/{name}", image), Route("/bare", webp)]
    async with serve_app(Starlette(routes=routes)) as url:
        yield url


def unrequestable(host: str) -> list[str]:
    """URLs that look like files but that no client can request (the last two pass the host
    check: the part after the `@` is the allowed host)."""
    netloc = host.removeprefix("http://")
    return [
        "https://[x]/a.png",  # a bracketed host that is no IP address
        "https://replicate.delivery]/a.png",  # an unbalanced bracket
        f"http://evil.example\\@{netloc}/a.png",  # a backslash in the authority
        "https://replicate.delivery:99999/a.png",  # no such port
    ]


async def test_an_unrequestable_output_url_is_skipped_not_raised_or_retried(
    file_host: str,
) -> None:
    async with http_client(5) as http:
        netloc = file_host.removeprefix("http://")
        fetcher = OutputFetcher(http, ["replicate.delivery", netloc], 1_000_000, deadline=2.0)
        result = await fetcher.fetch(
            [f"{file_host}/image.png", *unrequestable(file_host)], link=True
        )
    assert [file.content for file in result.files] == [PNG]
    assert result.links == []
    assert len(result.skipped) == 4
    assert all(reason.startswith(f"output {n} ") for n, reason in enumerate(result.skipped, 2))


@pytest.mark.parametrize("payload", ["!!!!", "iVBORw0K*GgoAAAAN", "abc"])
async def test_a_data_url_with_broken_base64_is_refused_not_delivered_garbled(
    payload: str,
) -> None:
    async with http_client(5) as http:
        fetcher = OutputFetcher(http, ["replicate.delivery"], 1_000_000)
        good = "data:image/png;base64," + base64.b64encode(PNG).decode()
        result = await fetcher.fetch([good, f"data:image/png;base64,{payload}"])
    assert [file.content for file in result.files] == [PNG]
    assert result.skipped == ["output 2 is not valid data"]


async def test_a_data_url_may_be_percent_encoded_wrapped_or_plain_bytes() -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    quoted = encoded.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    plain = "".join(f"%{byte:02X}" for byte in PNG)  # RFC 2397 without base64: bytes, not UTF-8
    async with http_client(5) as http:
        fetcher = OutputFetcher(http, ["replicate.delivery"], 1_000_000)
        result = await fetcher.fetch(
            [
                f"data:image/png;base64,{wrapped}",
                f"data:image/png;base64,{quoted}",
                f"data:image/png,{plain}",
            ]
        )
    assert result.skipped == []
    assert [file.content for file in result.files] == [PNG, PNG, PNG]


async def test_a_result_with_an_unrequestable_url_is_delivered_at_once_with_the_rest(
    sandbox_server, sqlite_url: str, file_host: str
) -> None:
    sandbox_server.sandbox.faults.drop_webhooks = 1_000_000  # the result below is the test's
    async with running_slack_conjure(sandbox_server, sqlite_url) as conjure:
        service = conjure.service
        fetcher = service.fetcher
        netloc = file_host.removeprefix("http://")
        service.fetcher = OutputFetcher(
            fetcher.http, [*fetcher.allowed_hosts, netloc], 1_000_000, deadline=2.0
        )
        await conjure.slash("/imagine", "a red fox")
        await service.wait_idle()
        [prediction_id] = sandbox_server.sandbox.predictions
        await asyncio.wait_for(sandbox_server.sandbox.runs[prediction_id].done.wait(), 10)
        final: Prediction = await conjure.runtime.replicate.get_prediction(prediction_id)
        output = [f"{file_host}/image.png", *unrequestable(file_host)]
        job = await conjure.runtime.store.find_by_prediction(prediction_id)
        assert job is not None
        await asyncio.wait_for(
            service.apply_prediction(job.id, final.model_copy(update={"output": output})), 10
        )
        await asyncio.wait_for(service.wait_idle(), 10)

        [upload] = conjure.fake.shared_uploads()
        assert upload.content == PNG
        assert upload.initial_comment is not None
        assert upload.initial_comment.count("⚠️ Not delivered: output ") == 4
        delivered = await conjure.runtime.store.get(job.id)
        assert delivered is not None and delivered.job_status is JobStatus.SUCCEEDED
        assert delivered.delivery == Delivery.DELIVERED and delivered.delivery_error is None
        assert delivered.delivery_attempts <= 1


async def test_a_long_or_bare_output_name_keeps_an_extension_so_it_shows_as_what_it_is(
    file_host: str,
) -> None:
    """Discord shows an attachment inline by its name's extension: a name cut to length must
    keep it, and a name without one gets the one its content type says."""
    long_name = "a_red_fox_in_the_snow_" * 8 + "seed_42.png"
    async with http_client(5) as http:
        netloc = file_host.removeprefix("http://")
        fetcher = OutputFetcher(http, [netloc], 1_000_000)
        result = await fetcher.fetch([f"{file_host}/named/{long_name}", f"{file_host}/bare"])
    assert result.skipped == []
    cut, bare = (file.filename for file in result.files)
    assert len(cut) <= 100 and cut.startswith("a_red_fox") and cut.endswith(".png")
    assert bare == "bare.webp"
