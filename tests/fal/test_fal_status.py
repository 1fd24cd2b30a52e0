"""fal's queue status on the wire: 202 until COMPLETED, logs, metrics, the SSE status stream.

Plain HTTPS calls (httpx, verified against the test CA), so the exact status
codes and bodies that fal-client parses are checked; bad fal headers are one
400 that queues nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from support.fal import STACK, TLSGateway, run_fal
from support.gateway import API_KEY
from support.waiting import wait_for

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Key {API_KEY}"}
QUEUE = f"/queue/{STACK}/echo"


def _submit(gw: TLSGateway, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = gw.http.post(QUEUE, json=body, headers={**AUTH, **headers})
    assert response.status_code == 202, response.text
    return response.json()


def _submitted(gw: TLSGateway) -> float:
    text = gw.admin("GET", "/-/metrics").text
    found = re.findall(
        r'skyform_gateway_requests_submitted_total\{app="echo",mode="\w+"\} (\S+)', text
    )
    return sum(float(v) for v in found)


def test_status_codes_logs_and_metrics(fal_gateway: TLSGateway) -> None:
    gw = fal_gateway
    slow = _submit(gw, {"prompt": "slow", "sleep": 1.5})
    queued = _submit(gw, {"prompt": "second"})
    early = gw.http.get(queued["status_url"], params={"logs": "1"}, headers=AUTH)
    assert early.status_code == 202
    body = early.json()
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS") and body["logs"] == []
    if body["status"] == "IN_QUEUE":
        assert body["queue_position"] >= 0

    def done() -> Any:
        response = gw.http.get(queued["status_url"], params={"logs": "true"}, headers=AUTH)
        return response if response.json()["status"] == "COMPLETED" else None

    final = wait_for(done, 60, "the second request")
    assert final.status_code == 200
    status = final.json()
    assert [line["message"] for line in status["logs"]] == ["printing second", "logging second"]
    assert set(status["logs"][0]) == {"message", "level", "timestamp", "source"}
    assert status["metrics"]["inference_time"] >= 0
    for flag in ("0", "false"):
        plain = gw.http.get(queued["status_url"], params={"logs": flag}, headers=AUTH).json()
        assert plain["logs"] == []
    # Plain app ids (not stack-qualified) answer the same, with their own URLs.
    plain_url = f"/queue/echo/requests/{slow['request_id']}/status"
    same = wait_for(
        lambda: (r := gw.http.get(plain_url, headers=AUTH)).status_code == 200 and r, 30, "slow"
    )
    assert same.json()["status_url"].endswith(plain_url)
    assert same.json()["logs"] == []


def test_in_progress_status_has_the_lines_so_far(fal_gateway: TLSGateway) -> None:
    gw = fal_gateway
    running = _submit(gw, {"prompt": "live", "sleep": 2.0})

    def in_progress_with_logs() -> Any:
        response = gw.http.get(running["status_url"], params={"logs": "1"}, headers=AUTH)
        body = response.json()
        return body if body["status"] == "IN_PROGRESS" and body["logs"] else None

    body = wait_for(in_progress_with_logs, 30, "IN_PROGRESS with logs")
    assert [line["message"] for line in body["logs"]] == ["printing live", "logging live"]
    # Without ?logs the list is there and empty.
    quiet = gw.http.get(running["status_url"], headers=AUTH).json()
    assert quiet["logs"] == [] or quiet["status"] == "COMPLETED"


def test_status_stream_sends_each_change_until_completed(fal_gateway: TLSGateway) -> None:
    gw = fal_gateway
    hold = _submit(gw, {"prompt": "hold", "sleep": 1.0})
    watched = _submit(gw, {"prompt": "watched", "sleep": 0.3})
    events = []
    with gw.http.stream(
        "GET", watched["status_url"] + "/stream", params={"logs": "1"}, headers=AUTH
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "COMPLETED" and statuses.count("COMPLETED") == 1
    assert "IN_PROGRESS" in statuses and all("logs" in e for e in events)
    assert [line["message"] for line in events[-1]["logs"]] == [
        "printing watched",
        "logging watched",
    ]
    assert len(events) == len({json.dumps(e) for e in events})  # only changes are sent
    # A finished request streams one event and ends.
    with gw.http.stream("GET", hold["status_url"] + "/stream", headers=AUTH) as again:
        lines = [ln for ln in again.iter_lines() if ln.startswith("data: ")]
    assert len(lines) == 1 and json.loads(lines[0][6:])["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Fal-Request-Timeout": "soon"}, "X-Fal-Request-Timeout must be a number"),
        ({"X-Fal-Request-Timeout": "-3"}, "X-Fal-Request-Timeout must be a positive number"),
        ({"X-Fal-Runner-Hint": "h" * 300}, "X-Fal-Runner-Hint is longer than 256"),
    ],
)
def test_bad_fal_headers_are_one_400_and_queue_nothing(
    fal_gateway: TLSGateway, headers: dict[str, str], message: str
) -> None:
    before = _submitted(fal_gateway)
    for path in (QUEUE, f"/{STACK}/echo"):
        response = fal_gateway.http.post(path, json={"prompt": "x"}, headers={**AUTH, **headers})
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == message or response.json()["detail"].startswith(message)
        assert response.json()["error_type"] == "invalid_header"
    assert _submitted(fal_gateway) == before


def test_unknown_request_and_app_ids(fal_gateway: TLSGateway) -> None:
    missing = fal_gateway.http.get(f"{QUEUE}/requests/nope/status", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error_type"] == "request_not_found"
    wrong_app = fal_gateway.http.post(f"/{STACK}/nope", json={}, headers=AUTH)
    assert wrong_app.status_code == 404 and wrong_app.json()["error_type"] == "app_not_found"


def test_hint_prefers_the_runner_that_served_it(
    fresh_gateway: Any, fal_bundles: dict[str, Any]
) -> None:
    """Two runners: after one request per hint, each hint keeps landing on its own runner."""
    gw = fresh_gateway().start()
    gw.register("echo", fal_bundles["pair"], auth="private")
    wait_for(lambda: len(gw.runners("echo")) == 2, 60, "two ready runners")
    # One runner each: "a" takes the first free runner, "b" arrives while it is busy.
    first = _submit(gw, {"prompt": "a", "sleep": 1.0}, **{"X-Fal-Runner-Hint": "a"})
    wait_for(lambda: gw.app("echo")["in_progress"] == 1, 30, "a to start")
    second = _submit(gw, {"prompt": "b", "sleep": 0.2}, **{"X-Fal-Runner-Hint": "b"})
    results = {}
    for name, sub in (("a", first), ("b", second)):
        wait_for(
            lambda s=sub: gw.http.get(s["status_url"], headers=AUTH).status_code == 200,
            30,
            name,
        )
        results[name] = gw.http.get(sub["response_url"], headers=AUTH).json()["pid"]
    assert results["a"] != results["b"]
    # One request at a time through the real fal-client: with both runners idle,
    # each hint goes back to its own runner (without hints, all would go to one).
    seen = run_fal(gw, "hints", f"{STACK}/echo", "b", "a", "b", "a", "b")["pids"]
    assert [pid for _hint, pid in seen] == [results[h] for h, _pid in seen]
