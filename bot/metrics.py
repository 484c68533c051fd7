"""Prometheus metrics, in a registry per app so that several apps (tests) never collide."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.webhooks = Counter(
            "conjure_replicate_webhooks_total",
            "Replicate webhooks received, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "conjure_replicate_webhook_seconds",
            "Time to handle one Replicate webhook",
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
