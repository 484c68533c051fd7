"""The sandbox's Files API over loopback HTTP, with httpx and with Replicate's own client."""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any

import httpx
import pytest

from bot.sandbox import uploads
from tests.sandbox_fixtures import SandboxServer
from tests.test_sandbox import TIME, anonymous, api, official_client

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # binary, with CR, LF and NUL in it


def content(data: bytes = PNG, name: str = "fox.png", mime: str = "image/png") -> dict[str, Any]:
    return {"content": (name, data, mime)}


async def test_upload_answers_replicates_file_object(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        answer = await http.post(
            "/v1/files", files=content(), data={"metadata": json.dumps({"job": 42})}
        )
    assert answer.status_code == 201
    file = answer.json()
    assert re.fullmatch(r"[a-z0-9]{26}", file["id"])
    assert (file["name"], file["content_type"], file["size"]) == ("fox.png", "image/png", len(PNG))
    md5 = hashlib.md5(PNG).hexdigest()
    assert file["etag"] == md5
    assert file["checksums"] == {"sha256": hashlib.sha256(PNG).hexdigest(), "md5": md5}
    assert file["metadata"] == {"job": 42}
    assert TIME.match(file["created_at"]) and TIME.match(file["expires_at"])
    assert file["created_at"] < file["expires_at"]
    assert file["urls"] == {"get": f"{sandbox_server.url}/v1/files/{file['id']}"}


async def test_get_list_download_and_delete(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http, anonymous(sandbox_server) as guest:
        first = (await http.post("/v1/files", files=content(b"one", "a.txt", "text/plain"))).json()
        second = (await http.post("/v1/files", files=content())).json()
        assert (await http.get(first["urls"]["get"])).json() == first
        listed = (await http.get("/v1/files")).json()
        assert [f["id"] for f in listed["results"]] == [second["id"], first["id"]]
        assert listed["next"] is None
        download = await http.get(f"{second['urls']['get']}/download")
        assert download.status_code == 200 and download.content == PNG
        assert download.headers["content-type"] == "image/png"
        assert (await guest.get(f"{second['urls']['get']}/download")).status_code == 401
        assert (await guest.get(second["urls"]["get"])).status_code == 401
        assert (await http.delete(second["urls"]["get"])).status_code == 204
        gone = await http.get(second["urls"]["get"])
        assert gone.status_code == 404 and gone.json()["detail"] == "File not found."
        assert (await http.get(f"{second['urls']['get']}/download")).status_code == 404
        assert (await http.delete(second["urls"]["get"])).status_code == 404
        assert [f["id"] for f in (await http.get("/v1/files")).json()["results"]] == [first["id"]]


async def test_upload_without_a_token_is_401(sandbox_server: SandboxServer):
    async with anonymous(sandbox_server) as guest:
        answer = await guest.post("/v1/files", files=content())
    assert answer.status_code == 401 and answer.json()["title"] == "Unauthenticated"
    assert sandbox_server.sandbox.uploads.newest_first() == []


async def test_malformed_uploads_are_refused(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        missing = await http.post("/v1/files", files={"other": ("x", b"x", "text/plain")})
        assert missing.status_code == 422
        assert missing.json()["invalid_fields"] == [
            {"type": "required", "field": "content", "description": "content is required"}
        ]
        not_form = await http.post("/v1/files", json={"content": "x"})
        assert not_form.status_code == 400
        assert "multipart/form-data" in not_form.json()["detail"]
        listed = await http.post("/v1/files", files=content(), data={"metadata": "[1]"})
        assert listed.status_code == 422
        assert listed.json()["invalid_fields"][0]["field"] == "metadata"
    assert sandbox_server.sandbox.uploads.newest_first() == []


async def test_a_file_over_the_limit_is_413_and_not_stored(
    sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(uploads, "MAX_FILE_BYTES", 1000)
    async with api(sandbox_server) as http:
        at_limit = await http.post("/v1/files", files=content(b"x" * 1000))
        assert at_limit.status_code == 201
        over = await http.post("/v1/files", files=content(b"x" * 1001))
        huge = await http.post("/v1/files", files=content(b"x" * 200_000))
    for answer in (over, huge):
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"] == (
            "The file is too large; the maximum file size is 1000 bytes."
        )
    assert len(sandbox_server.sandbox.uploads.newest_first()) == 1


async def test_replicates_own_client_uploads_lists_gets_and_deletes(sandbox_server: SandboxServer):
    async with official_client(sandbox_server) as client:
        created = await client.files.async_create(
            io.BytesIO(PNG), filename="fox.png", metadata={"who": "me"}
        )
        got = await client.files.async_get(created.id)
        listed = await client.files.async_list()
        deleted = await client.files.async_delete(created.id)
    assert (created.name, created.content_type, created.size) == ("fox.png", "image/png", len(PNG))
    assert created.metadata == {"who": "me"} and got.id == created.id
    assert [f.id for f in listed] == [created.id]
    assert deleted is True
    assert sandbox_server.sandbox.uploads.get(created.id) is None


async def test_an_expired_file_is_gone(sandbox_server: SandboxServer):
    async with api(sandbox_server) as http:
        file = (await http.post("/v1/files", files=content())).json()
        sandbox_server.sandbox.uploads.get(file["id"]).expires_monotonic = 0  # type: ignore[union-attr]
        assert (await http.get(file["urls"]["get"])).status_code == 404
        assert (await http.get("/v1/files")).json()["results"] == []


def test_multipart_parts_keep_binary_content_exactly():
    request = httpx.Request("POST", "http://x/v1/files", files=content(PNG + b"\r\n--"))
    from bot.sandbox.api_files import _multipart

    parts = _multipart(request.headers["content-type"], request.read())
    assert parts["content"].data == PNG + b"\r\n--"
    assert (parts["content"].filename, parts["content"].content_type) == ("fox.png", "image/png")
