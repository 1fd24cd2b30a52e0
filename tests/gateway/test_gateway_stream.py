"""Streaming endpoints end to end: a real gateway, a real runner, a client reading incrementally.

No timing: each test proves "arrived before the handler produced the next
item" by gating the handler on a file the test creates only after it has
read the previous event (see apps/gw_stream.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from support.gateway import APPS, BUNDLE_KEY, GatewayProc
from support.waiting import wait_for

from skyform.bundle import build_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(shared_gateway: GatewayProc) -> Iterator[GatewayProc]:
    bundle = build_bundle(str(APPS / "gw_stream.py") + "::Streamer", APPS, BUNDLE_KEY)
    shared_gateway.register("stream", bundle, auth="public")
    yield shared_gateway


def _events(lines: Iterator[str]) -> Iterator[tuple[str, object]]:
    """(event name, parsed data) for each SSE event read from `lines`, as it arrives."""
    name = "message"
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:])
            name = "message"


def _go(gw: GatewayProc, key: str, i: int) -> None:
    (gw.count_dir / f"{key}.go{i}").write_text("")


def _ready_pids(gw: GatewayProc) -> list[int]:
    return [r["pid"] for r in gw.runners("stream")]


def _runner_saw_leave(gw: GatewayProc, path: str) -> bool:
    """Whether the runner's log says a caller of `path` went away (the admin logs API)."""
    logs = gw.admin("GET", "/-/apps/stream/logs", params={"tail": 200}).text
    return f"] {path[1:]}: the caller went away" in logs  # "] ": after the request id


def _in_flight(gw: GatewayProc) -> int:
    return sum(r["in_flight"] for r in gw.runners("stream"))


