"""bot.http_transport: httpx over aiohttp, its errors saying what httpx's would about whether a
request left. The point is money: a create that was sent and then lost is never repeated."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import pytest
import trustme

from bot.http_transport import as_httpx_error, default_tls_context, http_client, stream_get
from bot.replicate.client import ReplicateClient
from bot.replicate.errors import (
    PredictionOutcomeUnknown,
    ReplicateConnectionError,
    ReplicateUnavailableError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback TCP server that answers as `handler` says, counting the requests it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            self.requests.append(head + await reader.readexactly(length))
            await self.handler(reader, writer)
        writer.close()


@contextlib.asynccontextmanager
async def raw_server(
    handler: Handler, tls: ssl.SSLContext | None = None
) -> AsyncIterator[RawServer]:
    server = RawServer(handler)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    async with listening:
        yield server


async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, answer nothing, close."""


async def half_an_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Headers promising 100 bytes, 10 of them, close."""
    writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n")
    writer.write(b"Content-Length: 100\r\n\r\n" + b'{"id": "ab')
    await writer.drain()


async def never_answer(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up and closes


def replicate(url: str, http: httpx.AsyncClient) -> ReplicateClient:
    return ReplicateClient(url, "r8_transport_test_token", http=http, max_backoff=0.01)


@pytest.mark.parametrize("answer", [hang_up, half_an_answer], ids=["hang-up", "half-an-answer"])
async def test_a_create_sent_and_then_lost_is_unknown_and_never_repeated(answer: Handler):
    async with raw_server(answer) as server, http_client(5) as http:
        with pytest.raises(PredictionOutcomeUnknown) as raised:
            await replicate(server.url, http).create_prediction(
                model="black-forest-labs/flux-schnell",
                input={"prompt": "a cat"},
                webhook="http://127.0.0.1:9/webhooks/replicate?job=1",
            )
    assert len(server.requests) == 1  # sent once: a second copy could be a second prediction
    assert server.requests[0].startswith(b"POST /v1/models/black-forest-labs/flux-schnell/")
    assert b'{"input":{"prompt":"a cat"}' in server.requests[0]
    assert "r8_transport_test_token" not in str(raised.value)


async def test_a_create_with_no_answer_in_time_is_unknown_and_never_repeated():
    async with raw_server(never_answer) as server, http_client(0.3) as http:
        with pytest.raises(PredictionOutcomeUnknown):
            await replicate(server.url, http).create_prediction(
                model="black-forest-labs/flux-schnell", input={"prompt": "a cat"}
            )
    assert len(server.requests) == 1


async def test_a_read_that_loses_its_answer_is_repeated_then_unavailable():
    async with raw_server(hang_up) as server, http_client(5) as http:
        with pytest.raises(ReplicateUnavailableError):
            await replicate(server.url, http).get_prediction("abc")
    # A GET is safe to repeat: each of the 4 attempts was made (and aiohttp itself repeats an
    # idempotent request once when the connection drops).
    assert len(server.requests) == 8
    assert all(request.startswith(b"GET /v1/predictions/abc ") for request in server.requests)


async def test_a_refused_connection_is_not_sent_and_is_repeated():
    async with raw_server(hang_up) as server:
        url = server.url
    async with http_client(5) as http:
        with pytest.raises(ReplicateConnectionError):
            await replicate(url, http).create_prediction(
                model="black-forest-labs/flux-schnell", input={"prompt": "a cat"}
            )


async def test_a_body_cut_short_while_streaming_is_a_read_error():
    async with raw_server(half_an_answer) as server, http_client(5) as http:
        async with http.stream("GET", server.url + "/file") as response:
            assert response.status_code == 201
            with pytest.raises(httpx.TransportError) as raised:
                async for _ in response.aiter_raw():
                    pass
    assert not isinstance(raised.value, httpx.ConnectError | httpx.ConnectTimeout)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiohttp.ConnectionTimeoutError("pool or connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.ClientPayloadError("cut"), httpx.ReadError),
        (aiohttp.ClientConnectionResetError("closing transport"), httpx.ReadError),
    ],
)
def test_only_errors_before_sending_become_connect_errors(
    error: BaseException, expected: type[httpx.TransportError]
):
    mapped = as_httpx_error(error)
    assert type(mapped) is expected


async def test_a_request_and_its_answer_arrive_whole():
    received: dict[str, bytes] = {}

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b"x" * 300_000
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Seen: yes\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with raw_server(echo) as server, http_client(5) as http:
        response = await http.post(
            server.url + "/upload",
            files={"content": ("cat.png", b"\x89PNG-bytes", "image/png")},
            headers={"Authorization": "Bearer t"},
        )
        received["request"] = server.requests[0]
    assert response.status_code == 200
    assert response.headers["x-seen"] == "yes"
    assert response.content == b"x" * 300_000
    head, _, body = received["request"].partition(b"\r\n\r\n")
    assert b"authorization: Bearer t" in head.lower().replace(b"bearer", b"Bearer")
    assert b"multipart/form-data; boundary=" in head
    assert b'filename="cat.png"' in body and b"\x89PNG-bytes" in body


async def test_proxies_come_from_the_environment_as_with_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_server(answer) as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with http_client(5) as http:
            response = await http.get("http://api.replicate.example/v1/predictions/abc")
    assert response.text == "ok"
    [request] = proxy.requests
    assert request.startswith(b"GET http://api.replicate.example/v1/predictions/abc HTTP/1.1")


async def answer_ok(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


async def test_tls_is_verified_against_httpxs_roots_or_ssl_cert_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """As with httpx's own transport: a server whose certificate certifi's roots do not vouch
    for is refused before anything is sent; naming its CA in SSL_CERT_FILE lets it through.
    Clients share one TLS context per setting (building one reads the CA bundle)."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with raw_server(answer_ok, tls=server_tls) as server:
        async with http_client(5) as http:
            with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
                await http.get(server.url + "/private")
        assert server.requests == []

        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        async with http_client(5) as http, http_client(5) as other:
            assert (await http.get(server.url + "/one")).text == "ok"
            assert (await other.get(server.url + "/two")).text == "ok"
        assert len(server.requests) == 2
    assert default_tls_context() is default_tls_context()


