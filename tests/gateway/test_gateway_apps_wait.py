"""`GET /-/apps?wait=S` with `If-None-Match`: the long poll `apply` waits for readiness on.

The answer carries an ETag; given the ETag a caller already has, the gateway
answers once its apps or runners differ from it (or after `wait` seconds,
with the same ETag). Bad `wait` values are one 400 each.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from support.gateway import ADMIN, GatewayProc

from skyform.engine.admin_client import GatewayClient

pytestmark = pytest.mark.slow


def _apps(gateway: GatewayProc, tag: str, wait: str) -> httpx.Response:
    headers = {**gateway.admin_headers, "If-None-Match": tag}
    return gateway.http.get("/-/apps", params={"wait": wait}, headers=headers)


def test_a_waiting_list_answers_with_the_change_it_waited_for(
    gateway: GatewayProc, bundles
) -> None:
    first = gateway.admin("GET", "/-/apps")
    tag = first.headers["etag"]
    assert first.json() == {"apps": []} and tag.startswith('"')
    # Nothing changes: the answer comes after `wait`, with the same list and ETag.
    same = _apps(gateway, tag, "0.3")
    assert same.status_code == 200 and same.headers["etag"] == tag and same.json() == first.json()

    answers: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: answers.append(_apps(gateway, tag, "10")))
    waiter.start()
    try:
        gateway.register("echo", bundles["warm"], auth="public")  # min_runners 1: one starts
    finally:
        waiter.join(30)
    assert answers, "the waiting list never answered"
    changed = answers[0]
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert [a["name"] for a in changed.json()["apps"]] == ["echo"]

    # Through the CLI's client: each answer differs from the one before, up to a ready runner.
    with GatewayClient(gateway.url, ADMIN) as client:
        apps, seen = client.watch_apps(None, 0.0)
        for _ in range(50):
            if any(r["state"] == "ready" for r in apps["echo"]["runners"]):
                break
            apps, now = client.watch_apps(seen, 10.0)
            assert now is not None
            seen = now
        assert [r["state"] for r in apps["echo"]["runners"]] == ["ready"]


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf"])
def test_a_bad_wait_is_one_clear_400(gateway: GatewayProc, wait: str) -> None:
    response = gateway.admin("GET", "/-/apps", params={"wait": wait})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"wait must be a number of seconds (0 or more), got {wait!r}"
    )
    assert gateway.admin("GET", "/-/apps").json() == {"apps": []}


def test_a_gateway_that_cannot_wait_is_told_apart() -> None:
    """An older gateway answers `/-/apps` at once and without an ETag: `watch_apps` says so
    (None), which is how `apply` knows to pace its questions instead of asking in a loop."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class OldGateway(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"apps": [{"name": "a", "runners": []}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OldGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with GatewayClient(url, ADMIN) as client:
            apps, seen = client.watch_apps('"some-etag"', 5.0)
        assert list(apps) == ["a"] and seen is None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
