"""httpx over aiohttp: Conjure's code keeps `httpx.AsyncClient`; aiohttp carries the bytes.

Why: measured here against a local server, httpx's own transport (httpcore on anyio) spent
0.7 ms of CPU per request one at a time and 1.2 ms with 20 at once (its pool's bookkeeping);
the same requests through this transport cost 0.3-0.4 ms. Every command makes at least two
(the create, the output's download). aiohttp is already here: slack_sdk's client runs on it.

Why not the `httpx-aiohttp` package, which does the same: it turns aiohttp's
`ClientConnectionError`, which includes a server closing the connection after the request was
sent, into `httpx.ConnectTimeout`. `ReplicateClient` repeats a create after a connect error,
which must mean "never sent"; a create that was sent and then lost must stay "outcome unknown",
or one command could make two predictions. Here each aiohttp error becomes the httpx error that
says the same about whether the request left (`as_httpx_error`), while the request is sent and
while its body is read. As httpx's own transport does, it verifies TLS against httpx's roots
and takes proxies from the environment, read once when the session is made (as httpx reads them
when its client is made): aiohttp's `trust_env` reads them, and ~/.netrc, on a worker thread for
every request, which cost more CPU than the request itself.

Downloads (`stream_get`) skip httpx's client and go straight to the session, with the same
headers, timeouts, proxies and errors.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import httpx
from aiohttp.helpers import ProxyInfo, proxies_from_env

CHUNK = 64 * 1024
# An idle connection is dropped after 4 s, before servers that close theirs after 5 (uvicorn's
# default, the sandbox's): a create sent on a connection the server is closing that instant
# fails with no answer, and a create without an answer is a job that may have to be given up.
# Seconds an idle pooled connection is kept: below the keep-alive of the servers Conjure
# talks to (uvicorn's is 5 s), so that none is reused just as the server closes it.
KEEPALIVE = 4.0
LIMITS = httpx.Limits(max_connections=100, keepalive_expiry=KEEPALIVE)

# aiohttp's errors, most specific first, and the httpx error each one is. Only the first two
# mean the request never left: a connection that could not be made or not in time (aiohttp's
# `connect` timeout covers waiting for a pooled connection too, which is also before sending).
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.ReadError),
    (asyncio.TimeoutError, httpx.ReadTimeout),
)


def default_tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR), one per
    process for each such setting: building one reads the CA bundle, ~20 ms of CPU, which every
    new session paid (a fifth of the test suite's CPU). A context is safe to share between
    sessions and loops, as httpx advises for many clients."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()  # reads the same two variables


def as_httpx_error(error: BaseException) -> httpx.TransportError | None:
    """The httpx error that stands for aiohttp's `error`; None for anything else."""
    for aiohttp_error, httpx_error in _ERRORS:
        if isinstance(error, aiohttp_error):
            return httpx_error(str(error) or type(error).__name__)
    return None


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as error:
        mapped = as_httpx_error(error)
        if mapped is None:  # pragma: no cover - every ClientError maps
            raise
        raise mapped from error


