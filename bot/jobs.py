"""The job service: a command's whole life, from reservation to a result in the thread.

submit: reserve the user's job and record it (atomically) → acknowledge the command → announce
→ create the prediction; a job recorded but never started (its instance died) is started by
another instance's sweeper. apply: each
webhook (or poll) moves the job forward, never back. finish: the first terminal update settles
the reservation and marks the delivery pending, in one transaction. deliver: exactly one claimant
downloads the outputs and hands them to the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

from bot.adapter import Acknowledge, ChatAdapter, Checkpoint, CommandRequest, JobResult
from bot.catalog import Catalog, ModelSpec
from bot.commands.parsing import Invocation
from bot.config import Settings
from bot.eager import start_eagerly
from bot.logs import job_event, limit_reason, seconds_between
from bot.markup import Mention, Text
from bot.messages import format_duration
from bot.money import format_usd
from bot.queue import queue_full, queue_places, queueable
from bot.quotas.limits import USER
from bot.quotas.service import Quotas
from bot.replicate.client import MAX_PREDICT_TIME, TOKEN_COUNTS, Prediction, ReplicateClient
from bot.replicate.errors import (
    PredictionOutcomeUnknown,
    RateLimitedError,
    ReplicateConnectionError,
    ReplicateError,
    ReplicateUnavailableError,
)
from bot.replicate.links import with_link_notes
from bot.replicate.outputs import OutputFetcher, OutputUnavailable, split_output
from bot.replicate.progress import progress_from_logs
from bot.safety import SafetyRules
from bot.start_claims import StartClaims
from bot.streaming import StreamRelay, fold_result
from bot.updates import FollowedJobs, workspace_of
from storage.errors import UNANSWERED, is_outage
from storage.jobs import DELIVERY_LEASE, JobStore
from storage.models import BudgetAlert, Delivery, Job, JobStatus, utcnow
from storage.rows import new_row
from storage.usage import Hold, HoldKind, LimitReached

log = logging.getLogger(__name__)

DATABASE_UNANSWERED = (
    "Conjure cannot reach its database right now, so nothing was started. "
    "Please try again in a minute."
)

WEBHOOK_EVENTS = ["start", "logs", "completed"]
WEBHOOK_EVENTS_WITHOUT_PROGRESS = ["start", "completed"]  # bot.updates.PROGRESS_WORTH_ASKING
WEBHOOK_EVENTS_OUTCOME_ONLY = ["completed"]  # bot.updates.FollowedJobs.status_worth_asking
DELIVERY_SWEEP_EVERY = 10.0  # seconds: a dead claimant's delivery is taken over this soon
CLOCK_MARGIN = timedelta(minutes=5)  # between our clock and Replicate's created_at
SILENT_AFTER = timedelta(minutes=5)  # no webhook for this long: read the prediction instead
SUBMITS_AT_ONCE = 16  # commands being started at the same time; more wait their turn
READS_AT_ONCE = 16  # polls of Replicate in progress at the same time; more wait their turn
DELIVERIES_AT_ONCE = 16  # results being downloaded and posted at once (each holds its files)
# Answers streamed at once: each holds a connection of the Replicate client's pool (100) for
# its whole run; past this, an answer simply arrives whole at the end, as without streaming.
STREAMS_AT_ONCE = 32
# Seconds after which a delayed status edit looks again whether it is due (bot.updates: the
# interval between edits grows and shrinks with the jobs running in the workspace).
SHOW_RECHECK = 10.0
# Seconds a status edit may take before the job is read again after it (_restore_outcome):
# an edit that took longer may have been overtaken by another instance's outcome. A quick one
# cannot: showing an outcome takes more calls than the edit.
SLOW_EDIT = 1.0
RELAY_KEPT = 120.0  # seconds a finished relay waits for this instance's delivery
# In job.destination: when Replicate ended a run Conjure heard of late (HEARD_LATE or more after
# it), from which its files' hour counts.
REPLICATE_END_KEY = "replicate_ended_at"
HEARD_LATE = timedelta(minutes=1)
UNDELIVERABLE = (
    "Your result is ready, but Conjure could not post it here; it was charged. Please ask an admin."
)
# A job recorded but not started (no prediction) and untouched for this long is taken for
# abandoned: its instance died between recording it and creating its prediction, and another
# starts it. Whoever starts a job first claims it (touch_unstarted), so the one still starting
# it and one taking it over never both send a create; this must outlast the time a create sent
# just after that claim takes to reach Replicate (where the takeover would find it).
START_TAKEOVER = timedelta(seconds=15)
START_GIVE_UP = timedelta(minutes=2)  # not started by then: given back, the person told
RESTARTED_BEFORE_START = "Conjure restarted before your job could start; please run it again."
# A create whose answer was lost (a timeout, a 5xx) and whose prediction could not be found:
# the job is given up here, and nothing tries it again. With webhooks, one that did start is
# still delivered (and charged) when its webhook comes (_charge_late); without, it cannot be.
NOT_CONFIRMED = "Replicate did not confirm that your job started, so nothing was charged for it."
NOT_CONFIRMED_WEBHOOKS = (
    f"{NOT_CONFIRMED} If it did start, its result will be posted here when it is ready (and "
    "charged then); if nothing comes, please run it again."
)
NOT_CONFIRMED_POLLING = f"{NOT_CONFIRMED} Please run it again."
_Apply = Callable[[str, Prediction], Awaitable[None]]  # what a poll does with each read
_T = TypeVar("_T")
CANCEL_REFUSED = (
    "Replicate did not take the cancel just now, so the job is still running. "
    "Please press Cancel again."
)
# A cancel the person was told had worked (their job was canceled while its create was on its
# way) is asked again while Replicate does not take it: seconds between tries, doubling up to
# the most, for as long as a run may bill (Replicate stops any run after 30 minutes).
CANCEL_RETRY = 1.0
CANCEL_RETRY_MAX = 30.0
CANCEL_RETRY_FOR = 30 * 60.0
CANCEL_PASSING = (RateLimitedError, ReplicateUnavailableError, ReplicateConnectionError)
# Seconds before a step the database did not answer is tried again, doubling up to the most.
UNANSWERED_RETRY = 0.25
UNANSWERED_RETRY_MAX = 5.0
# A posted alert's record is tried until this long before its lease lapses (its sender's
# clock and the database's agree to well within it: storage.clock).
ALERT_RECORD_MARGIN = 5.0
GONE_AFTER = 10  # reads in a row answered 404: the prediction is gone, and so is its result
PREDICTION_GONE = (
    "Replicate can no longer find this job's prediction, so its result cannot be fetched. "
    "It was not counted against your quota; please run it again."
)


@dataclass
class _Screen:
    """One job's status as this process shows it: status edits and the outcome take turns
    (`lock`), and once the outcome is being shown (`ended`) no status edit follows it."""

    users: int = 0
    ended: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard a delivery is tried. An error the adapter calls passing (`retry_delay`) is
    tried `tries` times within one claim, waiting `backoff` seconds (doubling, at least the
    platform's Retry-After, at most `max_wait`); then the delivery is released for the
    sweeper, which claims it again no sooner than `sweep_backoff` * 2^(claims - 1) later.
    After `max_claims` claims it is failed and the person told, where that still works."""

    tries: int = 3
    backoff: float = 1.0
    max_wait: float = 30.0
    max_claims: int = 5
    sweep_backoff: timedelta = timedelta(seconds=30)
    lease: timedelta = DELIVERY_LEASE

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: a third of the lease, so one late renewal is no loss."""
        return self.lease.total_seconds() / 3

    def wait(self, attempt: int, retry_after: float) -> float:
        """Seconds before try `attempt + 1` (attempt counts from 1)."""
        return min(self.max_wait, max(retry_after, self.backoff * 2 ** (attempt - 1)))

    def due(self, job: Job, now: datetime) -> bool:
        """Whether a pending delivery released `job.delivery_attempts` times may be claimed."""
        if job.delivery != Delivery.PENDING or job.delivery_attempts <= 0:
            return True  # never tried, or a lapsed claim: its holder died
        return job.updated_at + self.sweep_backoff * 2 ** (job.delivery_attempts - 1) <= now


class LeaseLost(Exception):
    """This instance's claim on a delivery lapsed and was taken over: it must stop posting."""


class StillUnanswered(Exception):
    """The database did not answer a step tried again for as long as it was worth it
    (`JobService._until_answered`); the last outage is its cause, its name in `error`."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error = type(error).__name__


@dataclass(frozen=True)
class _Failed:
    """How one claim's delivery ended without success: the error, and whether it may pass."""

    error: BaseException
    passing: bool


class CommandRefused(Exception):
    """The command was refused before anything was created; `text` is for the person."""

    def __init__(self, text: str | Text) -> None:
        super().__init__(str(text))
        self.text = text if isinstance(text, Text) else Text.of(text)


