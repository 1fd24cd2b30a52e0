"""Prometheus metrics of the runner and the gateway, through `prometheus_client`.

Why a module of its own: one place decides how skyform's series are exposed.

- Each owner (a runner, a gateway) keeps its own `CollectorRegistry`, never
  prometheus_client's global one: app code on a runner may register metrics
  of its own there, and a test process builds many gateways.
- The text is the Prometheus format 0.0.4 (`CONTENT_TYPE`), what scrapers
  have always read here; prometheus_client's newer default content type is
  not announced.
- The `*_created` series prometheus_client adds beside each counter and
  histogram are left out when rendering (per registry, not through its
  process-wide switch, which would change a user's own metrics too), so
  `/metrics` carries the same series as ever.

    registry = CollectorRegistry()
    requests = Counter("app_requests_total", "Requests served.", ["path", "status"],
                       registry=registry)
    requests.labels("/", "200").inc()
    print(render(registry).decode())
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request durations from a few milliseconds up to the longest request timeout.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


def render(registry: CollectorRegistry) -> bytes:
    """The registry's series in the Prometheus text format, without `*_created` series."""
    return generate_latest(_WithoutCreated(registry))


class _WithoutCreated(Collector):
    """A view of a registry whose metric families lack their `<name>_created` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            created = metric.name + "_created"
            metric.samples = [s for s in metric.samples if s.name != created]
            yield metric
