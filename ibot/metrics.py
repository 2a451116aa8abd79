"""Prometheus metrics: what the bot spends, how fast it answers, how long work waits.

One registry per bot (not the process-global default), so tests and several bots in a
process never mix their numbers. The gateway reports each call once, from the same
facts it writes to the ledger; the pacer's queue is sampled when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ibot.domain import TOKEN_COLUMNS, LedgerEntry, PacerStats

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("feature", "model", "backend", "status")
        self.calls = Counter(
            "ibot_model_calls", "Model calls by outcome.", labels, registry=self.registry
        )
        self.tokens = Counter(
            "ibot_model_tokens",
            "Tokens billed.",
            ("feature", "model", "kind"),
            registry=self.registry,
        )
        self.cost = Counter(
            "ibot_cost_usd",
            "Cost in USD (unpriced calls excluded).",
            ("feature", "model"),
            registry=self.registry,
        )
        self.errors = Counter(
            "ibot_model_errors",
            "Failed model calls by kind.",
            ("feature", "kind"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ibot_model_latency_seconds",
            "Model call latency.",
            ("feature", "backend"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ibot_queue_depth",
            "Model calls waiting for a slot.",
            ("priority",),
            registry=self.registry,
        )
        self.queue_oldest = Gauge(
            "ibot_queue_oldest_wait_seconds",
            "Age of the oldest waiting model call.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "ibot_model_calls_in_flight", "Model calls being answered.", registry=self.registry
        )
        self._queue_source: Callable[[], PacerStats] | None = None

    def observe_call(self, entry: LedgerEntry) -> None:
        """Count one call from its ledger entry: the facts its row holds, so that /metrics
        and the ledger agree."""
        feature, model = str(entry.feature), entry.model_label
        self.calls.labels(feature, model, str(entry.backend), str(entry.status)).inc()
        for column in TOKEN_COLUMNS:
            value: int = getattr(entry, column)
            if value:  # kind: "prompt", "cached", "image", "completion"
                self.tokens.labels(feature, model, column.removesuffix("_tokens")).inc(value)
        if entry.cost_micros:
            self.cost.labels(feature, model).inc(entry.cost_micros / 1_000_000)
        if entry.error_kind is not None:
            self.errors.labels(feature, str(entry.error_kind)).inc()
        self.latency.labels(feature, str(entry.backend)).observe(entry.latency_ms / 1000)

    def watch_queue(self, source: Callable[[], PacerStats]) -> None:
        self._queue_source = source

    def render(self) -> bytes:
        if self._queue_source is not None:
            stats = self._queue_source()
            for priority, depth in stats.depth_by_priority.items():
                self.queue_depth.labels(priority).set(depth)
            self.queue_oldest.set(stats.oldest_wait_s)
            self.in_flight.set(stats.in_flight)
        return generate_latest(self.registry)
