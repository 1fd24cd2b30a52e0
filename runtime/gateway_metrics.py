"""The gateway's metrics, served in Prometheus text format at `/-/metrics`.

Counters are incremented where things happen (outcomes, retries, time in
queue); gauges (queue depth, runners by state) are filled from the scheduler
at scrape time, so they can never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Iterable

from skyform.runtime.gateway_model import RunnerState
from skyform.runtime.metrics import Registry

RUNNER_STATES = tuple(RunnerState)


class GatewayMetrics:
    """Every series the gateway exports, on one registry."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.queue_depth = r.gauge(
            "skyform_gateway_queue_depth", "Requests waiting for a runner.", ["app"]
        )
        self.in_progress = r.gauge(
            "skyform_gateway_in_progress", "Requests running on a runner now.", ["app"]
        )
        self.runners = r.gauge("skyform_gateway_runners", "Runners by state.", ["app", "state"])
        self.submitted = r.counter(
            "skyform_gateway_requests_submitted_total", "Requests accepted.", ["app", "mode"]
        )
        self.requests = r.counter(
            "skyform_gateway_requests_total", "Completed requests by outcome.", ["app", "outcome"]
        )
        self.retries = r.counter(
            "skyform_gateway_retries_total",
            "Attempts retried on a runner, by reason.",
            ["app", "reason"],
        )
        self.runner_starts = r.counter(
            "skyform_gateway_runner_starts_total", "Runner start-ups by result.", ["app", "result"]
        )
        self.queue_seconds = r.histogram(
            "skyform_gateway_queue_seconds",
            "Seconds from acceptance to first dispatch to a runner.",
            ["app"],
        )

    def render(
        self,
        queue_depth: dict[str, int],
        in_progress: dict[str, int],
        runners: Iterable[tuple[str, str, int]],
    ) -> str:
        """Prometheus text; `runners` yields (app, state, count)."""
        for metric, values in ((self.queue_depth, queue_depth), (self.in_progress, in_progress)):
            for key in list(metric._children):
                if key[0] not in values:
                    metric.remove(*key)
            for app, n in values.items():
                metric.labels(app).set(n)
        for key in list(self.runners._children):
            self.runners.remove(*key)
        for app, state, n in runners:
            self.runners.labels(app, state).set(n)
        return self.registry.render()
