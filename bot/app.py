"""The HTTP face of Conjure: Replicate webhooks, health and metrics, plus adapters' routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.replicate.client import Prediction
from bot.replicate.errors import ReplicateError
from bot.replicate.webhooks import WebhookVerificationError, verify_webhook
from bot.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(
    runtime: Runtime, routes: Sequence[BaseRoute] = (), recover_on_start: bool = True
) -> Starlette:
    """The Starlette app for `runtime`; `routes` come from the platform adapters."""

    async def replicate_webhook(request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()
        try:
            secret = await runtime.webhook_secret()
        except ReplicateError as exc:
            log.error("cannot verify webhooks: %s", exc.user_message)
            runtime.metrics.webhooks.labels("no_secret").inc()
            return JSONResponse({"error": "webhook secret unavailable"}, status_code=503)
        try:
            payload = verify_webhook(secret, body, request.headers)
        except WebhookVerificationError as exc:
            log.warning("rejected a Replicate webhook: %s", exc)
            runtime.metrics.webhooks.labels("bad_signature").inc()
            return JSONResponse({"error": "invalid webhook signature"}, status_code=401)
        try:
            prediction = Prediction.model_validate(payload)
        except ValidationError:
            runtime.metrics.webhooks.labels("bad_body").inc()
            return JSONResponse({"error": "not a prediction"}, status_code=400)
        job_id = request.query_params.get("job")
        job = None
        if job_id:
            job = await runtime.store.get(job_id)
        if job is None:
            job = await runtime.store.find_by_prediction(prediction.id)
        if job is None:
            log.warning("webhook for unknown job %r (prediction %s)", job_id, prediction.id)
            runtime.metrics.webhooks.labels("unknown_job").inc()
            return JSONResponse({"ok": True, "job": None})
        await runtime.service.apply_prediction(job.id, prediction, job=job)
        runtime.metrics.webhooks.labels("applied").inc()
        runtime.metrics.webhook_seconds.observe(time.perf_counter() - started)
        return JSONResponse({"ok": True, "job": job.id})

    async def healthz(_: Request) -> Response:
        try:
            await runtime.store.count()
        except Exception:
            log.exception("health check: database unavailable")
            return JSONResponse({"status": "error", "database": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "adapters": sorted(runtime.service.adapters)})

    async def metrics(_: Request) -> Response:
        content, media_type = runtime.metrics.render()
        return Response(content, media_type=media_type)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if recover_on_start:
            await runtime.service.recover()
        # Not a job task: wait_idle() must not wait for this loop, which never ends.
        sweeper = asyncio.create_task(runtime.service.sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()

    return Starlette(
        routes=[
            Route("/webhooks/replicate", replicate_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *routes,
        ],
        lifespan=lifespan,
    )
