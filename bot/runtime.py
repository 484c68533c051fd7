"""Everything one running Conjure holds: settings, catalog, database, Replicate, the job service.

Built once by `serve`, `demo` and the tests, so all three run the same wiring.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.catalog import Catalog, load_catalog
from bot.commands.handler import Commands
from bot.commands.model_options import prefetch
from bot.config import Settings
from bot.followups.service import Followups
from bot.http_transport import http_client
from bot.jobs import JobService
from bot.leadership import Leadership
from bot.metrics import Metrics
from bot.quotas.service import Quotas
from bot.replicate.client import ReplicateClient
from bot.replicate.outputs import REPLICATE_FILE_HOSTS, OutputFetcher
from bot.replicate.schema_cache import FETCH_TIMEOUT, ModelSchemas
from bot.replicate.webhook_secret import WebhookSecrets
from storage import clock
from storage.engine import create_engine
from storage.jobs import JobStore
from storage.quotas import QuotaStore
from storage.schema_head import migrate_unless_at_head

log = logging.getLogger(__name__)

OFFICIAL_API_HOST = "api.replicate.com"


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    engine: AsyncEngine
    store: JobStore
    replicate: ReplicateClient
    http: httpx.AsyncClient
    service: JobService
    commands: Commands
    followups: Followups
    metrics: Metrics = field(default_factory=Metrics)
    # Set by `conjure serve`: the singletons (sweeper, recovery, Discord gateway) then run only
    # in the process that leads (bot.leadership). None: this process runs them all.
    leadership: Leadership | None = None
    webhook_secrets: WebhookSecrets = field(init=False)
    # Measures this machine's clock against the database's now and then (storage.clock).
    clock_keeper: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        configured = self.settings.conjure_webhook_secret
        self.webhook_secrets = WebhookSecrets(
            self._fetch_webhook_secret,
            configured=configured.get_secret_value() if configured else None,
        )

    @classmethod
    async def start(
        cls, settings: Settings, *, progress_interval: float = 2.0, migrated: bool = False
    ) -> Runtime:
        """Connect, apply migrations and wire the job service and the command path (adapters are
        attached after, by adapters.platforms). `migrated`: the caller already migrated (the
        workers of `conjure serve --workers N`, whose parent did it once for all). A database
        already at head is not migrated, and Alembic is then never loaded (storage.schema_head)."""
        catalog = load_catalog(settings.config_path())
        engine = create_engine(settings.conjure_database_url)
        if not migrated:
            await migrate_unless_at_head(engine)
        synced = await clock.sync_or_say(engine)  # before any claim or lease is written
        store = JobStore(engine)
        quotas = Quotas(settings, QuotaStore(engine))
        token = settings.replicate_api_token
        replicate = ReplicateClient(
            settings.replicate_api_base, token.get_secret_value() if token else None
        )
        http = http_client(httpx.Timeout(30, connect=10), follow_redirects=False)
        fetcher = OutputFetcher(http, file_hosts(settings), settings.conjure_max_download_bytes)
        service = JobService(
            settings=settings,
            catalog=catalog,
            store=store,
            quotas=quotas,
            replicate=replicate,
            fetcher=fetcher,
            progress_interval=progress_interval,
        )
        followups = Followups(service, fetcher)
        schemas = model_schemas(settings)
        prefetch(schemas, catalog)  # in the background: start-up does not wait for Replicate
        commands = Commands(service, schemas)
        runtime = cls(
            settings, catalog, engine, store, replicate, http, service, commands, followups
        )
        if engine.dialect.name == "postgresql":
            first = clock.RESYNC_EVERY if synced else clock.RETRY_AFTER
            runtime.clock_keeper = asyncio.create_task(clock.keep_synced(engine, first=first))
        return runtime

    async def _fetch_webhook_secret(self) -> str:
        # Through whichever client is current (tests swap in an impatient one).
        return await self.replicate.default_webhook_secret()

    @property
    def schemas(self) -> ModelSchemas | None:
        """The models' input schemas, as the command path checks against them."""
        return self.commands.schemas

    async def aclose(self) -> None:
        if self.clock_keeper is not None:
            self.clock_keeper.cancel()
        if self.commands.schemas is not None:
            await self.commands.schemas.aclose()
        await self.service.aclose()
        await self.replicate.aclose()
        await self.http.aclose()
        await self.engine.dispose()
        if self.leadership is not None:
            await self.leadership.aclose()


def model_schemas(settings: Settings) -> ModelSchemas:
    """The schema cache, on a client of its own: one attempt, a short timeout (a command never
    waits on Replicate's retries for help text)."""
    token = settings.replicate_api_token
    client = ReplicateClient(
        settings.replicate_api_base,
        token.get_secret_value() if token else None,
        timeout=FETCH_TIMEOUT,
        max_attempts=1,
    )
    return ModelSchemas(client, close_source=client.aclose)


def file_hosts(settings: Settings) -> list[str]:
    """Where outputs may be downloaded from: Replicate's file hosts, or a sandbox's own address."""
    hosts = list(REPLICATE_FILE_HOSTS)
    base = urlsplit(settings.replicate_api_base)
    if base.hostname and base.hostname != OFFICIAL_API_HOST:
        hosts.append(base.netloc.lower())
    return hosts
