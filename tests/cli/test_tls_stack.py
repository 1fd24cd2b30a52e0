"""A stack with `tls: auto` on the local provider, end to end through the real CLI.

apply makes the stack CA and certificates, the gateway serves https and its
runners serve TLS too (`runner_tls: true`), outputs carry https URLs and
`ca_file`, every CLI call verifies the gateway, and no key reaches the state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import cleanup, sky, state_of, write_project
from support.procs import processes_under
from support.waiting import wait_until

from skyform.tlscontext import client_context, runner_server_name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    apps = {"hello": {"app": "app.py::Hello", "min_runners": 1, "auth": "public"}}
    root = write_project(tmp_path_factory.mktemp("tls") / "proj", apps)
    text = (root / "skyform.yaml").read_text()
    text = text.replace("provider: local", "provider: {local: {runner_tls: true}}")
    text = text.replace("gateway: {port:", "gateway: {tls: auto, port:")
    (root / "skyform.yaml").write_text(text)
    try:
        done = sky(root, "apply", "--auto-approve")
        assert done.returncode == 0, done.stdout + done.stderr
        yield root
    finally:
        cleanup(root)


def test_outputs_are_https_with_the_ca_file(root: Path) -> None:
    out = json.loads(sky(root, "output", "--json").stdout)
    port = state_of(root)["resources"]["gateway"]["port"]
    base = f"https://127.0.0.1:{port}"
    ca_file = str(root / ".skyform" / "tls" / "demo" / "ca.pem")
    assert out == {
        "gateway_url": base,
        "ca_file": ca_file,
        "apps": {
            "hello": {
                "url": f"{base}/hello/",
                "queue_url": f"{base}/queue/hello/",
                "playground_url": f"{base}/hello/playground",
            }
        },
    }


def test_output_names_the_ca_file_for_scripts(root: Path) -> None:
    ca_file = str(root / ".skyform" / "tls" / "demo" / "ca.pem")
    assert f"ca_file     = {ca_file}" in sky(root, "output").stdout
    raw = sky(root, "output", "--raw", "ca_file")  # curl --cacert "$(skyform output --raw ca_file)"
    assert raw.returncode == 0 and raw.stdout == ca_file


def test_callers_verify_with_the_ca_file_and_runners_are_on_tls(root: Path) -> None:
    out = json.loads(sky(root, "output", "--json").stdout)
    verify = client_context(out["ca_file"])
    answer = httpx.post(
        out["apps"]["hello"]["url"], json={"name": "tls"}, verify=verify, trust_env=False
    )
    assert answer.status_code == 200 and answer.json()["message"] == "Hello, tls!"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(out["apps"]["hello"]["url"], json={}, trust_env=False)
    # What fal-client relies on: an httpx client with SSL_CERT_FILE naming the CA file.
    probe = "import httpx, sys; print(httpx.post(sys.argv[1], json={}).status_code)"
    env = {**os.environ, "SSL_CERT_FILE": out["ca_file"]}
    done = subprocess.run(
        [sys.executable, "-c", probe, out["apps"]["hello"]["url"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "200", done.stderr
    status = json.loads(sky(root, "status", "--json").stdout)  # the CLI verifies too
    (app,) = status["apps"]
    assert [r["url"][:8] for r in app["runners"]] == ["https://"]
    runners = [cmd for _pid, cmd in processes_under(root) if "skyform.runtime.runner" in cmd]
    assert runners
    # Each runner answers TLS with a certificate the stack CA signed for the runners'
    # name (the pair reaches it as files or, when it runs as another user, on its pipe).
    for runner in app["runners"]:
        url = httpx.URL(runner["url"])
        context = ssl.create_default_context(cafile=out["ca_file"])
        with (
            socket.create_connection((url.host, url.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=runner_server_name("demo")) as tls,
        ):
            assert tls.version() is not None


def test_plan_is_clean_and_keys_stay_private(root: Path) -> None:
    assert sky(root, "plan", "--detailed-exitcode").returncode == 0
    folder = root / ".skyform" / "tls" / "demo"
    for key in ("ca.key", "gateway.key", "runner.key"):
        assert stat.S_IMODE(os.stat(folder / key).st_mode) == 0o600, key
    state = (root / ".skyform" / "demo.state.json").read_text()
    assert "PRIVATE KEY" not in state
    assert (folder / "ca.key").read_text() not in state


def test_a_cloud_gateway_learns_its_address_from_apply(root: Path) -> None:
    """What apply does after a cloud provider placed the gateway (the address known only then):
    the certificate names the address, and the gateway is told its public URL."""
    from dataclasses import replace

    from skyform.engine.apply import open_context, push_gateway_identity
    from skyform.engine.stackfile import load_stack
    from skyform.providers.base import GatewayHandle

    ctx = open_context(load_stack(root / "skyform.yaml"))
    record = state_of(root)["resources"]["gateway"]
    local = GatewayHandle(**record["handle"])
    # As a SkyPilot handle would report it: another address for the same gateway.
    placed = replace(local, provider="skypilot", url=local.url.replace("127.0.0.1", "localhost"))
    push_gateway_identity(ctx, placed, before=None)
    verify = client_context(record["handle"]["info"]["ca_file"])
    submitted = httpx.post(
        f"{local.url}/queue/hello/", json={"name": "q"}, verify=verify, trust_env=False
    ).json()
    assert submitted["status_url"].startswith(f"{placed.url}/queue/hello/requests/")


def test_another_machine_verifies_with_its_own_copy_of_the_ca(root: Path) -> None:
    """The recorded CA path is the applying machine's; elsewhere the stack's own copy counts."""
    from dataclasses import replace

    from skyform.engine.admin_client import GatewayClient
    from skyform.providers.base import GatewayHandle

    record = state_of(root)["resources"]["gateway"]
    handle = GatewayHandle(**record["handle"])
    moved = replace(handle, info={**handle.info, "ca_file": "/elsewhere/ca.pem"})
    token = json.loads((root / ".skyform" / "demo.keys.json").read_text())["admin_token"]
    mine = str(root / ".skyform" / "tls" / "demo" / "ca.pem")
    with GatewayClient.for_handle(moved, token, ca_file=mine) as client:
        assert client.healthy()
    with GatewayClient.for_handle(moved, token) as client:  # no CA at all: not trusted
        assert not client.healthy()


def _served_expiry(port: int) -> dt.datetime:
    from cryptography import x509

    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def test_apply_renews_a_certificate_close_to_expiry(root: Path) -> None:
    from skyform.engine.tls import LEAF_LIFETIME, RENEW_BEFORE, ensure_leaf

    port = state_of(root)["resources"]["gateway"]["port"]
    now = dt.datetime.now(dt.UTC)
    # A certificate issued long ago: fewer days left than the renewal window.
    ensure_leaf(
        root, "demo", "gateway", ["old.example.test"], now=now - LEAF_LIFETIME + RENEW_BEFORE / 3
    )
    assert wait_until(lambda: _served_expiry(port) - now < RENEW_BEFORE, timeout=30)
    done = sky(root, "apply", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes." in done.stdout
    # Renewed by apply; the running gateway picked the new files up by itself.
    assert wait_until(lambda: _served_expiry(port) - now > LEAF_LIFETIME - RENEW_BEFORE, timeout=30)


def test_destroy_stops_everything_over_tls(root: Path) -> None:
    done = sky(root, "destroy", "--auto-approve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Destroy complete!" in done.stdout
    assert processes_under(root) == []


def test_a_user_certificate_through_apply(tmp_path: Path) -> None:
    from skyform.engine.tls import ensure_leaf

    root = write_project(tmp_path / "proj", apps={})
    # The user's own CA and certificate, kept beside the stack file.
    mine = ensure_leaf(root / "certs", "corp", "gateway", [])
    rel = {k: str(getattr(mine, k).relative_to(root)) for k in ("cert", "key", "ca")}
    text = (
        (root / "skyform.yaml")
        .read_text()
        .replace(
            "gateway: {port:",
            f"gateway: {{tls: {{cert: {rel['cert']}, key: {rel['key']}, ca: {rel['ca']}}}, port:",
        )
    )
    (root / "skyform.yaml").write_text(text)
    try:
        done = sky(root, "apply", "--auto-approve")
        assert done.returncode == 0, done.stdout + done.stderr
        out = json.loads(sky(root, "output", "--json").stdout)
        assert out["gateway_url"].startswith("https://127.0.0.1:")
        assert out["ca_file"] == str(mine.ca)
        assert not (root / ".skyform" / "tls").exists()  # no stack CA was needed
        health = httpx.get(
            f"{out['gateway_url']}/-/health", verify=client_context(out["ca_file"]), trust_env=False
        )
        assert health.status_code == 401  # up, verified, and the admin API still wants its token
        assert sky(root, "plan", "--detailed-exitcode").returncode == 0  # the CLI verifies too
    finally:
        cleanup(root)
