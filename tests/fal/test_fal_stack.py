"""A user's path, end to end: `skyform apply` with `tls: auto`, then fal-client by env alone.

The four variables come from `skyform output` (host:port, `api_key`, `ca_file`);
`gateway.webhook_hosts` reaches the gateway through apply, so a webhook to a
listed receiver is delivered, signed with the stack's key, and an unlisted
host is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.cli import cleanup, sky, write_project
from support.fal import WebhookReceiver, run_fal
from support.waiting import wait_for

from skyform.engine.keys import webhook_key
from skyform.runtime.webhooks import SIGNATURE_HEADER, verify_signature

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    apps = {"hello": {"app": "app.py::Hello", "min_runners": 1}}  # private under apply
    root = write_project(tmp_path_factory.mktemp("falstack") / "proj", apps)
    text = (root / "skyform.yaml").read_text()
    text = text.replace("gateway: {port:", "gateway: {tls: auto, webhook_hosts: [127.0.0.1], port:")
    (root / "skyform.yaml").write_text(text)
    try:
        done = sky(root, "apply", "--auto-approve")
        assert done.returncode == 0, done.stdout + done.stderr
        yield root
    finally:
        cleanup(root)


def _fal_env(root: Path) -> dict[str, str]:
    def output(name: str) -> str:
        done = sky(root, "output", "--raw", name)
        assert done.returncode == 0, done.stderr
        return done.stdout

    netloc = urlsplit(output("gateway_url")).netloc
    return {
        "FAL_RUN_HOST": netloc,
        "FAL_QUEUE_RUN_HOST": f"{netloc}/queue",
        "FAL_KEY": output("api_key"),
        "SSL_CERT_FILE": output("ca_file"),
    }


def test_fal_client_calls_an_applied_tls_stack(root: Path) -> None:
    env = _fal_env(root)
    assert json.loads(sky(root, "output", "--json").stdout)["gateway_url"].startswith("https://")
    assert run_fal(env, "run", "demo/hello", '{"name": "fal"}') == {
        "message": "Hello, fal!",
        "token": None,
    }
    with WebhookReceiver() as receiver:
        request_id = run_fal(env, "webhook", "demo/hello", receiver.url)["request_id"]
        wait_for(lambda: receiver.received, 60, "the webhook")
        hit = receiver.received[0]
        body = json.loads(hit["body"])
        assert body["request_id"] == request_id and body["status"] == "OK"
        assert body["payload"]["message"] == "Hello, world!"
        keys = json.loads((root / ".skyform" / "demo.keys.json").read_text())
        key = webhook_key(keys).encode()
        headers = {k.lower(): v for k, v in hit["headers"].items()}
        assert verify_signature(key, hit["body"], headers[SIGNATURE_HEADER])
    refused = run_fal(env, "submit_error", "demo/hello", "http://localhost:9/hook")
    assert refused["status"] == 400 and refused["error_type"] == "webhook_refused"
