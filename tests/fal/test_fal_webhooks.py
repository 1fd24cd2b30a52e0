"""`?fal_webhook=`: fal's payload, signed, retried, durable across a restart, and no SSRF.

Receivers are real HTTP servers on 127.0.0.1; the module's gateway lists
127.0.0.1 in its webhook hosts (SKYFORM_WEBHOOK_HOSTS, which `apply` sets from
`gateway.webhook_hosts`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.fal import STACK, WEBHOOK_KEY, TLSGateway, WebhookReceiver, run_fal
from support.gateway import API_KEY
from support.waiting import wait_for

from skyform.providers.local import free_port
from skyform.runtime.webhooks import SIGNATURE_HEADER, sign, verify_signature

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Key {API_KEY}"}
APP_ID = f"{STACK}/echo"


def _body(hit: dict[str, Any]) -> dict[str, Any]:
    return json.loads(hit["body"])


def _signed(hit: dict[str, Any]) -> bool:
    headers = {k.lower(): v for k, v in hit["headers"].items()}
    return verify_signature(WEBHOOK_KEY.encode(), hit["body"], headers[SIGNATURE_HEADER])


def test_completion_posts_fal_payload_signed(fal_gateway: TLSGateway) -> None:
    with WebhookReceiver() as receiver:
        request_id = run_fal(fal_gateway, "webhook", APP_ID, receiver.url)["request_id"]
        wait_for(lambda: receiver.received, 60, "the webhook")
        hit = receiver.received[0]
        assert hit["path"] == "/hook"
        assert _body(hit) == {
            "request_id": request_id,
            "gateway_request_id": request_id,
            "status": "OK",
            "payload": {"text": "HOOKED", "pid": _body(hit)["payload"]["pid"]},
            "error": None,
        }
        assert _signed(hit)
        # The same body under another key, or changed, does not verify.
        header = {k.lower(): v for k, v in hit["headers"].items()}[SIGNATURE_HEADER]
        assert not verify_signature(b"other key", hit["body"], header)
        assert not verify_signature(WEBHOOK_KEY.encode(), hit["body"] + b" ", header)
        assert not verify_signature(
            WEBHOOK_KEY.encode(), hit["body"], sign(WEBHOOK_KEY.encode(), hit["body"], 1)
        )  # too old
    # The endpoint never saw fal_webhook in its query.
    assert len(receiver.received) == 1


def test_failed_request_posts_error_and_retries_until_accepted(fal_gateway: TLSGateway) -> None:
    with WebhookReceiver(codes=[500, 503]) as receiver:
        request_id = run_fal(fal_gateway, "webhook", APP_ID, receiver.url, "/fail")["request_id"]
        wait_for(lambda: len(receiver.received) >= 3, 60, "three webhook attempts")
        bodies = [_body(h) for h in receiver.received]
        assert all(b == bodies[0] for b in bodies) and all(map(_signed, receiver.received))
        assert bodies[0]["request_id"] == request_id and bodies[0]["status"] == "ERROR"
        assert "internal error in fail" in bodies[0]["error"]
        assert "detail" in bodies[0]["payload"]
    assert len(receiver.received) == 3  # accepted on the third: no more


def test_unlisted_host_is_refused_at_submit(fal_gateway: TLSGateway) -> None:
    before = fal_gateway.app("echo")["queue_depth"]
    error = run_fal(fal_gateway, "submit_error", APP_ID, f"http://localhost:{free_port()}/x")
    assert error["status"] == 400 and error["error_type"] == "webhook_refused"
    assert "'localhost' is not in gateway.webhook_hosts" in error["message"]
    assert fal_gateway.app("echo")["queue_depth"] == before


def test_without_a_list_private_and_loopback_addresses_are_refused(
    fresh_gateway: Any, fal_bundles: dict[str, Any]
) -> None:
    gw = fresh_gateway().start()
    gw.register("echo", fal_bundles["cold"], auth="private")
    for url, message in [
        ("http://127.0.0.1:9/hook", "resolves to 127.0.0.1, a private or loopback address"),
        ("http://localhost:9/hook", "a private or loopback address"),
        ("http://[::1]:9/hook", "resolves to ::1"),
        ("http://10.1.2.3/hook", "resolves to 10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data", "resolves to 169.254.169.254"),
        ("ftp://example.com/x", "must be an http:// or https:// URL"),
        ("http://user:pw@example.com/x", "must not carry credentials"),
        ("http://no-such-host.invalid/x", "does not resolve"),
    ]:
        response = gw.http.post(
            f"/queue/{APP_ID}", params={"fal_webhook": url}, json={"prompt": "x"}, headers=AUTH
        )
        assert response.status_code == 400, (url, response.text)
        assert message in response.json()["detail"], (url, response.json())
    # Nothing was queued, so no runner was started for it.
    assert gw.app("echo")["queue_depth"] == 0 and gw.app("echo")["runners"] == []


def test_webhook_survives_a_gateway_restart(
    fresh_gateway: Any, fal_bundles: dict[str, Any]
) -> None:
    """Completed while the receiver is down; the gateway restarts; then it is delivered."""
    gw = fresh_gateway(SKYFORM_WEBHOOK_HOSTS="127.0.0.1").start()
    gw.register("echo", fal_bundles["echo"], auth="private")
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    request_id = run_fal(gw, "webhook", APP_ID, url)["request_id"]
    status_url = f"/queue/{APP_ID}/requests/{request_id}/status"
    wait_for(lambda: gw.http.get(status_url, headers=AUTH).status_code == 200, 60, "completion")
    wait_for(lambda: "webhook for request" in gw.log(), 30, "a failed delivery attempt")
    assert gw.stop() == 0
    with WebhookReceiver(port=port) as receiver:
        gw.start()
        wait_for(lambda: receiver.received, 60, "the webhook after the restart")
        assert _body(receiver.received[0])["request_id"] == request_id
        assert _signed(receiver.received[0])
