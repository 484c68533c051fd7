"""The HTTP face of Conjure: Replicate webhooks, health and metrics, plus adapters' routes.

Every body is bounded before it is read (`bot.http_limits`); a webhook is verified before it is
parsed, validated before anything changes, and applied only to the job whose prediction it is.
No request's content is ever logged (`bot.rejections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.admin.routes import admin_routes
from bot.http_limits import BodyLimit, LimitedRoute, body_limits
from bot.rejections import Rejections
from bot.replicate.client import Prediction
from bot.replicate.webhook_secret import WebhookSecrets, WebhookSecretUnavailable
from bot.replicate.webhooks import SignatureMismatch, WebhookPayloadError, WebhookVerificationError
from bot.runtime import Runtime
from storage.errors import UNANSWERED, is_outage

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/replicate"
# One prediction: its input, its output (file URLs, or a language model's tokens) and its logs
# so far, which are the largest part. A few MiB is far more than Replicate sends; a bigger body
# is refused (413) before it is read, and the job is then finished by the sweeper's poll.
WEBHOOK_MAX_BODY = 4 * 1024 * 1024
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # a job's id column holds at most 32


def create_app(
    runtime: Runtime, routes: Sequence[BaseRoute] = (), recover_on_start: bool = True
) -> Starlette:
    """The Starlette app for `runtime`; `routes` come from the platform adapters."""

    rejections = Rejections(log)

    async def replicate_webhook(request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()  # at most WEBHOOK_MAX_BODY: BodyLimit has read it already
        try:
            payload = await _verified(runtime.webhook_secrets, body, request)
        except WebhookSecretUnavailable:
            runtime.metrics.webhooks.labels("no_secret").inc()
            return JSONResponse({"error": "webhook secret unavailable"}, status_code=503)
        except WebhookPayloadError as exc:
            rejections.note(f"signed Replicate webhook: {exc}")
            runtime.metrics.webhooks.labels("bad_body").inc()
            return JSONResponse({"error": "not a prediction"}, status_code=400)
        except WebhookVerificationError as exc:
            rejections.note(f"Replicate webhook: {exc}")
            runtime.metrics.webhooks.labels("bad_signature").inc()
            return JSONResponse({"error": "invalid webhook signature"}, status_code=401)
        try:
            prediction = Prediction.model_validate(payload)
        except ValidationError:
            rejections.note("signed Replicate webhook: not a prediction Conjure can read")
            runtime.metrics.webhooks.labels("bad_body").inc()
            return JSONResponse({"error": "not a prediction"}, status_code=400)
        job_id = request.query_params.get("job", "")
        if runtime.service.update_adds_nothing(job_id, prediction):
            # Most `logs` webhooks: nothing to record or show yet (bot.updates), no read.
            runtime.metrics.webhooks.labels("unchanged").inc()
            return JSONResponse({"ok": True, "job": job_id})
        try:
            return await _apply(job_id, prediction, started)
        except UNANSWERED as exc:
            if not is_outage(exc):
                raise  # a mistake in what was asked: a 500, with its traceback
            # A database restarting, or a lock held past its timeout: Replicate sends the
            # terminal webhook again on a 5xx (and the sweeper reads the job in any case), so
            # this is a line in the log, not a crash with its traceback.
            log.warning(
                "Replicate webhook for job %s not recorded: the database did not answer (%s); "
                "Replicate sends it again",
                job_id if _JOB_ID.match(job_id) else "(none named)",
                type(exc).__name__,
            )
            runtime.metrics.webhooks.labels("database_unavailable").inc()
            return JSONResponse({"error": "database unavailable"}, status_code=503)

    async def _apply(job_id: str, prediction: Prediction, started: float) -> Response:
        """Record a verified prediction on its job (or on the job of its prediction id)."""
        job = await runtime.store.get(job_id) if _JOB_ID.match(job_id) else None
        if job is not None and not runtime.service.belongs(job, prediction):
            # Signed, but another job's: a replay sent to this job's URL. Answered 2xx (a
            # replay gains nothing from retrying), and nothing changes.
            rejections.note("signed Replicate webhook for another job's prediction")
            runtime.metrics.webhooks.labels("foreign").inc()
            return JSONResponse({"ok": True, "job": None})
        if job is None:
            job = await runtime.store.find_by_prediction(prediction.id)
        if job is None:
            rejections.note("signed Replicate webhook for a job this database does not hold")
            runtime.metrics.webhooks.labels("unknown_job").inc()
            return JSONResponse({"ok": True, "job": None})
        await runtime.service.apply_prediction(job.id, prediction, job=job)
        runtime.metrics.webhooks.labels("applied").inc()
        runtime.metrics.webhook_seconds.observe(time.perf_counter() - started)
        return JSONResponse({"ok": True, "job": job.id})

    async def healthz(_: Request) -> Response:
        try:
            await runtime.store.answers()
        except Exception as exc:
            if is_outage(exc):  # a restart, a failover: a line per probe
                log.warning("health check: database unavailable (%s)", type(exc).__name__)
            else:
                log.exception("health check: database unavailable")
            return JSONResponse({"status": "error", "database": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "adapters": sorted(runtime.service.adapters)})

    async def metrics(_: Request) -> Response:
        content, media_type = runtime.metrics.render()
        return Response(content, media_type=media_type)

    async def recover_and_sweep() -> None:
        if recover_on_start:
            await runtime.service.recover()
        await runtime.service.sweep_forever()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        leadership = runtime.leadership
        if leadership is None:  # the only process on its database: recover before serving
            if recover_on_start:
                await runtime.service.recover()
            background = runtime.service.sweep_forever()
        else:  # one of several: the leader recovers and sweeps (bot.leadership)
            leadership.add_duty("recovery and the sweeper", recover_and_sweep)
            background = leadership.run()
        # Not a job task: wait_idle() must not wait for this loop, which never ends.
        task = asyncio.create_task(background)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    every_route = [
        LimitedRoute(WEBHOOK_PATH, replicate_webhook, methods=["POST"], max_body=WEBHOOK_MAX_BODY),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes(runtime),  # none without CONJURE_ADMIN_TOKEN: /admin is then 404
        *routes,
    ]
    limits = Middleware(BodyLimit, limits=body_limits(every_route), rejections=rejections)
    return Starlette(routes=every_route, middleware=[limits], lifespan=lifespan)


async def _verified(secrets: WebhookSecrets, body: bytes, request: Request) -> dict[str, Any]:
    """The payload of a genuine webhook. A signature that does not match may be from a rotated
    secret: it is checked once more against the current one, when that may be fetched now."""
    verifier = await secrets.verifier()
    try:
        return verifier.verify(body, request.headers)
    except SignatureMismatch:
        fresh = await secrets.refreshed()
        if fresh is None:
            raise
        return fresh.verify(body, request.headers)
