"""The sandbox streams a language model's answer as Replicate does (`urls.stream`, SSE), read
by Replicate's own client and by Conjure's reader (bot.replicate.stream)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import replicate

from bot.replicate.client import ReplicateClient
from bot.replicate.stream import Event, EventParser, StreamError
from bot.sandbox import HttpFault, streams
from tests.sandbox_fixtures import SandboxServer

LLAMA = "meta/meta-llama-3-8b-instruct"


async def create(server: SandboxServer, model: str = LLAMA, prompt: str = "why is the sky blue"):
    async with ReplicateClient(server.url, server.token) as client:
        return await client.create_prediction(model=model, input={"prompt": prompt})


async def events_of(server: SandboxServer, url: str) -> list[Event]:
    async with ReplicateClient(server.url, server.token) as client:
        return [event async for event in client.stream(url)]


async def test_replicates_own_client_streams_the_tokens(sandbox_server: SandboxServer):
    client = replicate.Client(api_token=sandbox_server.token, base_url=sandbox_server.url)

    def read() -> list[str]:
        events = client.stream(LLAMA, input={"prompt": "why is it blue"})
        return [str(event) for event in events if event.event.value == "output"]

    tokens = await asyncio.to_thread(read)
    [prediction] = sandbox_server.sandbox.predictions.values()
    assert len(tokens) > 5 and tokens == prediction["output"]
    assert "".join(tokens).startswith('You asked: "why is it blue".')


async def test_a_text_prediction_streams_output_events_with_ids_then_done(
    sandbox_server: SandboxServer,
):
    prediction = await create(sandbox_server)
    url = (prediction.urls or {})["stream"]
    assert url == f"{sandbox_server.url}/stream/{prediction.id}"
    events = await events_of(sandbox_server, url)
    assert [e.event for e in events[:-1]] == ["output"] * (len(events) - 1)
    assert events[-1] == Event("done", "{}", str(len(events)))
    assert [e.id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    done = sandbox_server.sandbox.predictions[prediction.id]
    assert "".join(e.data for e in events[:-1]) == "".join(done["output"])
    # Image predictions do not stream.
    async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
        image = await client.create_prediction(
            model="black-forest-labs/flux-schnell", input={"prompt": "a fox"}
        )
    assert "stream" not in (image.urls or {})


async def test_the_stream_follows_the_run_with_keepalives_and_ends_canceled(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(streams, "KEEPALIVE_SECONDS", 0.05)
    sandbox_server.sandbox.faults.pause_after_tokens = 3
    prediction = await create(sandbox_server)
    url = (prediction.urls or {})["stream"]
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        seen = ""
        async for chunk in response.aiter_text():
            seen += chunk
            if seen.count(": keep-alive") == 1:  # held after 3 tokens: quiet, so kept alive
                assert seen.count("event: output") == 3
                async with ReplicateClient(sandbox_server.url, sandbox_server.token) as client:
                    await client.cancel_prediction(prediction.id)
    assert seen.endswith('event: done\nid: 4\ndata: {"reason": "canceled"}\n\n')


async def test_a_failed_run_streams_an_error_event_and_a_cut_stream_resumes_by_id(
    sandbox_server: SandboxServer,
):
    prediction = await create(sandbox_server, prompt="FAIL_ME please")
    events = await events_of(sandbox_server, (prediction.urls or {})["stream"])
    error, done = events[-2:]
    assert error.event == "error" and "NSFW" in json.loads(error.data)["detail"]
    assert done.event == "done"

    sandbox_server.sandbox.faults.cut_streams_after = 2
    prediction = await create(sandbox_server)
    url = (prediction.urls or {})["stream"]
    assert [e.id for e in await events_of(sandbox_server, url)] == ["1", "2"]
    sandbox_server.sandbox.faults.cut_streams_after = 0
    async with httpx.AsyncClient() as http:
        resumed = await http.get(url, headers={"Last-Event-ID": "2"})
    assert resumed.text.startswith("event: output\nid: 3\n")


async def test_a_stream_answering_500_is_a_stream_error(sandbox_server: SandboxServer):
    prediction = await create(sandbox_server)
    sandbox_server.sandbox.faults.http.append(HttpFault(status=500, path_prefix="/stream/"))
    with pytest.raises(StreamError, match="500"):
        await events_of(sandbox_server, (prediction.urls or {})["stream"])


def test_the_parser_joins_data_lines_and_drops_events_before_any_id():
    parser = EventParser()
    lines = ["event: output", "data: no id yet", "", ": ping"]
    lines += ["event: output", "data: a", "data: b", "id: 7", "", "event: done", "data: {}", ""]
    events = [e for line in lines if (e := parser.line(line))]
    # As in the SSE format, the last id stays until another is given.
    assert events == [Event("output", "a\nb", "7"), Event("done", "{}", "7")]


async def test_the_token_goes_only_to_the_api_and_replicate_hosts(sandbox_server: SandboxServer):
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        body = b"event: done\nid: 1\ndata: {}\n\n"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    client = ReplicateClient("https://api.replicate.com", "r8_secret", http=http)
    for url in (
        "https://api.replicate.com/stream/x",
        "https://stream.replicate.net/v1/streams/x",
        "https://elsewhere.example/stream/x",
    ):
        assert [e.event async for e in client.stream(url)] == ["done"]
    await http.aclose()
    assert seen == ["Bearer r8_secret", "Bearer r8_secret", None]
