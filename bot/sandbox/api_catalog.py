"""Read-only catalogue routes: models and their versions, deployments, account, webhook secret.

The bot reads a model's `latest_version.openapi_schema` to learn its inputs, and fetches the
default webhook secret at start-up, so these answer in Replicate's shapes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.sandbox.api_predictions import base_url
from bot.sandbox.models import (
    COG_VERSION,
    FakeModel,
    ModelNotFound,
    find_deployment,
    find_model,
)
from bot.sandbox.problems import not_found
from bot.sandbox.schema import input_schema
from bot.sandbox.state import Sandbox

ACCOUNT = {
    "type": "organization",
    "username": "conjure-sandbox",
    "name": "Conjure Sandbox",
    "github_url": None,
}


def version_json(model: FakeModel) -> dict[str, Any]:
    """A model version as `GET .../versions/{id}` returns it."""
    return {
        "id": model.version_id,
        "created_at": model.version_created_at,
        "cog_version": COG_VERSION,
        "openapi_schema": input_schema(model),
    }


def model_json(model: FakeModel, sandbox: Sandbox, base: str) -> dict[str, Any]:
    """A model as `GET /v1/models/{owner}/{name}` returns it."""
    runs = sum(1 for p in sandbox.predictions.values() if p["model"] == model.ref)
    return {
        "url": f"{base}/{model.ref}",
        "owner": model.owner,
        "name": model.name,
        "description": model.description,
        "visibility": "public",
        "is_official": model.official,
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": runs,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": version_json(model),
    }


def _model(request: Request) -> FakeModel:
    return find_model(request.path_params["owner"], request.path_params["name"])


async def get_model(request: Request) -> Response:
    """GET /v1/models/{owner}/{name}."""
    try:
        model = _model(request)
    except ModelNotFound as exc:
        return not_found(str(exc))
    return JSONResponse(model_json(model, request.app.state.sandbox, base_url(request)))


async def list_versions(request: Request) -> Response:
    """GET /v1/models/{owner}/{name}/versions (one version each, so a single page)."""
    try:
        model = _model(request)
    except ModelNotFound as exc:
        return not_found(str(exc))
    return JSONResponse({"next": None, "previous": None, "results": [version_json(model)]})


async def get_version(request: Request) -> Response:
    """GET /v1/models/{owner}/{name}/versions/{id} (the official client's run() reads it)."""
    try:
        model = _model(request)
    except ModelNotFound as exc:
        return not_found(str(exc))
    if request.path_params["id"] != model.version_id:
        return not_found(f"Version {request.path_params['id']} of {model.ref} not found.")
    return JSONResponse(version_json(model))


async def get_deployment(request: Request) -> Response:
    """GET /v1/deployments/{owner}/{name}."""
    owner, name = request.path_params["owner"], request.path_params["name"]
    try:
        model = find_deployment(owner, name)
    except ModelNotFound as exc:
        return not_found(str(exc))
    release = {
        "number": 1,
        "model": model.ref,
        "version": model.version_id,
        "created_at": model.version_created_at,
        "created_by": {k: ACCOUNT[k] for k in ("type", "username", "name", "github_url")},
        "configuration": {"hardware": "gpu-a40-small", "min_instances": 0, "max_instances": 1},
    }
    return JSONResponse({"owner": owner, "name": name, "current_release": release})


async def get_account(request: Request) -> Response:
    """GET /v1/account."""
    return JSONResponse(ACCOUNT)


async def get_webhook_secret(request: Request) -> Response:
    """GET /v1/webhooks/default/secret: the key webhooks are signed with."""
    return JSONResponse({"key": request.app.state.sandbox.config.secret})


routes = [
    Route("/v1/models/{owner}/{name}", get_model, methods=["GET"]),
    Route("/v1/models/{owner}/{name}/versions", list_versions, methods=["GET"]),
    Route("/v1/models/{owner}/{name}/versions/{id}", get_version, methods=["GET"]),
    Route("/v1/deployments/{owner}/{name}", get_deployment, methods=["GET"]),
    Route("/v1/account", get_account, methods=["GET"]),
    Route("/v1/webhooks/default/secret", get_webhook_secret, methods=["GET"]),
]