async def test_no_proxy_hosts_are_reached_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    async with raw_server(answer_ok) as proxy, raw_server(answer_ok) as direct:
        for name in ("no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with http_client(5) as http:
            first = await http.get(f"{direct.url}/a")
            second = await http.get(f"{direct.url}/b")
    assert (first.text, second.text) == ("ok", "ok")
    assert proxy.requests == []
    assert [r.split(b" ")[1] for r in direct.requests] == [b"/a", b"/b"]


async def test_a_client_that_does_not_trust_the_environment_uses_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandbox's webhook sender: loopback webhooks never go through an HTTP_PROXY."""
    async with raw_server(answer_ok) as proxy, raw_server(answer_ok) as direct:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with http_client(5, trust_env=False) as http:
            response = await http.get(f"{direct.url}/hook")
    assert response.text == "ok"
    assert proxy.requests == [] and len(direct.requests) == 1


async def test_proxies_are_read_when_the_client_starts_not_at_each_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As httpx does; aiohttp's trust_env read them (and ~/.netrc) on a thread per request."""
    async with raw_server(answer_ok) as proxy, raw_server(answer_ok) as direct:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        async with http_client(5) as http:
            await http.get(f"{direct.url}/before")
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            await http.get(f"{direct.url}/after")
    assert proxy.requests == []
    assert len(direct.requests) == 2


# stream_get: downloads. Straight on aiohttp for a client made by http_client, through httpx for
# any other; the same answer either way.
CLIENTS = {
    "http_client": lambda: http_client(5),
    "plain httpx": lambda: httpx.AsyncClient(timeout=5),
}


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
async def test_a_download_sends_the_clients_headers_and_gets_the_answer_as_it_came(
    make: Callable[[], httpx.AsyncClient],
) -> None:
    body = gzip.compress(b"not to be inflated here")

    async def redirect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Encoding: gzip\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with raw_server(redirect) as server, make() as http:
        headers = {"Accept-Encoding": "identity", "Authorization": "Bearer xoxb-t"}
        async with stream_get(http, server.url + "/out-0.png", headers) as response:
            chunks = [chunk async for chunk in response.body]
    assert response.status_code == 302  # not followed
    assert response.headers.get("location") == "/elsewhere"
    assert response.headers.get("Content-Encoding") == "gzip"
    assert b"".join(chunks) == body  # raw: the caller decodes, a bounded step at a time
    [request] = server.requests
    head = request.lower()
    assert head.startswith(b"get /out-0.png http/1.1")
    assert head.count(b"accept-encoding:") == 1 and b"accept-encoding: identity" in head
    assert b"authorization: bearer xoxb-t" in head
    assert b"user-agent: python-httpx/" in head  # the client's own headers go along


@pytest.mark.parametrize("make", CLIENTS.values(), ids=CLIENTS.keys())
async def test_a_download_fails_as_httpx_says_whether_it_left(
    make: Callable[[], httpx.AsyncClient],
) -> None:
    async with raw_server(half_an_answer) as server, make() as http:
        with pytest.raises(httpx.TransportError) as cut:
            async with stream_get(http, server.url + "/file", {}) as response:
                assert response.status_code == 201
                async for _ in response.body:
                    pass
        url = server.url
    assert not isinstance(cut.value, httpx.ConnectError | httpx.ConnectTimeout)
    async with make() as http:
        with pytest.raises(httpx.ConnectError):  # the server is gone: refused, never sent
            async with stream_get(http, url + "/file", {}):
                pass


async def test_a_download_on_an_http_client_skips_httpxs_machinery_but_not_its_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Straight to aiohttp (httpx's event hooks, which run in its send, are not called), with
    the proxy the client would use."""
    async with raw_server(answer_ok) as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        sent: list[httpx.Request] = []

        async def seen(request: httpx.Request) -> None:
            sent.append(request)

        async with http_client(5, event_hooks={"request": [seen]}) as http:
            async with stream_get(http, "http://files.example/out.png", {}) as response:
                content = b"".join([chunk async for chunk in response.body])
            await http.get("http://files.example/through-httpx")
    assert content == b"ok"
    assert [str(request.url) for request in sent] == ["http://files.example/through-httpx"]
    assert [r.split(b" ")[1] for r in proxy.requests] == [
        b"http://files.example/out.png",
        b"http://files.example/through-httpx",
    ]
