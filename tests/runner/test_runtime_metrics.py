"""How skyform exposes Prometheus metrics (`skyform.runtime.metrics`, over prometheus_client).

The series, types and labels the runner and the gateway export are read by
the reference parser; the `*_created` series prometheus_client adds are left
out per registry, without touching its process-wide switch.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from skyform.runtime.gateway_metrics import GatewayMetrics
from skyform.runtime.metrics import CONTENT_TYPE, render


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_counter_gauge_histogram_render_in_the_text_format() -> None:
    registry = CollectorRegistry()
    requests = Counter("reqs_total", "Requests.", ["path", "status"], registry=registry)
    requests.labels("/", "200").inc()
    requests.labels("/", "200").inc(2)
    requests.labels('/a"b\\c\nd', "500").inc()
    Gauge("live", "Read at scrape time.", registry=registry).set_function(lambda: 7)
    latency = Histogram("lat_seconds", "Latency.", ["path"], registry=registry, buckets=[0.1, 1])
    for value in (0.05, 0.1, 0.5, 3):
        latency.labels("/").observe(value)
    Counter("never_total", "Never incremented.", registry=registry)

    text = render(registry).decode()
    lines = text.splitlines()
    assert "# TYPE reqs_total counter" in lines
    assert 'reqs_total{path="/",status="200"} 3.0' in lines
    assert 'reqs_total{path="/a\\"b\\\\c\\nd",status="500"} 1.0' in lines
    assert "live 7.0" in lines
    assert 'lat_seconds_bucket{le="0.1",path="/"} 2.0' in lines  # 0.1 itself is "<= 0.1"
    assert 'lat_seconds_bucket{le="+Inf",path="/"} 4.0' in lines
    assert 'lat_seconds_sum{path="/"} 3.65' in lines
    assert "never_total 0.0" in lines  # an unlabelled series exists before its first use
    assert "_created" not in text

    families = _families(text)
    assert families["reqs"].type == "counter"
    assert families["lat_seconds"].type == "histogram"
    assert families["live"].samples[0].value == 7


def test_created_series_are_dropped_only_from_our_registries() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    Counter("a_total", "A.", registry=ours).inc()
    Counter("b_total", "B.", registry=theirs).inc()
    assert "a_created" not in render(ours).decode()
    # A user's own registry (or prometheus_client's global one) keeps its series.
    from prometheus_client import generate_latest

    assert "b_created" in generate_latest(theirs).decode()


def test_gateway_series_names_types_and_labels() -> None:
    metrics = GatewayMetrics()
    metrics.submitted.labels("echo", "sync").inc()
    metrics.requests.labels("echo", "success").inc()
    metrics.retries.labels("echo", "504").inc()
    metrics.runner_starts.labels("echo", "ready").inc()
    metrics.queue_seconds.labels("echo").observe(0.002)
    text = metrics.render({"echo": 2}, {"echo": 1}, [("echo", "ready", 1)])
    families = _families(text)
    kinds = {name: f.type for name, f in families.items()}
    assert kinds == {
        "skyform_gateway_queue_depth": "gauge",
        "skyform_gateway_in_progress": "gauge",
        "skyform_gateway_runners": "gauge",
        "skyform_gateway_requests_submitted": "counter",
        "skyform_gateway_requests": "counter",
        "skyform_gateway_retries": "counter",
        "skyform_gateway_runner_starts": "counter",
        "skyform_gateway_queue_seconds": "histogram",
    }
    assert 'skyform_gateway_queue_depth{app="echo"} 2.0' in text
    assert 'skyform_gateway_runners{app="echo",state="ready"} 1.0' in text
    assert 'skyform_gateway_retries_total{app="echo",reason="504"} 1.0' in text
    # Scrape-time gauges follow the scheduler: an app that is gone loses its series.
    text = metrics.render({}, {}, [])
    assert 'app="echo"} 2.0' not in text and 'state="ready"' not in text
    assert 'skyform_gateway_requests_total{app="echo",outcome="success"} 1.0' in text


def test_content_type_is_the_text_format_scrapers_read() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
