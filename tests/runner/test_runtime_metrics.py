"""The Prometheus text registry (`skyform.runtime.metrics`)."""

from __future__ import annotations

import pytest

from skyform.runtime.metrics import Registry


def test_counter_gauge_histogram_render() -> None:
    registry = Registry()
    requests = registry.counter("reqs_total", "Requests.", ["path", "status"])
    requests.labels("/", "200").inc()
    requests.labels("/", "200").inc(2)
    requests.labels('/a"b\\c\nd', "500").inc()
    up = registry.gauge("up", "Up.\nSecond line")
    up.set(1)
    live = registry.gauge("live", "Read at scrape time.")
    live.set_function(lambda: 7)
    latency = registry.histogram("lat_seconds", "Latency.", ["path"], buckets=[0.1, 1])
    for value in (0.05, 0.1, 0.5, 3):
        latency.labels("/").observe(value)

    text = registry.render()
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "# TYPE reqs_total counter" in lines
    assert 'reqs_total{path="/",status="200"} 3' in lines
    assert 'reqs_total{path="/a\\"b\\\\c\\nd",status="500"} 1' in lines
    assert "# HELP up Up.\\nSecond line" in lines
    assert "up 1" in lines
    assert "live 7" in lines
    assert 'lat_seconds_bucket{path="/",le="0.1"} 2' in lines  # 0.1 itself is "<= 0.1"
    assert 'lat_seconds_bucket{path="/",le="1"} 3' in lines
    assert 'lat_seconds_bucket{path="/",le="+Inf"} 4' in lines
    assert 'lat_seconds_sum{path="/"} 3.65' in lines
    assert 'lat_seconds_count{path="/"} 4' in lines


def test_unlabelled_metric_renders_zero_before_use() -> None:
    registry = Registry()
    registry.counter("never_total", "Never incremented.")
    assert "never_total 0" in registry.render().splitlines()


def test_render_parses_with_the_reference_parser() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    registry = Registry()
    registry.counter("c_total", "C.", ["k"]).labels("v").inc(5)
    registry.histogram("h_seconds", "H.").observe(0.2)
    families = {f.name: f for f in parser.text_string_to_metric_families(registry.render())}
    assert families["c"].samples[0].value == 5
    assert families["h_seconds"].type == "histogram"


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.counter("bad name", "x"),
        lambda r: r.counter("ok", "x", ["1label"]),
        lambda r: r.histogram("h", "x", ["le"]),
        lambda r: r.histogram("h", "x", buckets=[]),
    ],
)
def test_invalid_definitions_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make(Registry())


def test_wrong_label_count_duplicate_name_and_negative_counter() -> None:
    registry = Registry()
    counter = registry.counter("x_total", "X.", ["a"])
    with pytest.raises(ValueError, match="takes 1 label"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="already registered"):
        registry.gauge("x_total", "again")
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("a").inc(-1)