@pytest.mark.parametrize("path", ["/tokens", "/atokens"])
def test_each_event_arrives_while_the_handler_waits_for_the_next(
    gw: GatewayProc, path: str
) -> None:
    key = f"order{path[1:]}"
    body = {"key": key, "n": 3, "gate": True}
    with gw.http.stream("POST", f"/stream{path}", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-skyform-request-id"]
        events = _events(response.iter_lines())
        # The handler is blocked on go1: event 0 can only be here if it was forwarded at once.
        name, first = next(events)
        assert not (gw.count_dir / f"{key}.go1").exists()
        assert (name, first) == ("message", {"i": 0, "token": f"{path[1]}0"})
        _go(gw, key, 1)
        assert next(events)[1]["i"] == 1
        _go(gw, key, 2)
        assert next(events)[1]["i"] == 2
        assert list(events) == []
    wait_for(lambda: _in_flight(gw) == 0, 10, "the runner slot to be free")


@pytest.mark.parametrize("path", ["/tokens", "/atokens"])
def test_a_client_that_leaves_reaches_the_handler(gw: GatewayProc, path: str) -> None:
    key = f"leave{path[1:]}"
    with gw.http.stream("POST", f"/stream{path}", json={"key": key, "n": 5, "gate": True}) as r:
        events = _events(r.iter_lines())
        assert next(events)[1]["i"] == 0
        assert _in_flight(gw) == 1  # the open stream holds its slot
    # Disconnected. Once the runner has seen it (it logs so), the handler learns
    # it at its next yield (sync) or at once (async).
    wait_for(lambda: _runner_saw_leave(gw, path), 20, "the runner to see the disconnect")
    _go(gw, key, 1)
    wait_for((gw.count_dir / f"{key}.closed").exists, 20, "the handler to see the disconnect")
    wait_for(lambda: _in_flight(gw) == 0, 10, "the runner slot to be free")
    assert not (gw.count_dir / f"{key}.go2").exists()


def test_a_caller_that_does_not_read_holds_the_handler_back(gw: GatewayProc) -> None:
    total = 2000  # 128 MiB if nothing held the handler back
    progress = gw.count_dir / "slow.progress"
    with gw.http.stream("POST", "/stream/big", json={"key": "slow", "n": total}) as response:
        events = _events(response.iter_lines())  # kept: dropping it would close the stream
        assert next(events)[1]["i"] == 0  # type: ignore[index]
        # Stop reading. The handler runs on until the buffers between (sockets, one
        # chunk per hop) are full, then waits: its progress stops moving.
        last = -1

        def settled() -> bool:
            nonlocal last
            time.sleep(1.0)  # unchanged for a second: the handler waits
            now = int(progress.read_text())
            still, last = now == last, now
            return still

        wait_for(settled, 60, "the handler to be held back")
        assert last < total / 4, f"the handler ran ahead to {last} of {total}"
    wait_for(lambda: _in_flight(gw) == 0, 20, "the left stream to free its slot")


def test_a_failure_after_the_first_event_ends_the_stream_with_an_error_event(
    gw: GatewayProc,
) -> None:
    body = {"key": "midfail", "n": 3, "fail_at": 1}
    with gw.http.stream("POST", "/stream/tokens", json=body) as response:
        assert response.status_code == 200
        events = list(_events(response.iter_lines()))
    assert events[0] == ("message", {"i": 0, "token": "t0"})
    name, error = events[1]
    assert name == "error" and len(events) == 2
    assert error["error_type"] == "internal_error"  # type: ignore[index]
    assert "ValueError" in error["detail"]  # type: ignore[index]
    # The runner is fine: the next stream works.
    assert gw.http.post("/stream/tokens", json={"key": "after", "n": 1}).status_code == 200


def test_a_failure_before_the_first_event_is_a_plain_http_error(gw: GatewayProc) -> None:
    response = gw.http.post("/stream/refuse", json={"key": "x"})
    assert response.status_code == 400
    assert response.json()["detail"] == "refused x"


def test_a_streaming_response_passes_through_as_it_is(gw: GatewayProc) -> None:
    with gw.http.stream("POST", "/stream/raw", params={"key": "raw", "n": 2}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-raw"] == "yes"
        chunks = response.iter_raw()
        assert next(chunks) == b"chunk0;"
        _go(gw, "raw", 1)
        assert b"".join(chunks) == b"chunk1;"


def test_queue_calls_store_the_whole_stream(gw: GatewayProc) -> None:
    submitted = gw.submit("stream", "/tokens", {"key": "queued", "n": 3})
    status = gw.wait_done(submitted)
    assert status["response_status"] == 200
    result = gw.http.get(submitted["response_url"])
    assert result.headers["content-type"] == "application/json"
    assert result.json() == {"events": [{"i": i, "token": f"t{i}"} for i in range(3)]}
    failed = gw.submit("stream", "/tokens", {"key": "queuedfail", "n": 3, "fail_at": 2})
    gw.wait_done(failed)
    stored = gw.http.get(failed["response_url"]).json()
    assert [e["i"] for e in stored["events"]] == [0, 1]
    assert stored["error"]["error_type"] == "internal_error"


def test_fastapi_native_signatures_work_through_the_gateway(gw: GatewayProc) -> None:
    up = gw.http.post(
        "/stream/upload", files={"f": ("a.txt", b"hello world", "text/plain")}, data={"note": "n1"}
    )
    assert up.status_code == 200, up.text
    assert up.json() == {"filename": "a.txt", "size": 11, "note": "n1", "head": "hello"}
    item = gw.http.post("/stream/items/7", params={"q": "yes"}, json={"name": "box"})
    assert item.json() == {"item_id": 7, "name": "box", "size": 1, "q": "yes"}
    who = gw.http.get("/stream/whoami")
    assert who.text == "path=/whoami" and who.headers["content-type"].startswith("text/plain")
    # The queue takes multipart bodies too.
    submitted = gw.http.post(
        "/queue/stream/upload", files={"f": ("b.bin", b"\x00\x01abc", "application/octet-stream")}
    )
    assert submitted.status_code == 202, submitted.text
    gw.wait_done(submitted.json())
    assert gw.http.get(submitted.json()["response_url"]).json()["size"] == 5


def test_the_bundle_schema_describes_each_endpoint(gw: GatewayProc) -> None:
    schema = gw.http.get("/stream/openapi.json").json()
    paths = schema["paths"]
    tokens = paths["/tokens"]["post"]
    assert tokens["x-skyform-stream"] is True
    assert "text/event-stream" in tokens["responses"]["200"]["content"]
    upload = paths["/upload"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    item = paths["/items/{item_id}"]["post"]
    assert {p["name"]: p["in"] for p in item["parameters"]} == {"item_id": "path", "q": "query"}
    assert "/ws" not in paths


def test_a_stream_failing_before_its_first_byte_is_retried_on_a_fresh_runner(
    gw: GatewayProc,
) -> None:
    before = _ready_pids(gw)
    response = gw.http.post("/stream/flaky", json={"key": "flaky"})
    assert response.status_code == 200, response.text
    (_, event), *_rest = list(_events(iter(response.text.splitlines())))
    assert event["calls"] == 2  # type: ignore[index]
    assert event["pid"] not in before  # type: ignore[index]  # the 503 ended the first runner


def test_a_runner_dying_mid_stream_ends_it_with_an_error_event(gw: GatewayProc) -> None:
    with gw.http.stream("POST", "/stream/die", json={"key": "die"}) as response:
        events = _events(response.iter_lines())
        pid = next(events)[1]["pid"]  # type: ignore[index]
        _go(gw, "die", 1)
        name, error = next(events)
        assert list(events) == []
    assert name == "error" and error["error_type"] == "stream_broken"  # type: ignore[index]
    wait_for(lambda: pid not in _ready_pids(gw), 30, "the dead runner to be dropped")
    # Not retried (bytes had been sent): the next request gets a fresh runner.
    assert gw.http.post("/stream/tokens", json={"key": "afterdie", "n": 1}).status_code == 200
