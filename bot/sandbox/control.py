"""Routes outside Replicate's API: output files, prediction pages, and fault control.

`/files/...` stands in for replicate.delivery (no auth, like signed delivery URLs); `/_sandbox/...`
lets separate processes (the demo, the benchmarks) inject faults and read counters over HTTP.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.sandbox.faults import faults_from_json
from bot.sandbox.problems import not_found, problem
from bot.sandbox.state import Sandbox


def _sandbox(request: Request) -> Sandbox:
    return request.app.state.sandbox


async def get_file(request: Request) -> Response:
    """GET /files/{prediction_id}/{filename}: an output file with its content type."""
    found = _sandbox(request).file(request.path_params["id"], request.path_params["filename"])
    if found is None:
        return not_found("File not found.")
    data, content_type = found
    return Response(data, media_type=content_type)


async def web_page(request: Request) -> Response:
    """GET /p/{id}: what `urls.web` points at; a one-line summary instead of a web page."""
    prediction = _sandbox(request).predictions.get(request.path_params["id"])
    if prediction is None:
        return not_found("Prediction not found.")
    return PlainTextResponse(
        f"Prediction {prediction['id']} of {prediction['model']}: {prediction['status']}\n"
    )


async def get_faults(request: Request) -> Response:
    """GET /_sandbox/faults: the faults in force."""
    return JSONResponse(_sandbox(request).faults.to_json())


async def set_faults(request: Request) -> Response:
    """POST /_sandbox/faults: set the given Faults fields (others keep their values)."""
    sandbox = _sandbox(request)
    try:
        values = faults_from_json(json.loads(await request.body()))
    except (ValueError, TypeError) as exc:
        return problem(422, str(exc), "Invalid faults")
    for name, value in values.items():
        setattr(sandbox.faults, name, value)
    return JSONResponse(sandbox.faults.to_json())


async def reset_faults(request: Request) -> Response:
    """DELETE /_sandbox/faults: no faults any more."""
    sandbox = _sandbox(request)
    sandbox.faults.reset()
    return JSONResponse(sandbox.faults.to_json())


async def stats(request: Request) -> Response:
    """GET /_sandbox/stats: counters a benchmark or demo can check from another process."""
    sandbox = _sandbox(request)
    return JSONResponse(
        {
            "create_count": sandbox.create_count,
            "predictions": len(sandbox.predictions),
            "webhook_deliveries": len(sandbox.webhook_deliveries),
            "webhooks_queued": sandbox.webhooks_queued,
        }
    )


routes = [
    Route("/files/{id}/{filename}", get_file, methods=["GET"]),
    Route("/p/{id}", web_page, methods=["GET"]),
    Route("/_sandbox/faults", get_faults, methods=["GET"]),
    Route("/_sandbox/faults", set_faults, methods=["POST"]),
    Route("/_sandbox/faults", reset_faults, methods=["DELETE"]),
    Route("/_sandbox/stats", stats, methods=["GET"]),
]
