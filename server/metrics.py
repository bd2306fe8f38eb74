"""Prometheus metrics of the service, per session and model, in a registry of its own.

Counters and histograms are updated on the event loop as results are published and delivered;
gauges (decode rate, subscribers, session state) are read from the sessions at scrape time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from neurocast.streaming.engine.results import Result

if TYPE_CHECKING:
    from neurocast.wire.schemas import SessionStatus

# latency buckets in seconds: 0.25 ms to 1 s
_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_STAGES = ("acquisition", "preprocessing", "inference")


class _SessionGauges(Collector):
    def __init__(self, statuses: Callable[[], Iterable[SessionStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        rate = GaugeMetricFamily(
            "neurocast_decode_rate_hz", "Windows decoded per second since start", labels=["session"]
        )
        subs = GaugeMetricFamily(
            "neurocast_ws_subscribers", "WebSocket clients connected", labels=["session"]
        )
        state = GaugeMetricFamily(
            "neurocast_session_state",
            "1 for the session's current state",
            labels=["session", "state"],
        )
        for s in self._statuses():
            rate.add_metric([s.id], s.decode_rate_hz)
            subs.add_metric([s.id], s.subscribers)
            state.add_metric([s.id, s.status], 1.0)
        yield from (rate, subs, state)


class Metrics:
    """The service's Prometheus metrics.

    Parameters
    ----------
    statuses : callable
        Returns the status of every session (read at scrape time).
    """

    def __init__(self, statuses: Callable[[], Iterable[SessionStatus]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decoded = Counter(
            "neurocast_windows_decoded", "Windows decoded", ["session", "model"], registry=r
        )
        self.skipped = Counter(
            "neurocast_windows_skipped",
            "Windows skipped because decoding fell behind",
            ["session", "model"],
            registry=r,
        )
        self.invalid = Counter(
            "neurocast_windows_invalid",
            "Windows decoded with issues (gap, clock jump, non-finite samples)",
            ["session", "model"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "neurocast_stage_latency_seconds",
            "Time spent per window in each stage",
            ["session", "model", "stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "neurocast_delivery_latency_seconds",
            "From a result being ready to it being written to a WebSocket client",
            ["session"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.dropped = Counter(
            "neurocast_ws_dropped_messages",
            "Messages dropped for WebSocket clients that read too slowly",
            ["session"],
            registry=r,
        )
        self.jobs = Counter(
            "neurocast_jobs", "Batch jobs finished, by final state", ["state"], registry=r
        )
        self.job_windows = Counter(
            "neurocast_job_windows", "Windows decoded by batch jobs", ["model"], registry=r
        )
        r.register(_SessionGauges(statuses))
        self._labels: dict[str, set[str]] = {}
        # the delivery series of each session: looked up once per message and per client,
        # so the label lookup (a lock and a hash of the labels) is done once per session
        self._delivery: dict[str, Histogram] = {}

    def observe_result(self, session_id: str, result: Result) -> None:
        """Count a live result and record its stage latencies."""
        model = result.model
        self._labels.setdefault(session_id, set()).add(model)
        self.decoded.labels(session_id, model).inc()
        if result.skipped:
            self.skipped.labels(session_id, model).inc(result.skipped)
        if not result.valid:
            self.invalid.labels(session_id, model).inc()
        lat = result.latency
        values = (lat.acquisition_ms, lat.preprocessing_ms, lat.inference_ms)
        for stage, ms in zip(_STAGES, values, strict=True):
            self.stage_latency.labels(session_id, model, stage).observe(ms / 1e3)

    def observe_delivery(self, session_id: str, seconds: float) -> None:
        """Record the delivery latency of one message."""
        series = self._delivery.get(session_id)
        if series is None:
            series = self._delivery[session_id] = self.delivery_latency.labels(session_id)
        series.observe(seconds)

    def observe_dropped(self, session_id: str, n: int) -> None:
        """Count messages dropped for a slow client."""
        self.dropped.labels(session_id).inc(n)

    def forget_session(self, session_id: str) -> None:
        """Remove a deleted session's series so labels do not accumulate."""
        for model in self._labels.pop(session_id, set()):
            for counter in (self.decoded, self.skipped, self.invalid):
                _remove(counter, session_id, model)
            for stage in _STAGES:
                _remove(self.stage_latency, session_id, model, stage)
        self._delivery.pop(session_id, None)
        _remove(self.delivery_latency, session_id)
        _remove(self.dropped, session_id)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # the series was never created
        metric.remove(*labels)
