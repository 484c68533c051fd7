"""The Files API: upload (`POST /v1/files`, multipart), list, get, delete, and the bytes.

Uploads are multipart/form-data with a `content` part (filename and content type) and an optional
`metadata` part (a JSON object), as Replicate's clients send them. The body is read up to the size
limit and no further: a larger upload is a 413 without the rest being read.
"""

from __future__ import annotations

import json
from email.message import Message
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox import uploads
from bot.sandbox.api_predictions import base_url
from bot.sandbox.problems import not_found, problem, validation_failed
from bot.sandbox.state import Sandbox
from bot.sandbox.validation import invalid_type

MULTIPART_SLACK = 64 * 1024  # room for part headers and the metadata around the content


class _BadUpload(Exception):
    """A body that is not the multipart form an upload must be."""


def _sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


def _too_large() -> Response:
    limit = uploads.MAX_FILE_BYTES
    shown = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return problem(413, f"The file is too large; the maximum file size is {shown}.")


async def create_file(request: Request) -> Response:
    """POST /v1/files: store the `content` part; 201 with the file object."""
    limit = uploads.MAX_FILE_BYTES + MULTIPART_SLACK
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _too_large()
    try:
        parts = _multipart(request.headers.get("content-type", ""), bytes(body))
    except _BadUpload as exc:
        return problem(400, str(exc), "Bad request")
    content = parts.get("content")
    if content is None:
        invalid = {"type": "required", "field": "content", "description": "content is required"}
        return validation_failed([invalid])
    if len(content.data) > uploads.MAX_FILE_BYTES:
        return _too_large()
    metadata: Any = {}
    if "metadata" in parts:
        try:
            metadata = json.loads(parts["metadata"].data)
        except ValueError:
            invalid = {"type": "format", "field": "metadata", "description": "must be JSON"}
            return validation_failed([invalid])
        if not isinstance(metadata, dict):
            return validation_failed([invalid_type("metadata", "object", metadata)])
    upload = _sandbox(request).uploads.add(
        content.filename or "file",
        content.content_type or "application/octet-stream",
        content.data,
        metadata,
    )
    return JSONResponse(upload.to_json(base_url(request)), status_code=201)


async def list_files(request: Request) -> Response:
    """GET /v1/files: newest first, in one page."""
    base = base_url(request)
    results = [upload.to_json(base) for upload in _sandbox(request).uploads.newest_first()]
    return JSONResponse({"next": None, "previous": None, "results": results})


async def get_file(request: Request) -> Response:
    """GET /v1/files/{id}: the file object."""
    upload = _sandbox(request).uploads.get(request.path_params["id"])
    if upload is None:
        return not_found("File not found.")
    return JSONResponse(upload.to_json(base_url(request)))


async def download_file(request: Request) -> Response:
    """GET /v1/files/{id}/download: the bytes, with the content type they were uploaded with."""
    upload = _sandbox(request).uploads.get(request.path_params["id"])
    if upload is None:
        return not_found("File not found.")
    headers = {"ETag": f'"{upload.md5}"'}
    return Response(upload.content, media_type=upload.content_type, headers=headers)


async def delete_file(request: Request) -> Response:
    """DELETE /v1/files/{id}: 204; the file is gone for every later request."""
    if not _sandbox(request).uploads.delete(request.path_params["id"]):
        return not_found("File not found.")
    return Response(status_code=204)


class _Part:
    def __init__(self, headers: Message, data: bytes) -> None:
        self.data = data
        self.filename = headers.get_filename()
        self.content_type = headers.get("content-type")
        self.name = headers.get_param("name", header="content-disposition")


def _multipart(content_type: str, body: bytes) -> dict[str, _Part]:
    """The named parts of a multipart/form-data body (binary-safe: split on the boundary)."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise _BadUpload("The request body must be multipart/form-data with a 'content' part.")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise _BadUpload("The multipart body is malformed.")
    parts: dict[str, _Part] = {}
    for section in sections[1:-1]:
        if not section.startswith(b"\r\n") or not section.endswith(b"\r\n"):
            raise _BadUpload("The multipart body is malformed.")
        head, sep, data = section[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise _BadUpload("The multipart body is malformed.")
        headers = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip()] = value.strip()
        part = _Part(headers, data)
        if isinstance(part.name, str):
            parts.setdefault(part.name, part)
    return parts


routes = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{id}", get_file, methods=["GET"]),
    Route("/v1/files/{id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{id}/download", download_file, methods=["GET"]),
]
