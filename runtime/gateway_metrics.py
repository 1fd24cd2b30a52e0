"""The gateway's metrics, served in Prometheus text format at `/-/metrics`.

Counters are incremented where things happen (outcomes, retries, time in
queue); gauges (queue depth, runners by state) are filled from the scheduler
at scrape time, so they can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from skyform.runtime.gateway_model import RunnerState
from skyform.runtime.metrics import DEFAULT_BUCKETS, render

RUNNER_STATES = tuple(RunnerState)


class GatewayMetrics:
    """Every series the gateway exports, on one registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.queue_depth = Gauge(
            "skyform_gateway_queue_depth", "Requests waiting for a runner.", ["app"], registry=r
        )
        self.in_progress = Gauge(
            "skyform_gateway_in_progress", "Requests running on a runner now.", ["app"], registry=r
        )
        self.runners = Gauge(
            "skyform_gateway_runners", "Runners by state.", ["app", "state"], registry=r
        )
        self.submitted = Counter(
            "skyform_gateway_requests_submitted_total",
            "Requests accepted.",
            ["app", "mode"],
            registry=r,
        )
        self.requests = Counter(
            "skyform_gateway_requests_total",
            "Completed requests by outcome.",
            ["app", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "skyform_gateway_retries_total",
            "Attempts retried on a runner, by reason.",
            ["app", "reason"],
            registry=r,
        )
        self.runner_starts = Counter(
            "skyform_gateway_runner_starts_total",
            "Runner start-ups by result.",
            ["app", "result"],
            registry=r,
        )
        self.queue_seconds = Histogram(
            "skyform_gateway_queue_seconds",
            "Seconds from acceptance to first dispatch to a runner.",
            ["app"],
            registry=r,
            buckets=DEFAULT_BUCKETS,
        )

    def render(
        self,
        queue_depth: dict[str, int],
        in_progress: dict[str, int],
        runners: Iterable[tuple[str, str, int]],
    ) -> str:
        """Prometheus text; `runners` yields (app, state, count)."""
        for metric, values in ((self.queue_depth, queue_depth), (self.in_progress, in_progress)):
            metric.clear()  # an app that is gone has no series left
            for app, n in sorted(values.items()):
                metric.labels(app).set(n)
        self.runners.clear()
        for app, state, n in sorted(runners):
            self.runners.labels(app, state).set(n)
        return render(self.registry).decode()
