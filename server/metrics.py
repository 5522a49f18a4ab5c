"""Prometheus metrics of one server, on their own registry (several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from server.engine import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("radgr_requests", "Retrieval requests by HTTP status", ["status"], registry=r)
        self.latency = Histogram(
            "radgr_request_latency_seconds", "Retrieval request latency, server side", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_latency = Histogram(
            "radgr_batch_decode_seconds", "Decode time of one engine batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge("radgr_requests_in_flight", "Retrieval requests being handled", registry=r)
        self.queue_depth = Gauge("radgr_queue_depth", "Requests waiting for an engine batch", registry=r)
        self.batch_size = Histogram(
            "radgr_batch_requests", "Requests decoded together in one batch", buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.beams = Histogram(
            "radgr_beams_per_step", "Live beams in one decoder step (all requests of the batch)",
            buckets=(1, 8, 32, 128, 256, 512, 1024, 2048, 4096), registry=r,
        )
        self.beams_total = Counter("radgr_beams", "Beams scored, summed over decoder steps", registry=r)
        self.invalid = Counter("radgr_invalid_sids", "Decoded beams that are not SIDs of the index", registry=r)
        self.errors = Counter("radgr_errors", "Failed retrieval requests by HTTP status", ["status"], registry=r)
        self.info = Info("radgr_server", "Model, index and engine being served", registry=r)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.requests)
        self.decode_latency.observe(stats.seconds)
        for n in stats.beams_per_step:
            self.beams.observe(n)
        self.beams_total.inc(sum(stats.beams_per_step))
        if stats.invalid:
            self.invalid.inc(stats.invalid)