class JobService:
    """Runs jobs for every registered chat adapter."""

    def __init__(
        self,
        *,
        settings: Settings,
        catalog: Catalog,
        store: JobStore,
        quotas: Quotas,
        replicate: ReplicateClient,
        fetcher: OutputFetcher,
        progress_interval: float = 2.0,
        delivery: DeliveryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.quotas = quotas
        self.replicate = replicate
        self.fetcher = fetcher
        self.delivery = delivery or DeliveryPolicy()
        self.safety = SafetyRules(store.engine)  # the workspaces' banned words and patterns
        self._adapters: dict[str, ChatAdapter] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._polling: set[str] = set()
        # Which updates are news, and when each job may be shown again (bot.updates).
        # The workers of one `conjure serve --workers N` share a workspace's edits evenly.
        edits_per_minute = settings.conjure_status_edits_per_minute / settings.conjure_workers
        self.followed = FollowedJobs(progress_interval, edits_per_minute=edits_per_minute)
        self._shows_later: dict[str, asyncio.TimerHandle] = {}  # status shown when due
        self._shows_pending: set[str] = set()  # shown when due, looked at every SHOW_RECHECK
        self._pending_look: asyncio.TimerHandle | None = None
        self._screens: dict[str, _Screen] = {}  # jobs whose status this process is showing
        self._relays: dict[str, StreamRelay] = {}  # text answers shown as they are written
        # A burst of commands, all started at once, floods the event loop with hundreds of
        # concurrent queries and calls, and every ack and webhook waits behind them; started a
        # few at a time, the same work gets done sooner (less contention) and acks stay quick.
        self._starting = asyncio.Semaphore(SUBMITS_AT_ONCE)
        # Recorded here, waiting their turn to start, their claims kept fresh (bot.start_claims).
        self._launching = StartClaims(store, lambda: START_TAKEOVER)
        # Recording (the one transaction before the ack) waits behind other recordings only,
        # not behind announcements and creates, so acks stay quick in a burst.
        self._recording = asyncio.Semaphore(SUBMITS_AT_ONCE)
        self._promoting = asyncio.Lock()  # one pass over the queue at a time in this process
        # recover() and the sweeper may start thousands of pollers at once; their reads all
        # queued in httpx's pool at once cost CPU quadratic in the queue (100% for minutes).
        self._reading = asyncio.Semaphore(READS_AT_ONCE)
        # A burst of finished jobs would otherwise download every output at once: memory for
        # all their files, and httpx's pool queue, which costs CPU quadratic in its length.
        self._delivering = asyncio.Semaphore(DELIVERIES_AT_ONCE)

    # ---- wiring ---------------------------------------------------------------------------

    @property
    def adapters(self) -> Mapping[str, ChatAdapter]:
        """The platforms this instance posts to, by name (read-only: use add/remove)."""
        return MappingProxyType(self._adapters)

    def add_adapter(self, adapter: ChatAdapter) -> None:
        """Post this platform's jobs through `adapter` from now on (one per platform)."""
        if not isinstance(adapter, ChatAdapter):
            raise TypeError(f"{type(adapter).__name__} does not implement ChatAdapter")
        self._adapters[adapter.platform] = adapter

    def remove_adapter(self, platform: str) -> None:
        """Stop posting to `platform`; its jobs' deliveries wait for an instance that serves it."""
        self._adapters.pop(platform, None)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, eager: bool = False) -> asyncio.Future[Any]:
        """Run background work that must not be garbage-collected or silently lost. `eager`
        runs it until it first suspends now, in the caller's turn (bot.eager), not in the
        event loop's next; the future is then already done if it never suspended."""
        task = start_eagerly(coro) if eager else asyncio.create_task(coro)
        if task.done():
            self._task_done(task)
            return task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        if is_outage(error):
            # A restart or a failover, not a bug: what the task did is taken up again (the
            # sweeper's next pass, the poller's next read, Replicate's next try of a webhook).
            coro = task.get_coro() if isinstance(task, asyncio.Task) else None
            log.warning(
                "background job task %s stopped: the database did not answer (%s)",
                getattr(coro, "__qualname__", "?"),
                type(error).__name__,
            )
        else:
            log.error("background job task failed", exc_info=error)

    async def wait_idle(self, timeout: float = 30) -> None:
        """Until no background work (delivery, polling) is left; for tests and shutdown."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._tasks)} job tasks still running")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    async def aclose(self) -> None:
        self._launching.close()
        for later in self._shows_later.values():
            later.cancel()
        self._shows_later.clear()
        if self._pending_look is not None:
            self._pending_look.cancel()
            self._pending_look = None
        self._shows_pending.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    @property
    def uses_webhooks(self) -> bool:
        return self.settings.public_url is not None

    def webhook_url(self, job_id: str) -> str | None:
        base = self.settings.public_url
        return f"{base}/webhooks/replicate?job={job_id}" if base else None

    def belongs(self, job: Job, prediction: Prediction) -> bool:
        """Whether `prediction` is `job`'s own: the one it stored, or, before it has stored one,
        one created with its webhook URL. A webhook's signature covers its body, not the
        `?job=` it was sent to, so this is what stops a replayed webhook of one job from
        finishing (and charging, and delivering to) another."""
        if job.prediction_id:
            return prediction.id == job.prediction_id
        webhook = self.webhook_url(job.id)
        return webhook is not None and prediction.webhook == webhook

    # ---- submit ---------------------------------------------------------------------------

    async def submit(
        self,
        request: CommandRequest,
        invocation: Invocation,
        acknowledge: Acknowledge | None = None,
    ) -> Job:
        """Reserve and record one job, acknowledge the command, announce the job and start it.
        Raises CommandRefused when nothing was created.

        The command is acknowledged (`acknowledge`, the platform's ack or defer) only once its
        job is committed: a crash after the ack finds the job at the restart and starts it,
        where acknowledging first would lose a command the person was told was taken. One
        whose acknowledgement fails is given back, and the error raised."""
        async with self._recording:
            job = await self._record(request, invocation)
        if job.waiting_since is not None:
            if acknowledge is not None:
                await self._acknowledge(job, acknowledge)
            await self._announce(job)  # queued: started by start_waiting when a slot frees
            self.spawn(self.start_waiting(job.platform, job.workspace))  # one may have freed
            return job
        job_event(job, "recorded", reserved=job.estimated_micros)
        # Held from here: an acknowledgement can take long (a platform slow to answer), and a
        # job untouched meanwhile would be taken for abandoned and started by a sweeper.
        with self._launching.holding(job):
            if acknowledge is not None:
                await self._acknowledge(job, acknowledge)
            async with self._starting:
                return await self._launch(job, invocation.model)

    async def _acknowledge(self, job: Job, acknowledge: Acknowledge) -> None:
        try:
            extra = await acknowledge()
        except Exception:
            # Only while no prediction is known: one taken over and started elsewhere runs, and
            # is delivered and charged as any other (failing it here would charge nothing).
            given_back = await self.store.finish(
                job,
                JobStatus.FAILED,
                actual_micros=0,
                give_back_job=True,
                deliver=False,
                unstarted_only=True,
                error="the command could not be acknowledged",
            )
            if given_back is not None:
                job_event(job, "failed", level=logging.WARNING, reason="not acknowledged", cost=0)
            else:
                log.warning("job %s: not acknowledged, but already started elsewhere", job.id)
            raise
        if extra:
            job.destination.update(extra)
            try:
                await self._touch_unstarted(job, destination=job.destination)
            except UNANSWERED as exc:
                # Recorded and acknowledged: the job goes on (its start is claimed again, with
                # this destination, before its create). Raised, the person read "internal
                # error, try again" while the sweeper started the job anyway.
                log.warning(
                    "job %s: its acknowledgement not recorded: the database did not answer "
                    "(%s); continuing",
                    job.id,
                    type(exc).__name__,
                )

    async def _touch_unstarted(self, job: Job, **values: Any) -> bool:
        """Claim `job`'s start (see JobStore.touch_unstarted), writing `values`; False when
        another instance took it over meanwhile."""
        return await self._launching.touch(job, **values)

    async def _record(self, request: CommandRequest, invocation: Invocation) -> Job:
        now = utcnow()
        job = new_row(
            Job,
            id=secrets.token_hex(10),
            platform=request.platform,
            workspace=request.workspace,
            channel=request.channel,
            user_id=request.user_id,
            user_name=request.user_name,
            request_key=request.request_key,
            parent_id=request.parent_id,
            followup=request.followup,
            command=invocation.command.name,
            model=invocation.model.key,
            model_ref=invocation.model.ref,
            prompt=invocation.prompt,
            input=invocation.input,
            destination=dict(request.destination),
            outputs_expected=invocation.outputs,
            # What is reserved: the most the run can cost (Replicate stops it there), never the
            # estimate. The column keeps its old name, sparing a migration: it holds the ceiling.
            estimated_micros=invocation.ceiling_micros(),
            usage_period=self.quotas.windows(now)[0].key,
            created_at=now,
            updated_at=now,
        )
        try:
            holds = await self.quotas.holds(job.platform, job.workspace, job.user_id, now)
            queue = await self._queue_to_join(job, holds)
            if queue is not None:
                raise LimitReached(queue)  # others wait for this slot: behind them, not past
            await self.store.reserve_and_insert(job, holds)
        except LimitReached as exc:
            full = ""
            if queueable(exc.hold, self.settings):
                try:
                    await self._enqueue(job, now)
                    return job
                except LimitReached as queue:
                    full = " " + queue_full(queue.hold)
            refusal = self.quotas.refusal(
                exc.hold, invocation.estimate_micros(), now, ceiling=job.estimated_micros
            )
            reason = limit_reason(exc.hold) + (", queue full" if full else "")
            job_event(job, "refused", reason=reason)
            raise CommandRefused(refusal + full) from None
        except UNANSWERED as exc:
            if not is_outage(exc):
                raise  # a mistake in what was asked: an internal error, with its traceback
            # Several instances share one database: admitting without it could pass a limit.
            # An outage, not a bug: this one line, no traceback.
            job_event(
                job,
                "refused",
                level=logging.WARNING,
                reason="database unavailable",
                error=type(exc).__name__,
            )
            raise CommandRefused(DATABASE_UNANSWERED) from None

        return job

    async def _announce(self, job: Job) -> None:
        """Post the job's status message (the thread, the response); record where it is."""
        adapter = self._adapters[job.platform]
        try:
            job.destination.update(await adapter.post_status(job) or {})
        except Exception:
            log.exception("could not announce job %s; continuing", job.id)
        else:
            self.followed.announced(job.id, workspace_of(job))
        if job.waiting_since is not None:
            try:
                await self.store.update_fields(job.id, destination=job.destination)
            except UNANSWERED as exc:
                log.warning(
                    "could not record the announcement of job %s: the database did not answer (%s)",
                    job.id,
                    type(exc).__name__,
                )

    async def _launch(self, job: Job, model: ModelSpec) -> Job:
        """Announce a recorded job and create its prediction, unless it was taken over."""
        await self._announce(job)
        try:
            claimed = await self._touch_unstarted(job, destination=job.destination)
        except UNANSWERED as exc:
            log.warning(
                "could not record the announcement of job %s: the database did not answer "
                "(%s); continuing",
                job.id,
                type(exc).__name__,
            )
            claimed = True
        if not claimed:
            log.warning("job %s was taken over by another instance before its create", job.id)
            return job
        return await self._create_and_follow(job, model)

    async def _create_and_follow(self, job: Job, model: ModelSpec) -> Job:
        """Create the prediction of a job this instance claimed, and follow it."""
        prediction = await self._create_prediction(job, model)
        if prediction is None:
            return job
        # Tried again through a restart: the prediction runs (and is billed) in any case. With
        # webhooks, past START_TAKEOVER another instance finds it by its webhook URL; without,
        # nothing but this instance can ever tie it to its job, so it tries until the job would
        # be given back (and then, finding it given back, stops the run and charges what ran).
        wait = START_TAKEOVER if self.uses_webhooks else START_GIVE_UP
        try:
            attached = await self._until_answered(
                f"job {job.id}: its prediction not recorded",
                lambda: self.store.attach_prediction(job.id, prediction.id),
                within=wait.total_seconds(),
            )
        except StillUnanswered as exc:
            return await self._left_unrecorded(job, prediction.id, exc)
        if not attached:
            # Canceled by its owner while the create was on its way: stop the run too. Its
            # webhook then charges what ran, as for any prediction of a job that had ended.
            job_event(job, "canceled during its create", prediction=prediction.id)
            if await self._cancel_prediction(prediction.id) is None:
                self.spawn(self._cancel_until_taken(prediction.id))
            if not self.uses_webhooks:  # no webhook will say what it ran: read it to its end
                self.start_polling(job.id, prediction.id, self._charge_ended)
            return job
        job.prediction_id = prediction.id
        updates = "webhooks" if self.uses_webhooks else "polling"
        job_event(job, "created", prediction=prediction.id, updates=updates)
        self._follow_stream(job, model, prediction)
        try:
            await self.apply_prediction(job.id, prediction, job=job)
        except UNANSWERED as exc:  # the next webhook, or the next read, moves it on
            log.warning(
                "job %s: its start not recorded: the database did not answer (%s)",
                job.id,
                type(exc).__name__,
            )
        if not self.uses_webhooks:
            self.start_polling(job.id, prediction.id)
        return job

    async def _left_unrecorded(self, job: Job, prediction_id: str, exc: StillUnanswered) -> Job:
        """The database did not answer for as long as a create's prediction was worth trying to
        record. The person was told their job was taken, and it is not a failure of theirs:
        with webhooks, its webhook (which names the job) or the sweeper's search by webhook URL
        ties the prediction to it once the database answers; without, nothing ever could, so
        the run is stopped, and the sweeper gives the job back (the person told) once the
        database answers."""
        then = (
            "its webhook or the sweeper records it"
            if self.uses_webhooks
            else "stopping it; the job is given back"
        )
        log.warning(
            "job %s: its prediction %s not recorded: the database did not answer (%s); "
            "%s once the database answers",
            job.id,
            prediction_id,
            exc.error,
            then,
        )
        if not self.uses_webhooks and await self._cancel_prediction(prediction_id) is None:
            # Refused (429, 5xx): asked again, or the run goes on billed to a job given back.
            self.spawn(self._cancel_until_taken(prediction_id))
        return job

    def _follow_stream(self, job: Job, model: ModelSpec, prediction: Prediction) -> None:
        """Show a text answer as it is written, where the model streams and the platform can
        (bot.streaming); the delivery closes the relay and has the last word."""
        adapter = self._adapters.get(job.platform)
        url = (prediction.urls or {}).get("stream")
        if model.kind != "text" or adapter is None or not adapter.streams_text:
            return
        if not isinstance(url, str) or prediction.terminal or job.id in self._relays:
            return
        if sum(not relay.done for relay in self._relays.values()) >= STREAMS_AT_ONCE:
            return
        relay = StreamRelay(
            adapter,
            job,
            url,
            self.replicate.stream,
            self._checkpoint(job),
            still_running=lambda: self._still_running(job.id),
        )
        self._relays[job.id] = relay
        relay.start(self.spawn)

        def forget(_: asyncio.Task[Any]) -> None:
            # Kept a while after its stream ends for this instance's delivery (which takes
            # what it recorded); dropped then, for a delivery made on another instance.
            asyncio.get_running_loop().call_later(RELAY_KEPT, self._forget_relay, job.id, relay)

        relay.on_done(forget)

    async def _still_running(self, job_id: str) -> bool:
        """Whether a job's outcome is not yet recorded (by any instance)."""
        job = await self.store.get(job_id)
        return job is not None and not JobStatus(job.status).terminal

    def _forget_relay(self, job_id: str, relay: StreamRelay) -> None:
        if self._relays.get(job_id) is relay:
            del self._relays[job_id]

    async def _close_stream(self, job: Job) -> None:
        """Stop showing a job's answer as it is written, and take what the relay recorded."""
        relay = self._relays.pop(job.id, None)
        if relay is not None:
            await relay.close()
            job.destination.update(relay.recorded)

    def _events_worth_asking(self, job: Job, model: ModelSpec) -> list[str]:
        """The webhooks whose news the job's status message could show (bot.updates): none but
        the outcome where its first edit would come after the longest it is expected to run."""
        workspace = workspace_of(job)
        runs_for = model.price.run_limit_seconds * max(job.outputs_expected, 1)
        if not self.followed.status_worth_asking(workspace, runs_for):
            return WEBHOOK_EVENTS_OUTCOME_ONLY
        if not self.followed.progress_worth_asking(workspace):
            return WEBHOOK_EVENTS_WITHOUT_PROGRESS
        return WEBHOOK_EVENTS

    async def _create_prediction(self, job: Job, model: ModelSpec) -> Prediction | None:
        """Create the prediction, to be stopped at its cost ceiling (`Cancel-After`); on failure
        finish the job, give the job back, tell the user."""
        webhook = self.webhook_url(job.id)
        route = {"official": "model", "version": "version", "deployment": "deployment"}
        events = self._events_worth_asking(job, model)
        try:
            return await self.replicate.create_prediction(
                input=job.input,
                webhook=webhook,
                webhook_events_filter=events if webhook else None,
                cancel_after=model.price.deadline_seconds(job.outputs_expected),
                **{route[model.route]: model.ref},
            )
        except PredictionOutcomeUnknown as exc:
            found = await self._find_lost_prediction(job, webhook)
            if found is not None:
                log.info("job %s: recovered prediction %s after a lost answer", job.id, found.id)
                return found
            message = NOT_CONFIRMED_WEBHOOKS if webhook else NOT_CONFIRMED_POLLING
            reason = type(exc).__name__
        except ReplicateError as exc:
            message, reason = exc.user_message, type(exc).__name__
        await self._fail_before_start(job, message, reason=reason)
        return None

    async def _find_lost_prediction(self, job: Job, webhook: str | None) -> Prediction | None:
        """After a create whose answer was lost: a webhook may already have named the prediction;
        else the webhook URL, which carries the job id, finds it among those created since the
        job was (less a margin for the two clocks)."""
        known = await self.store.get(job.id)
        if known is not None and known.prediction_id:
            try:
                return await self.replicate.get_prediction(known.prediction_id)
            except ReplicateError:
                return Prediction.model_validate({"id": known.prediction_id, "status": "starting"})
        if webhook is None:
            return None
        try:
            found = await self.replicate.find_prediction_by_webhook(
                webhook, since=job.created_at - CLOCK_MARGIN
            )
        except ReplicateError:
            log.warning("could not look for a lost prediction", exc_info=True)
            return None
        return found if found is not None and self.belongs(job, found) else None

    async def _fail_before_start(
        self,
        job: Job,
        message: str,
        *,
        reason: str,
        event: str = "failed",
        started: bool = False,
    ) -> None:
        """Fail a job that never started, charged nothing, and tell its person. Only while no
        prediction is known for it (unless `started`: a prediction Replicate no longer knows):
        one recorded meanwhile (its `start` webhook, an instance that was starting it) runs,
        and is delivered and charged by its webhooks as any other."""
        failed = await self.store.finish(
            job,
            JobStatus.FAILED,
            actual_micros=0,
            give_back_job=True,
            deliver=False,
            unstarted_only=not started,
            error=message,
        )
        if failed is None:
            return  # started or finished meanwhile; that run stands
        self.followed.ended(job.id)
        job_event(job, event, status="failed", reason=reason, cost=0)
        self._slot_freed(job)
        adapter = self._adapters.get(job.platform)
        if adapter is None:
            return  # recovered on an instance that does not serve this platform
        try:
            await adapter.post_error(failed.job, message)
        except Exception:
            log.exception("could not post the error of job %s", job.id)

    # ---- the queue at the jobs-in-flight limit ----------------------------------------------

    async def _queue_to_join(self, job: Job, holds: list[Hold]) -> Hold | None:
        """The jobs-in-flight limit whose queue already has jobs waiting (the person's, or
        the workspace's), so a new job waits behind them even if a slot has just freed; None
        when nothing waits (the common case: one indexed read, only where a limit is set)."""
        for hold in holds:
            if hold.kind is not HoldKind.IN_FLIGHT or not queueable(hold, self.settings):
                continue
            if hold.scope == USER:
                if await self.store.waiting_count(job.platform, job.workspace, job.user_id):
                    return hold
            elif await self._waiting_for_the_workspace(job):
                return hold
        return None

    async def _waiting_for_the_workspace(self, job: Job) -> bool:
        """Whether a job waits that a free workspace slot would start: one of another person
        who is below their own limit of jobs at once. One waiting only for its own person's
        slot (that person at their limit) would not take it, so `job` is not queued behind it
        (it was, and refused as "this workspace already has N running" when the queue was
        full, with a slot free). One read where nothing waits; a person's limits and live
        count more only for those waiting."""
        now = utcnow()
        others = {w.user_id for w in await self.store.waiting(job.platform, job.workspace)}
        others.discard(job.user_id)  # the person's own wait behind them is the USER hold's
        for user_id in others:
            holds = await self.quotas.holds(job.platform, job.workspace, user_id, now)
            own = [h for h in holds if h.kind is HoldKind.IN_FLIGHT and h.scope == USER]
            if not own or own[0].limit is None:
                return True  # no limit of their own: it waits for the workspace
            live = await self.store.counter(own[0].scope, own[0].subject, own[0].period)
            if live is None or live.jobs < own[0].limit:
                return True
        return False

    async def _enqueue(self, job: Job, now: datetime) -> None:
        """Record `job` as waiting for a slot, holding only its place in the queue (the per
        person and per workspace caps); LimitReached when the queue is full too."""
        job.waiting_since = now
        # Its place as it is shown first; start_waiting, set off right after, corrects it if
        # another instance queued one of the person's jobs at the same moment.
        job.queue_ahead = await self.store.waiting_count(job.platform, job.workspace, job.user_id)
        try:
            await self.store.reserve_and_insert(job, queue_places(job, self.settings))
        except LimitReached:
            job.waiting_since = job.queue_ahead = None
            raise
        job_event(job, "queued", ahead=job.queue_ahead)

    async def start_waiting(self, platform: str, workspace: str) -> None:
        """Start a workspace's queued jobs, first come first, as far as slots allow: each
        reserved for as a new job is (so a budget spent meanwhile refuses it now, with the
        reason), on whichever instance freed the slot. Then show the rest their new places."""
        if platform not in self._adapters:
            return
        async with self._promoting:
            waiting = await self.store.waiting(platform, workspace)
            if not waiting:
                return
            blocked: set[str] = set()
            for job in waiting:
                if job.user_id in blocked:
                    continue  # a person's jobs start in the order they were given
                now = utcnow()
                holds = await self.quotas.holds(job.platform, job.workspace, job.user_id, now)
                try:
                    started = await self.store.promote(job, holds)
                except LimitReached as exc:
                    # Waits on for a slot that will free; one whose limit is now 0 never will.
                    if queueable(exc.hold, self.settings):
                        if exc.hold.scope != USER:
                            break  # the workspace is full: nobody else fits either
                        blocked.add(job.user_id)
                        continue
                    estimate = self._estimate(job)
                    refusal = self.quotas.refusal(exc.hold, estimate, now, job.estimated_micros)
                    await self._fail_before_start(
                        job, refusal, reason=limit_reason(exc.hold), event="refused"
                    )
                    continue
                if started is not None:
                    job_event(started, "leaves the queue")
                    self.spawn(self._start_promoted(started))
            await self._show_places(platform, workspace)

    def _slot_freed(self, job: Job) -> None:
        """A job that held a limited slot (or a place in the queue) ended: what waits may
        start. Without a limit on jobs in flight nothing queues, so most jobs read nothing
        here; a limit set since is the sweeper's (sweep_waiting)."""
        holds = (Hold.from_json(data) for data in job.holds)
        if any(hold.kind is HoldKind.IN_FLIGHT and hold.limit is not None for hold in holds):
            self.spawn(self.start_waiting(job.platform, job.workspace))

    def _estimate(self, job: Job) -> int:
        model = self.catalog.models.get(job.model)
        return (
            job.estimated_micros
            if model is None
            else model.price.estimate_micros(job.outputs_expected, model.token_budget(job.input))
        )

    async def _start_promoted(self, job: Job) -> None:
        model = self.catalog.models.get(job.model)
        if model is None:
            await self._fail_before_start(job, RESTARTED_BEFORE_START, reason="not started")
            return
        with self._launching.holding(job):
            async with self._starting:
                if not await self._touch_unstarted(job):
                    return
                await self._show(job)
                await self._create_and_follow(job, model)

    async def _show(self, job: Job) -> None:
        try:
            await self._adapters[job.platform].update_status(job)
        except Exception:
            log.warning("could not update the status of job %s", job.id, exc_info=True)

    async def _show_places(self, platform: str, workspace: str) -> None:
        """Tell each queued job how many of its person's jobs are ahead of it, where changed."""
        ahead: dict[str, int] = {}
        for job in await self.store.waiting(platform, workspace):
            place = ahead.get(job.user_id, 0)
            ahead[job.user_id] = place + 1
            if job.queue_ahead != place:
                job.queue_ahead = place
                await self.store.update_fields(job.id, queue_ahead=place)
                await self._show(job)

    async def sweep_waiting(self) -> None:
        """Start what waits where a slot freed on an instance that stopped before it could."""
        for platform, workspace in await self.store.waiting_workspaces():
            if platform in self._adapters:
                await self.start_waiting(platform, workspace)

    # ---- cancel ---------------------------------------------------------------------------

    async def cancel(self, job: Job) -> bool:
        """Stop a job that may still run; False when it had already ended. Raises
        CommandRefused when Replicate would not take the cancel (the job runs on).

        With a prediction, Replicate cancels it and the job ends as Replicate says (charged for
        the time it ran, which Replicate bills). Before its create, the job ends here, charged
        nothing; a create already on its way is stopped when it answers (attach_prediction)."""
        current = await self.store.get(job.id)  # a webhook may have named its prediction
        if current is None or current.job_status.terminal:
            return False
        job_event(current, "cancel requested", prediction=current.prediction_id)
        if current.prediction_id is not None:
            prediction = await self._cancel_prediction(current.prediction_id)
            if prediction is None:  # its answer lost, or the cancel refused: which, Replicate says
                prediction = await self._read_after_cancel(current.prediction_id)
            if prediction is None:  # it runs on, and will be charged: the person must know
                raise CommandRefused(CANCEL_REFUSED)
            await self.apply_prediction(current.id, prediction)
            return True
        finished = await self.store.finish(
            current,
            JobStatus.CANCELED,
            actual_micros=0,
            give_back_job=True,
            claim=job.platform in self._adapters,
            lease=self.delivery.lease,
            unstarted_only=True,
        )
        if finished is None:
            return await self.cancel(current)  # its prediction became known meanwhile
        done = finished.job
        self.followed.ended(job.id)
        job_event(done, "finished", status="canceled", cost=0, duration=_lasted(done))
        self._slot_freed(current)
        if job.platform in self._adapters:
            self.spawn(self._deliver_claimed(finished.job))
        return True

    async def _cancel_prediction(self, prediction_id: str) -> Prediction | None:
        try:
            return await self.replicate.cancel_prediction(prediction_id)
        except ReplicateError:
            log.warning("could not cancel prediction %s", prediction_id, exc_info=True)
            return None

    async def _read_after_cancel(self, prediction_id: str) -> Prediction | None:
        """After a cancel that got no good answer: the prediction, if it has ended (the cancel
        took and only its answer was lost, or the run ended meanwhile); None while it runs or
        cannot be read, as "the job is still running" is then the truth or the safe guess."""
        try:
            prediction = await self.replicate.get_prediction(prediction_id)
        except ReplicateError:
            log.warning("could not read prediction %s after its cancel", prediction_id)
            return None
        return prediction if prediction.terminal else None

    async def _cancel_until_taken(self, prediction_id: str) -> None:
        """Ask again, in the background, to stop a run that must not go on: a job its owner was
        told was canceled (it would run on to a result they are charged for, and shown, though
        they stopped it), or a polled job given back (billed by Replicate, charged to no one).
        A cancel Replicate answered 429 or 5xx past the client's retries is asked again."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + CANCEL_RETRY_FOR
        wait = CANCEL_RETRY
        while loop.time() + wait < give_up_at:
            await asyncio.sleep(wait)
            try:
                await self.replicate.cancel_prediction(prediction_id)
                log.info("prediction %s canceled after all", prediction_id)
                return
            except CANCEL_PASSING as exc:
                log.warning("could not cancel prediction %s yet (%s)", prediction_id, exc)
            except ReplicateError:
                log.warning("could not cancel prediction %s", prediction_id, exc_info=True)
                return  # not a passing failure (gone, refused): asking again would not help
            wait = min(wait * 2, CANCEL_RETRY_MAX)
        log.error("gave up canceling prediction %s: Replicate never took it", prediction_id)

    # ---- updates --------------------------------------------------------------------------

    async def apply_prediction(
        self, job_id: str, prediction: Prediction, *, job: Job | None = None
    ) -> None:
        """Move the job forward to what `prediction` says; stale and duplicate copies do nothing.

        `job` is the caller's copy (the webhook handler's fresh read, or submit's own), to spare a
        read: every change below is a conditional UPDATE, so an older copy is as safe.
        """
        job = job if job is not None and job.id == job_id else await self.store.get(job_id)
        if job is None:
            log.warning("update for unknown job %s (prediction %s)", job_id, prediction.id)
            return
        if not self.belongs(job, prediction):
            log.warning("job %s: ignoring update for another prediction %s", job_id, prediction.id)
            return
        if job.job_status.terminal and job.prediction_id is None:
            await self._charge_late(job, prediction)
            return
        if job.prediction_id is None and not await self.store.attach_prediction(
            job_id, prediction.id
        ):
            # Given up since the copy in hand was read (its create looked lost): the prediction
            # is that of a job that ended without one, charged (and delivered) late, once.
            ended = await self.store.get(job_id)
            if ended is not None:
                await self._charge_late(ended, prediction)
            return
        try:
            status = JobStatus(prediction.status)
        except ValueError:
            log.warning("job %s: unknown prediction status %r", job_id, prediction.status)
            return
        if status.terminal:
            await self._finish(job, status, prediction)
            return
        if job.job_status.terminal:
            # A `start` or `logs` after the outcome (retried, out of order): nothing to record
            # or show, and following the job again would keep it followed for good, its
            # workspace's edits shared with a job that never ends (bot.updates).
            return
        # Status and progress only ever rise: where the copy in hand already shows this much,
        # the conditional UPDATE would match no row, so it is not sent (most `logs` webhooks);
        # a higher progress is recorded only when it is due to be shown (bot.updates).
        workspace = workspace_of(job)
        self.followed.recorded(job_id, prediction.id, job.status_rank, job.progress, workspace)
        progress = progress_from_logs(prediction.logs)
        rises = progress is not None and (job.progress is None or job.progress < progress)
        if rises and progress is not None and not self.followed.show_due(job_id):
            self.followed.hold_back(job_id, progress)
            self._show_later(job_id)
            rises = False
        if job.status_rank >= status.rank and not rises:
            return
        with self._screen(job_id) as screen:
            moved: Job | None = None
            if job.status_rank < status.rank:
                moved = await self.store.advance(
                    job_id,
                    status,
                    **({"started_at": utcnow()} if status is JobStatus.PROCESSING else {}),
                )
            if rises and progress is not None:
                moved = await self.store.record_progress(job_id, progress) or moved
            if moved is not None:
                self.followed.recorded(
                    job_id, prediction.id, moved.status_rank, moved.progress, workspace
                )
                await self._throttled_status_update(moved, screen)

    async def _finish(self, job: Job, status: JobStatus, prediction: Prediction) -> None:
        # Claimed here only where this instance can post to the job's platform; otherwise the
        # delivery stays pending for an instance that can (its sweeper picks it up).
        ours = job.platform in self._adapters
        if status is JobStatus.SUCCEEDED and not job.job_status.terminal:
            await self._note_late_end(job, prediction)
        finished = await self.store.finish(
            job,
            status,
            actual_micros=self._actual_cost(job, prediction),
            give_back_job=status in (JobStatus.FAILED, JobStatus.ABORTED),
            claim=ours,
            lease=self.delivery.lease,
            output=prediction.output,
            error=_error_text(prediction.error, self._reached_deadline(job, prediction)),
            predict_time=(prediction.metrics or {}).get("predict_time"),
            progress=100 if status is JobStatus.SUCCEEDED else job.progress,
            # Replicate's own start, where none was recorded (no `start` webhook was asked for,
            # or it was lost): the admin page's and `conjure jobs`'s run time.
            **({"started_at": prediction.started_at} if _start_unknown(job, prediction) else {}),
        )
        if finished is not None:
            done = finished.job
            job_event(
                done,
                "finished",
                status=done.status,
                cost=done.actual_micros,
                duration=_lasted(done),
                predict_time=done.predict_time,
            )
            self.followed.ended(job.id)
            if (later := self._shows_later.pop(job.id, None)) is not None:
                later.cancel()
            self._shows_pending.discard(job.id)
            if ours:
                self.spawn(self._deliver_claimed(finished.job))
            if finished.alerts_due:
                self.spawn(self.send_alerts())
            self._slot_freed(job)

    async def _note_late_end(self, job: Job, prediction: Prediction) -> None:
        """Record Replicate's end of a run heard of late (a lost webhook, an outage ridden out):
        its files die an hour after that end, not after `completed_at` (when Conjure heard),
        and a linked output's note must say when. Best effort: a note an hour off at worst."""
        ended = prediction.completed_at
        if ended is None or ended.tzinfo is None or utcnow() - ended < HEARD_LATE:
            return  # heard at once: completed_at is close enough, and no write is spent
        with contextlib.suppress(*UNANSWERED):
            await self.store.merge_destination(job.id, {REPLICATE_END_KEY: ended.isoformat()})

    def _actual_cost(self, job: Job, prediction: Prediction) -> int:
        """What Replicate billed: predict_time x rate, outputs x price, or the metrics' token
        counts x their prices (the ceiling that was reserved when the model has since left the
        catalog, or for a count Replicate did not report). An overrun past the ceiling is
        charged as billed: it counts against the budget, so it blocks the next job."""
        model = self.catalog.models.get(job.model)
        if model is None:
            return job.estimated_micros
        metrics = prediction.metrics or {}
        succeeded = prediction.status == "succeeded"
        outputs = _count_outputs(prediction.output) if succeeded else 0
        seconds = metrics.get("predict_time")
        if seconds is None:
            seconds = _ran_for(prediction)
        # Aborted, or failed or canceled with no sign of having run (no time, no tokens):
        # Replicate bills nothing. Otherwise a count it left out is charged at its bound.
        ran = prediction.status != "aborted" and (
            succeeded
            or seconds is not None
            or any(metrics.get(name) is not None for name in TOKEN_COUNTS)
        )
        return model.price.actual_micros(
            outputs,
            seconds,
            tokens=model.token_budget(job.input),
            input_tokens=metrics.get("input_token_count"),
            output_tokens=metrics.get("output_token_count"),
            ran=ran,
        )

    def _deadline(self, job: Job) -> float | None:
        """The seconds after which Replicate stops the job's run (None: no deadline was set)."""
        model = self.catalog.models.get(job.model)
        return None if model is None else model.price.deadline_seconds(job.outputs_expected)

    def _reached_deadline(self, job: Job, prediction: Prediction) -> bool:
        """Whether Replicate stopped the run at its `Cancel-After` deadline, which it counts
        from the create: its end at or past the `deadline` it reports (else its `total_time`
        that long). A cancel its owner asked for sooner is not, however long the job waited
        in the queue or for its create before it (the job's own age counts those)."""
        if prediction.status != "canceled":
            return False
        deadline = _moment((prediction.model_extra or {}).get("deadline"))
        ended = prediction.completed_at
        if deadline is not None and ended is not None and ended.tzinfo is not None:
            return ended >= deadline
        seconds = self._deadline(job)
        total = (prediction.metrics or {}).get("total_time")
        if seconds is None or isinstance(total, bool) or not isinstance(total, int | float):
            return False
        return total >= seconds

    async def _charge_ended(self, job_id: str, prediction: Prediction) -> None:
        """Polling only: the prediction of a job canceled while its create was on its way,
        read to its end to charge what it ran, as its webhook would (it has no webhook URL
        to say it is the job's, so apply_prediction would not take it)."""
        job = await self.store.get(job_id) if prediction.terminal else None
        if job is not None and job.job_status.terminal and job.prediction_id is None:
            await self._charge_late(job, prediction)

    async def _charge_late(self, job: Job, prediction: Prediction) -> None:
        """The prediction of a job we had given up on (its create answer was lost) did run: it
        is charged, and a result is delivered after all (the person told to run it again may
        have, but this one was paid for)."""
        if not prediction.terminal:
            return
        actual = self._actual_cost(job, prediction)
        succeeded = prediction.status == "succeeded" and prediction.output is not None
        if succeeded:
            await self._note_late_end(job, prediction)
        deliver = succeeded and job.platform in self._adapters
        late = await self.store.charge_late(
            job,
            prediction.id,
            actual,
            output=prediction.output if succeeded else None,
            claim=deliver,
            lease=self.delivery.lease,
        )
        if late is None:
            return
        if late.alerts_due:
            self.spawn(self.send_alerts())
        log.warning(
            "job %s: prediction %s ran after the job was given up; charged %s%s",
            job.id,
            prediction.id,
            format_usd(actual),
            ", delivering its result" if deliver else "",
        )
        if deliver:
            self.spawn(self._deliver_claimed(late.job))

    async def _throttled_status_update(self, job: Job, screen: _Screen) -> None:
        """Show a running job's new status or progress, at most once per progress_interval,
        and never once its outcome is being shown (the row read may be older than that)."""
        if not self.followed.show_due(job.id):
            self._show_later(job.id)
            return
        self.followed.shown(job.id)
        async with screen.lock:
            adapter = self._adapters.get(job.platform)
            if screen.ended or adapter is None:
                return
            sent = time.monotonic()
            try:
                await adapter.update_status(job)
            except Exception:
                log.warning("could not update the status of job %s", job.id, exc_info=True)
                return
            # A slow edit may have landed after the outcome another instance showed meanwhile;
            # where it was shown here, it is shown next, after this edit.
            if time.monotonic() - sent >= SLOW_EDIT and not screen.ended:
                await self._restore_outcome(adapter, job.id)

    async def _restore_outcome(self, adapter: ChatAdapter, job_id: str) -> None:
        """After a slow status edit: where the job ended meanwhile, show its end again. The edit
        may have landed after the outcome another instance showed (a 429 makes the platform's
        client wait and send it again): "running 80%" with a Cancel button would stay on a
        job that is done."""
        try:
            current = await self.store.get(job_id)
        except UNANSWERED:
            log.warning("job %s: could not check it after a status edit", job_id)
            return
        if current is None or not current.job_status.terminal:
            return
        try:
            await adapter.update_status(current)
        except Exception:
            log.warning("could not show the outcome of job %s again", job_id, exc_info=True)

    def _show_later(self, job_id: str) -> None:
        """Show the job's latest status once the interval has passed (a change that came too
        soon after the last showing is not dropped, only delayed), unless it has ended by then.

        A showing due within SHOW_RECHECK gets a timer of its own; a later one (a busy
        workspace's, bot.updates) waits in a set that one timer looks over every SHOW_RECHECK,
        as its interval shrinks when the workspace's other jobs end: 10,000 jobs in flight held
        10,000 timers, 6 MB, each re-armed every few seconds."""
        if job_id in self._shows_later or job_id in self._shows_pending:
            return
        delay = self.followed.next_show_in(job_id)
        if delay > SHOW_RECHECK:
            self._shows_pending.add(job_id)
            if self._pending_look is None:
                loop = asyncio.get_running_loop()
                self._pending_look = loop.call_later(SHOW_RECHECK, self._look_at_pending)
            return

        def due() -> None:
            del self._shows_later[job_id]
            self._show_if_due(job_id)

        self._shows_later[job_id] = asyncio.get_running_loop().call_later(delay, due)

    def _show_if_due(self, job_id: str) -> None:
        if not self.followed.follows(job_id):
            return
        if self.followed.show_due(job_id):
            self.spawn(self._show_latest(job_id))
        else:  # its workspace's jobs, and so its interval, grew meanwhile
            self._show_later(job_id)

    def _look_at_pending(self) -> None:
        """Every SHOW_RECHECK while any showing waits in the set: those now due, or due soon,
        leave it (as the workspace's jobs end, their interval shrinks)."""
        self._pending_look = None
        waiting, self._shows_pending = self._shows_pending, set()
        for job_id in waiting:
            self._show_if_due(job_id)

    async def _show_latest(self, job_id: str) -> None:
        """The delayed edit: the job as it now stands, with the progress held back for it. A
        status edit is worth a try, not a retry: with the database away it is skipped (the
        outcome, which is retried, shows the end)."""
        try:
            with self._screen(job_id) as screen:
                job = None
                progress = self.followed.held_back(job_id)
                if progress is not None:  # written if higher and still running: the row back
                    job = await self.store.record_progress(job_id, progress)
                    if job is not None and job.prediction_id is not None:
                        self.followed.recorded(
                            job_id,
                            job.prediction_id,
                            job.status_rank,
                            job.progress,
                            workspace_of(job),
                        )
                if job is None:
                    job = await self.store.get(job_id)
                if job is None or job.job_status.terminal or job.platform not in self._adapters:
                    return
                await self._throttled_status_update(job, screen)
        except UNANSWERED:  # a restart refuses connections: an OSError, not SQLAlchemy's
            log.warning("job %s: its status was not shown (database unavailable)", job_id)

    def update_adds_nothing(self, job_id: str, prediction: Prediction) -> bool:
        """Whether a webhook's update of a job this process follows may be answered without
        touching the database (bot.updates); a progress it holds back is shown when due."""
        if not self.followed.adds_nothing(job_id, prediction):
            return False
        if self.followed.held_back(job_id) is not None:
            self._show_later(job_id)
        return True

    @contextlib.contextmanager
    def _screen(self, job_id: str) -> Iterator[_Screen]:
        """What this process is showing of one job, shared while anything here is showing it."""
        screen = self._screens.setdefault(job_id, _Screen())
        screen.users += 1
        try:
            yield screen
        finally:
            screen.users -= 1
            if not screen.users:
                del self._screens[job_id]

    # ---- delivery -------------------------------------------------------------------------

    async def deliver(self, job_id: str) -> bool:
        """Deliver a finished job's result if this caller wins the claim; True when it did."""
        if not await self.store.claim_delivery(job_id, self.delivery.lease):
            return False
        job = await self.store.get(job_id)
        assert job is not None
        return await self._deliver_claimed(job)

    async def _deliver_claimed(self, job: Job) -> bool:
        """Post the result (or the failure) of a job whose delivery this caller holds; an
        error that should pass is tried again, then left to the sweeper, never failed."""
        adapter = self._adapters.get(job.platform)
        if adapter is None:  # detached since it was claimed (a graceful stop): not a failure
            reason = f"no adapter for {job.platform}"
            await self.store.release_delivery(job.id, reason, job.delivery_attempts)
            return False
        if job.delivery_attempts > self.delivery.max_claims:
            # Every earlier claim lapsed without an outcome: its process died each time (an
            # output that kills it, say). Tried again, it would be for ever, the person untold.
            await self._give_up(adapter, job, "claims lapsed")
            return False
        posted = False

        async def post_and_record() -> _Failed | None:
            # Recorded under the same lease as the post: a record tried again through an
            # outage stops when the lease would lapse, not after another instance took the
            # delivery over (its late record would mark that instance's claim delivered).
            nonlocal posted
            failed = await self._post_in_turn(adapter, job)
            if failed is None:
                posted = True
                if await self._record_delivered(job):
                    job_event(job, "delivered", status=job.status, duration=_lasted(job, utcnow()))
            return failed

        try:
            failed = await self._leased(job, post_and_record())
        except LeaseLost:
            if posted:
                log.warning(
                    "job %s: posted, but not recorded delivered before its lease ran out (the "
                    "database did not answer); it may be posted again",
                    job.id,
                )
            else:
                log.warning("job %s: its delivery was taken over; this one stopped", job.id)
            return False
        if failed is None:
            return True
        reason = type(failed.error).__name__
        if not failed.passing:
            job_event(
                job, "delivery failed", level=logging.ERROR, reason=reason, exc_info=failed.error
            )
            await self.store.finish_delivery(job.id, reason, job.delivery_attempts)
            await self._say_undeliverable(adapter, job)
        elif job.delivery_attempts >= self.delivery.max_claims:
            await self._give_up(adapter, job, reason)
        else:
            job_event(job, "delivery postponed", level=logging.WARNING, reason=reason)
            await self.store.release_delivery(job.id, reason, job.delivery_attempts)
        return False

    async def _record_delivered(self, job: Job) -> bool:
        """Record a posted result delivered, trying again while the database does not answer
        (a restart, a failover) for up to a lease: left claimed, the delivery would be taken
        over once its lease lapsed and posted again, where the platform cannot tell what was
        posted (ChatAdapter.deliver_result's default). False when it could not be recorded."""
        try:
            await self._until_answered(
                f"job {job.id}: posted, not yet recorded delivered",
                lambda: self.store.finish_delivery(job.id),
                within=self.delivery.lease.total_seconds(),
            )
        except StillUnanswered as exc:
            log.warning(
                "job %s: posted, but not recorded delivered: the database did not answer (%s); "
                "it may be posted again once its claim lapses",
                job.id,
                exc.error,
            )
            return False
        return True

    async def _until_answered(
        self, what: str, step: Callable[[], Awaitable[_T]], *, within: float
    ) -> _T:
        """`step`, tried again while the database does not answer (a restart, a failover: a
        second or two), for up to `within` seconds; one warning line for the outage, and
        StillUnanswered once the time is up. A mistake in what was asked is raised at once."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + within
        wait, said = UNANSWERED_RETRY, False
        while True:
            try:
                return await step()
            except UNANSWERED as exc:
                if not is_outage(exc):
                    raise  # a mistake in what was asked is not tried again
                if loop.time() + wait >= give_up_at:
                    raise StillUnanswered(exc) from exc
                if not said:
                    said = True
                    log.warning(
                        "%s: the database did not answer (%s); trying again",
                        what,
                        type(exc).__name__,
                    )
            await asyncio.sleep(wait)
            wait = min(wait * 2, UNANSWERED_RETRY_MAX)

    async def _give_up(self, adapter: ChatAdapter, job: Job, reason: str) -> None:
        """Fail a delivery for good after `max_claims` claims, and tell the person where that
        still works (a result they were charged for will not come)."""
        job_event(
            job,
            "delivery failed",
            level=logging.ERROR,
            reason=f"{reason}, gave up",
            attempts=job.delivery_attempts,
        )
        await self.store.finish_delivery(job.id, f"{reason} (gave up)", job.delivery_attempts)
        await self._say_undeliverable(adapter, job)

    @staticmethod
    async def _say_undeliverable(adapter: ChatAdapter, job: Job) -> None:
        """Tell the person, where that still works, that a result they were charged for will
        not come: refused for good (a 4xx, a missing scope) as much as given up after many
        claims. Untold, its status would say "queued" or "running" for ever."""
        if job.job_status is JobStatus.SUCCEEDED:
            with contextlib.suppress(Exception):
                await adapter.post_error(job, UNDELIVERABLE)

    def _checkpoint(self, job: Job) -> Checkpoint:
        """What an adapter calls to record a delivery step in the job's destination."""

        async def record(fields: Mapping[str, Any]) -> None:
            job.destination.update(fields)
            await self.store.merge_destination(job.id, dict(fields))

        return record

    async def _leased(self, job: Job, work: Coroutine[Any, Any, _T]) -> _T:
        """`work` (a post and its record), with this claim's lease kept alive meanwhile:
        renewed every third of the lease, so only a claimant that died (and its renewals with
        it) loses it. One that finds it lost anyway (stalled past its lease, and taken over)
        stops (LeaseLost), so two instances never post at once. Renewed from the claim on, not
        from the post: a claim waiting its turn (every delivery slot busy) past its lease would
        be taken over, and both claimants would post once they got a slot."""
        posting = asyncio.create_task(work)
        renewal = asyncio.create_task(self._renew(job, posting))
        try:
            return await posting
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if posting.cancelled() and (me is None or not me.cancelling()):
                raise LeaseLost(job.id) from None
            raise
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    async def _post_in_turn(self, adapter: ChatAdapter, job: Job) -> _Failed | None:
        """_post_outcome once a delivery slot is free and no status edit of the job is under way
        here; no status edit follows it."""
        await self._close_stream(job)
        async with self._delivering:
            with self._screen(job.id) as screen:
                screen.ended = True  # a progress update still on its way is not shown after
                async with screen.lock:
                    return await self._post_outcome(adapter, job)

    async def _renew(self, job: Job, posting: asyncio.Task[Any]) -> None:
        """Renew the lease of `job`'s claim until cancelled; if it is lost, cancel `posting`.

        A renewal that fails (the database unreachable from here, or too slow) is tried again,
        but only while the lease surely holds: `posting` is cancelled a sixth of a lease before
        the last lease known to be held lapses, since past it another instance may take the
        delivery over and post it too."""
        policy = self.delivery
        loop = asyncio.get_running_loop()
        lease = policy.lease.total_seconds()
        held_until = loop.time() + _lease_left(job, lease)
        while True:
            stop_at = held_until - policy.renew_every / 2
            await asyncio.sleep(max(0.0, min(policy.renew_every, stop_at - loop.time())))
            if loop.time() >= stop_at:
                log.warning("job %s: could not renew the delivery lease in time; stopped", job.id)
                posting.cancel()
                return
            asked = loop.time()
            try:
                async with asyncio.timeout_at(stop_at):
                    held = await self.store.renew_lease(job.id, job.delivery_attempts, policy.lease)
            except UNANSWERED:  # the database's errors, its refusals, a renewal too slow
                log.warning("job %s: could not renew the delivery lease", job.id)
                continue
            if not held:
                posting.cancel()
                return
            held_until = asked + lease

    async def _post_outcome(self, adapter: ChatAdapter, job: Job) -> _Failed | None:
        """Show the job's outcome, trying again after errors the adapter calls passing; None
        once shown, else how the last try failed."""
        policy = self.delivery
        for attempt in range(1, policy.tries + 1):
            try:
                if job.job_status is JobStatus.SUCCEEDED:
                    result = fold_result(await self._fetch(adapter, job))
                    await adapter.deliver_result(job, result, self._checkpoint(job))
                else:
                    message = failure_message(job, self._deadline(job))
                    await adapter.post_error(job, message, self._checkpoint(job))
                return None
            except Exception as exc:
                retry_after = self._retry_after(adapter, exc)
                if retry_after is None:
                    return _Failed(exc, passing=False)
                if attempt == policy.tries:
                    return _Failed(exc, passing=True)
                log.warning(
                    "job %s: delivery try %d failed (%s)", job.id, attempt, type(exc).__name__
                )
                await asyncio.sleep(policy.wait(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _retry_after(adapter: ChatAdapter, exc: Exception) -> float | None:
        """Whether a delivery's failure passes (the least wait before trying again) or not
        (None). The database not answering under a checkpoint (recording uploads before their
        share) passes: giving up there would lose a result that is paid for. So does any
        OSError: one a database that cannot be reached raises (no route to it in a failover) is
        not wrapped by SQLAlchemy, and is no ConnectionError an adapter would know to pass. SQL
        the database refuses as wrong does not: it would fail again."""
        if isinstance(exc, OutputUnavailable):
            return exc.retry_after
        if isinstance(exc, UNANSWERED) and is_outage(exc):
            return 0.0
        return adapter.retry_delay(exc)

    async def _fetch(self, adapter: ChatAdapter, job: Job) -> JobResult:
        """The outputs, each one too large for where it goes linked instead (with a note)."""
        result = await self.fetcher.fetch(job.output, link=True, limit=adapter.upload_limit(job))
        model = self.catalog.models.get(job.model)
        noun = model.kind if model is not None and model.kind in ("image", "video") else "file"
        ended = _moment(job.destination.get(REPLICATE_END_KEY)) or job.completed_at
        return with_link_notes(result, noun, ended)

    # ---- budget alerts --------------------------------------------------------------------

    async def send_alerts(self) -> None:
        """Send budget alerts from the outbox to each platform's admin channel, once each while
        the senders live. Each is leased before it is posted (storage.quotas): one whose sender
        died mid-post is sent by another once the lease lapses. A database that does not
        answer leaves them in the outbox for the next sweep: a line in the log, not a crash."""
        try:
            await self._send_alerts()
        except UNANSWERED as exc:
            if not is_outage(exc):
                raise  # a mistake, not an outage: logged with its traceback (_task_done)
            log.warning(
                "budget alerts not sent now: the database did not answer (%s)", type(exc).__name__
            )

    async def _send_alerts(self) -> None:
        for alert in await self.quotas.store.unsent_alerts():
            platform = alert.subject.split(":", 1)[0]
            adapter = self._adapters.get(platform)
            channel = self.settings.alert_channel(platform)
            if adapter is None or channel is None:
                continue  # stays in the outbox until a channel is configured
            lease = await self.quotas.store.lease_alert(alert.id or 0)
            if lease is None:
                continue
            try:
                await adapter.post_notice(channel, alert_text(alert))
            except Exception:
                log.exception("could not send budget alert %s; will retry", alert.id)
                await self.quotas.store.release_alert(alert.id or 0, lease)
            else:
                await self._record_alert_sent(alert.id or 0, lease)

    async def _record_alert_sent(self, alert_id: int, lease: datetime) -> None:
        """Record a posted alert sent, trying again while the database does not answer, for
        as long as its lease surely holds: left leased, it would be posted again once the
        lease lapsed."""
        left = (lease - utcnow()).total_seconds() - ALERT_RECORD_MARGIN
        try:
            await self._until_answered(
                f"budget alert {alert_id}: posted, not yet recorded sent",
                lambda: self.quotas.store.alert_sent(alert_id),
                within=max(0.0, left),
            )
        except StillUnanswered as exc:
            log.warning(
                "budget alert %s: posted, but not recorded sent: the database did not answer "
                "(%s); it may be posted again once its lease lapses",
                alert_id,
                exc.error,
            )

    # ---- polling and recovery -------------------------------------------------------------

    def start_polling(self, job_id: str, prediction_id: str, apply: _Apply | None = None) -> None:
        """Read the prediction until it ends, each read applied with `apply` (by default
        apply_prediction)."""
        if job_id in self._polling:
            return
        self._polling.add(job_id)
        self.spawn(self._poll(job_id, prediction_id, apply or self.apply_prediction))

    async def _poll(self, job_id: str, prediction_id: str, apply: _Apply) -> None:
        """Read the prediction until it is terminal (no public URL, or a webhook never came)."""
        interval = self.settings.conjure_poll_interval
        missing = 0  # reads in a row that found no such prediction
        unrecorded = 0  # reads in a row the database did not take
        try:
            while True:
                try:
                    async with self._reading:
                        prediction = await self.replicate.get_prediction(prediction_id)
                except ReplicateError as exc:
                    missing = missing + 1 if exc.status == 404 else 0
                    if missing >= GONE_AFTER:
                        await self._prediction_gone(job_id, prediction_id)
                        return
                    log.warning("polling %s failed: %s", prediction_id, exc)
                else:
                    missing = 0
                    try:
                        await apply(job_id, prediction)
                    except UNANSWERED as exc:
                        if not is_outage(exc):
                            raise  # a mistake: the poll ends, with its traceback (_task_done)
                        # A restart or failover: read again next time, as after Replicate's
                        # errors. Ended here, nothing would read the job for minutes (until the
                        # sweeper finds it silent), its result and its hold waiting meanwhile.
                        level = logging.DEBUG if unrecorded else logging.WARNING  # once a spell
                        unrecorded += 1
                        log.log(
                            level,
                            "job %s: a read of prediction %s not recorded: the database did not "
                            "answer (%s); reading it again",
                            job_id,
                            prediction_id,
                            type(exc).__name__,
                        )
                    else:
                        unrecorded = 0
                        if prediction.terminal:
                            return
                await asyncio.sleep(interval)
        finally:
            self._polling.discard(job_id)

    async def _prediction_gone(self, job_id: str, prediction_id: str) -> None:
        """Replicate no longer knows the prediction (read with another account after a restart,
        or its data removed): nothing will ever finish the job, so it is failed here, charged
        nothing (nothing more is known), its job given back and its hold released, and the
        person told; polled forever instead, its hold would never be released."""
        job = await self.store.get(job_id)
        if job is None or job.job_status.terminal:
            return
        log.warning(
            "job %s: prediction %s not found %d times; gave up", job_id, prediction_id, GONE_AFTER
        )
        await self._fail_before_start(job, PREDICTION_GONE, reason="prediction gone", started=True)

    async def sweep_forever(
        self,
        every: float = 60,
        silent_for: timedelta = SILENT_AFTER,
        deliveries_every: float = DELIVERY_SWEEP_EVERY,
    ) -> None:
        """Now and then, recover jobs whose webhooks went missing, so no hold leaks (every
        `every` seconds); more often, take over deliveries whose claimant died or that wait
        for another try (every `deliveries_every`)."""
        next_recover = time.monotonic() + every
        while True:
            await asyncio.sleep(min(every, deliveries_every))
            try:
                if time.monotonic() >= next_recover:
                    next_recover = time.monotonic() + every
                    await self.recover(silent_for)
                else:
                    await self.sweep_deliveries()
                    await self.sweep_unstarted()
                    await self.sweep_waiting()
            except Exception as exc:
                if is_outage(exc):  # not a bug: a line each sweep, no traceback
                    log.warning(
                        "sweep skipped: the database did not answer (%s)", type(exc).__name__
                    )
                else:
                    log.exception("sweep failed; will try again")

    async def recover(self, silent_for: timedelta | None = None) -> None:
        """Poll unfinished jobs, resolve lost creates, retry undelivered results.

        At start-up every unfinished job; from the sweeper only those silent for `silent_for`.
        """
        for job in await self.store.unfinished(silent_for):
            if job.platform not in self._adapters:
                continue
            if job.waiting_since is not None:
                continue  # queued on purpose: sweep_waiting starts it when a slot frees
            if job.prediction_id:
                self.start_polling(job.id, job.prediction_id)
                continue
            if job.id not in self._launching:
                await self._resume_unstarted(job)
        await self.sweep_deliveries()
        await self.sweep_waiting()
        self.spawn(self.send_alerts())

    async def _resume_unstarted(self, job: Job) -> None:
        """A job with no prediction known: adopt the prediction its create made (found by its
        webhook URL), else start it if it was abandoned (untouched for START_TAKEOVER), or give
        it back if it is too old to start now; one younger may still be starting elsewhere.
        Without webhooks a lost create cannot be found, so nothing is started twice: the job
        is given back at START_GIVE_UP, as before."""
        found = await self._find_lost_prediction(job, self.webhook_url(job.id))
        if found is not None:
            if await self.store.attach_prediction(job.id, found.id):
                self.start_polling(job.id, found.id)
            else:  # given up meanwhile: its run is charged (and delivered) late, once
                await self.apply_prediction(job.id, found)
            return
        now = utcnow()
        if job.updated_at >= now - START_TAKEOVER:
            return  # may still be starting elsewhere (a live instance keeps its claim fresh)
        model = self.catalog.models.get(job.model)
        if job.created_at < now - START_GIVE_UP or model is None:
            # Claimed first, as a start is: an instance still starting it would have touched
            # it (and one that starts it from here on finds it given back).
            if await self._touch_unstarted(job):
                await self._fail_before_start(job, RESTARTED_BEFORE_START, reason="not started")
            return
        if not self.uses_webhooks:
            return  # a create that reached Replicate cannot be found without a webhook URL
        if not await self._touch_unstarted(job):
            return  # another instance took it over
        log.warning("job %s: recorded but never started (its instance stopped); starting", job.id)
        async with self._starting:
            await self._create_and_follow(job, model)

    async def sweep_unstarted(self) -> None:
        """Start jobs recorded but abandoned before their create (their instance died)."""
        for job in await self.store.unstarted(utcnow() - START_TAKEOVER):
            if job.platform in self._adapters and job.id not in self._launching:
                self.spawn(self._resume_unstarted(job))

    async def sweep_deliveries(self) -> None:
        """Claim and deliver what waits: pending deliveries whose backoff is over, and claims
        whose lease lapsed (their holder died)."""
        now = utcnow()
        for job in await self.store.undelivered(now):
            if job.platform in self._adapters and self.delivery.due(job, now):
                self.spawn(self.deliver(job.id))


def _lease_left(job: Job, lease: float) -> float:
    """Seconds the claim `job` was read with still holds (its lease was set by this process's
    clock as it claimed), at most `lease`."""
    until = job.delivery_lease_until
    if until is None:
        return lease
    return min(lease, max(0.0, (until - utcnow()).total_seconds()))


def _start_unknown(job: Job, prediction: Prediction) -> bool:
    return job.started_at is None and prediction.started_at is not None


def _lasted(job: Job, end: datetime | None = None) -> float | None:
    """Seconds from a job's recording to its end (or to `end`)."""
    return seconds_between(job.created_at, end or job.completed_at)


# The error recorded for a run Replicate stopped at its Cancel-After deadline (bot.jobs
# _reached_deadline): what tells its message from that of a cancel a person asked for.
REACHED_DEADLINE = "Stopped by Replicate at its deadline (Cancel-After)"

# Replicate's safety checker (image models) fails a prediction with this in its error.
NSFW_ERROR = "nsfw content detected"
SAFETY_CHECKER_FLAGGED = (
    "The model's safety checker flagged the result, so nothing was shown. Try rewording the prompt."
)


def failure_message(job: Job, deadline: float | None = None) -> str:
    """What the person reads when a job ends without a result; `deadline` is the run's limit in
    seconds (Cancel-After). A job canceled by Replicate at that deadline (REACHED_DEADLINE, from
    Replicate's own times) was stopped at its cost ceiling; any other was canceled by a person,
    however long it had waited before its run."""
    status = job.job_status
    if status is JobStatus.CANCELED:
        stopped = (job.error or "").startswith(REACHED_DEADLINE)
        if deadline is not None and stopped:
            return (
                f"The job was stopped at its cost ceiling: it was still running after "
                f"{format_duration(deadline)}, the longest this model may run (at most "
                f"{format_usd(job.estimated_micros)}). It was charged "
                f"{format_usd(job.actual_micros)} for the time it ran."
            )
        return "The job was canceled."
    if status is JobStatus.ABORTED:
        return (
            "The job was aborted before it started (it waited past its time limit); "
            "nothing was charged."
        )
    reason = (job.error or "no reason given").strip()
    if NSFW_ERROR in reason.lower():
        charged = (
            f"It was charged {format_usd(job.actual_micros)}."
            if job.actual_micros
            else "Nothing was charged."
        )
        return f"{SAFETY_CHECKER_FLAGGED} {charged}"
    if "Traceback (most recent call last)" in reason:
        reason = reason.splitlines()[-1]  # the model's exception, not its stack
    return f"The model could not finish: {reason}"


def alert_text(alert: BudgetAlert) -> Text:
    """The admin-channel message for a budget threshold."""
    parts = alert.subject.split(":")
    who = Mention(parts[2]) if alert.scope == "user" and len(parts) > 2 else "The workspace"
    verb = "has reached" if alert.threshold >= 100 else "has used"
    month = alert.period.removeprefix("month:")
    return Text.of(
        "Budget alert: ",
        who,
        f" {verb} {alert.threshold}% of the monthly budget for {month}: "
        f"{format_usd(alert.spent_micros)} of {format_usd(alert.limit_micros)}.",
    )


def _ran_for(prediction: Prediction) -> float | None:
    """The seconds between a prediction's start and end, for one whose `metrics` lack
    `predict_time` (a cancel's answer may): Replicate bills the time a run ran, so charging
    none would let a canceled run pass the budget. None when it never started."""
    if prediction.started_at is None or prediction.completed_at is None:
        return None
    seconds = (prediction.completed_at - prediction.started_at).total_seconds()
    return min(max(seconds, 0.0), MAX_PREDICT_TIME)


def _moment(value: Any) -> datetime | None:
    """A time Replicate wrote (RFC 3339), or None for none or one that cannot be read: an
    unreadable `deadline` must not make its prediction's update refused."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _count_outputs(output: Any) -> int:
    """Files produced, or 1 for a text answer: what per-output prices are charged for."""
    urls, text = split_output(output)
    return len(urls) or (1 if text is not None else 0)


def _error_text(error: Any, reached_deadline: bool = False) -> str | None:
    """What is recorded as the job's error; a run stopped at its deadline says so first (its
    message, failure_message, is told by it)."""
    text = None if error is None or error == "" else error if isinstance(error, str) else str(error)
    if reached_deadline:
        return REACHED_DEADLINE if text is None else f"{REACHED_DEADLINE}: {text}"
    return text