class _Body(httpx.AsyncByteStream):
    """A response body as aiohttp reads it, its errors as httpx's."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport on one aiohttp session, made in the loop that first sends a request
    (a session belongs to its loop; a client used from a new loop gets a new one)."""

    def __init__(self, limits: httpx.Limits = LIMITS, *, trust_env: bool = True) -> None:
        self._limits = limits
        self._trust_env = trust_env  # False: no proxies from the environment
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies: dict[str, ProxyInfo] = {}
        self._proxy_for_host: dict[tuple[str, str], ProxyInfo | None] = {}

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry or 0,
                ssl=default_tls_context(),
            )
            # No cookies kept (an API client); proxies as `_proxy` says.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
            self._loop = loop
            self._proxies = proxies_from_env() if self._trust_env else {}
            self._proxy_for_host = {}
        return self._session

    def _proxy(self, scheme: str, host: str) -> ProxyInfo | None:
        """As httpx by default: the environment's proxy for this URL's scheme (HTTPS_PROXY,
        HTTP_PROXY), unless NO_PROXY names its host; decided once per scheme and host."""
        key = (scheme, host)
        if key not in self._proxy_for_host:
            info = self._proxies.get(scheme)
            if info is not None and urllib.request.proxy_bypass(host):
                info = None
            self._proxy_for_host[key] = info
        return self._proxy_for_host[key]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            data: bytes | httpx.AsyncByteStream | None = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # type: ignore[assignment]
        headers = [(k, v) for k, v in request.headers.multi_items() if k != "transfer-encoding"]
        url = request.url
        response = await self._send(
            request.method,
            str(url),
            (url.scheme, url.host),
            headers=headers,
            data=data,
            timeout=_timeout(timeout.get("pool"), timeout.get("connect"), timeout.get("read")),
        )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def _send(
        self,
        method: str,
        url: str,
        scheme_and_host: tuple[str, str],
        *,
        headers: list[tuple[str, str]],
        data: bytes | httpx.AsyncByteStream | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """The request on this transport's session: httpx's semantics (no redirects followed,
        no decoding, no headers added), aiohttp's errors as httpx's."""
        session = self._session_here()
        proxy = self._proxy(*scheme_and_host)
        with _as_httpx_errors():
            return await session.request(
                method,
                url,
                headers=headers,
                proxy=proxy.proxy if proxy else None,
                proxy_auth=proxy.proxy_auth if proxy else None,
                data=data,
                allow_redirects=False,  # httpx follows them, if asked
                auto_decompress=False,  # httpx decodes
                compress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                timeout=timeout,
            )

    @asynccontextmanager
    async def stream_get(
        self, url: str, headers: list[tuple[str, str]], timeout: httpx.Timeout
    ) -> AsyncIterator[RawResponse]:
        """GET `url` with exactly these headers, its body as it comes (see `stream_get`)."""
        parts = urlsplit(url)
        response = await self._send(
            "GET",
            url,
            (parts.scheme, parts.hostname or ""),
            headers=headers,
            data=None,
            timeout=_timeout(timeout.pool, timeout.connect, timeout.read),
        )
        body = _Body(response).__aiter__()
        try:
            yield RawResponse(response.status, response.headers, body)
        finally:
            await body.aclose()  # a body left unread (too large, say) is closed here, not by GC
            response.release()

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _timeout(
    pool: float | None, connect: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    """httpx's timeouts as aiohttp's: its `connect` covers waiting for a pooled connection."""
    return aiohttp.ClientTimeout(connect=pool, sock_connect=connect, sock_read=read)


@dataclass(frozen=True)
class RawResponse:
    """A response as a download reads it: status, headers (looked up in any case), raw body."""

    status_code: int
    headers: Mapping[str, str]
    body: AsyncIterator[bytes]


# The transport of each client made by `http_client`, for `stream_get`.
_TRANSPORTS: weakref.WeakKeyDictionary[httpx.AsyncClient, AiohttpTransport] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def stream_get(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> AsyncIterator[RawResponse]:
    """GET `url` through `client`, never following a redirect, the body raw (not decoded), and
    errors as httpx raises them.

    On a client made by `http_client` the request goes straight to its aiohttp session, with the
    client's own headers and timeouts: measured here, httpx's client machinery (building the
    request, its URL and header models, the cookie jar asked on the way out and fed on the way
    back) cost 0.15-0.17 ms of CPU per download, more than aiohttp's own work. A download needs
    none of it: no cookies, no auth, no redirects. Any other client goes through httpx."""
    transport = _TRANSPORTS.get(client)
    if transport is None:
        async with client.stream("GET", url, headers=headers, follow_redirects=False) as response:
            yield RawResponse(response.status_code, response.headers, response.aiter_raw())
        return
    given = {name.lower() for name in headers}
    sent = [(k, v) for k, v in client.headers.items() if k not in given]  # httpx's: lower case
    sent += headers.items()
    async with transport.stream_get(url, sent, client.timeout) as response:
        yield response


def http_client(
    timeout: httpx.Timeout | float, *, trust_env: bool = True, **options: object
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` on this transport: how Conjure makes its HTTP clients
    (`trust_env=False`: no proxies from the environment, as with httpx's own option)."""
    transport = AiohttpTransport(trust_env=trust_env)
    client = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=trust_env, **options)  # type: ignore[arg-type]
    _TRANSPORTS[client] = transport
    return client
