"""TLS at the gateway, and the URLs it hands out.

Real gateway and runner processes, real TLS on 127.0.0.1, certificates issued
by the real stack CA code (or, for a user's own certificate, generated here
with `cryptography`). Nothing is ever called with verification off.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gateway import GatewayProc
from support.waiting import wait_for

from skyform.engine.tls import CertFiles, ensure_leaf
from skyform.tlscontext import client_context

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    """Stack `test`'s gateway and runner certificates, and a runner certificate of another CA."""
    work = tmp_path_factory.mktemp("pki")
    return {
        "gateway": ensure_leaf(work, "test", "gateway", []),
        "runner": ensure_leaf(work, "test", "runner", []),
        "foreign": ensure_leaf(work / "elsewhere", "test", "runner", []),
    }


def tls_args(gateway: CertFiles, runner: CertFiles | None = None, ca: Path | None = None) -> tuple:
    args: tuple[str, ...] = ("--tls-cert", str(gateway.cert), "--tls-key", str(gateway.key))
    if runner is not None:
        args += ("--runner-cert", str(runner.cert), "--runner-key", str(runner.key))
        args += ("--runner-ca", str(ca or runner.ca))
    return args


@pytest.fixture
def tls_gateway(
    tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None, pki: dict[str, CertFiles]
) -> Iterator[GatewayProc]:
    """A gateway on https whose (local) runners serve TLS too, verified against the stack CA."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "provider.json").write_text(json.dumps({"local": {"runner_tls": True}}))
    gw = GatewayProc(
        state,
        tag,
        count_dir,
        args=tls_args(pki["gateway"], pki["runner"]),
        ca_file=pki["gateway"].ca,
    )
    try:
        yield gw.start()
    finally:
        gw.stop()


def test_https_with_the_stack_ca_and_runners_behind_verified_tls(
    tls_gateway: GatewayProc, bundles: dict[str, Any], pki: dict[str, CertFiles]
) -> None:
    gw = tls_gateway
    gw.register("echo", bundles["echo_public"], auth="public")
    answer = gw.http.post("/echo/", json={"text": "over tls"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["echo"] == "over tls"
    # The gateway reached its runner over TLS (the runner serves the stack's runner certificate).
    (runner,) = gw.runners("echo")
    assert runner["url"].startswith("https://127.0.0.1:")
    submitted = gw.submit("echo", "/", {"text": "q"})
    assert submitted["status_url"].startswith(f"https://127.0.0.1:{gw.port}/queue/echo/requests/")
    assert gw.wait_done(submitted)["response_status"] == 200
    # The certificates pass strict X.509 checks too (the default of Python 3.13+ clients).
    strict = client_context(pki["gateway"].ca)
    strict.verify_flags |= ssl.VERIFY_X509_STRICT
    page = httpx.get(f"{gw.url}/echo/playground", verify=strict, timeout=5, trust_env=False)
    assert page.status_code == 200
    # Plain http to the same port gets no answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{gw.port}/echo/playground", timeout=5, trust_env=False)
    # Another CA, or the system's CAs alone, do not vouch for this gateway.
    for verify in (client_context(pki["foreign"].ca), True):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{gw.url}/echo/playground", verify=verify, timeout=5, trust_env=False)


def test_a_runner_with_a_foreign_certificate_is_refused(
    tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None, bundles, pki
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "provider.json").write_text(json.dumps({"local": {"runner_tls": True}}))
    # Runners get a certificate of another CA; the gateway trusts only the stack's.
    args = tls_args(pki["gateway"], pki["foreign"], ca=pki["runner"].ca)
    gw = GatewayProc(state, tag, count_dir, args=args, ca_file=pki["gateway"].ca)
    try:
        gw.start()
        gw.register("echo", bundles["echo_public"], auth="public")
        submitted = gw.submit("echo", "/", {"text": "never"})
        failed = wait_for(lambda: gw.runners("echo", ("failed",)), 60, "a failed runner")
        assert "TLS certificate is not trusted" in failed[0]["error"]
        assert "unable to get local issuer certificate" in failed[0]["error"]
        # After the bounded retries, the waiting request fails saying why.
        done = gw.wait_done(submitted, timeout=90)
        assert done["error_type"] == "startup_failed"
        assert "TLS certificate is not trusted" in done["error"]
        assert gw.runners("echo") == []  # never ready, never served a request
    finally:
        gw.stop()


def _self_signed(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A user's own certificate (self-signed, SANs `names`), made with cryptography."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "my gateway")])
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "mine.pem", folder / "mine.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_user_provided_certificate(
    tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None
) -> None:
    cert, key = _self_signed(tmp_path / "mine", ["127.0.0.1", "gw.example.test"])
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    gw = GatewayProc(tmp_path / "state", tag, count_dir, args=args, ca_file=cert)
    try:
        gw.start()
        served = ssl.get_server_certificate(("127.0.0.1", gw.port))
        assert served.strip() == cert.read_text().strip()
        assert gw.admin("GET", "/-/health").json()["status"] == "ok"
    finally:
        gw.stop()


def test_returned_urls_ignore_the_host_header_and_untrusted_forwarding(
    tls_gateway: GatewayProc, bundles: dict[str, Any]
) -> None:
    gw = tls_gateway
    gw.register("echo", bundles["echo_public"], auth="public")
    spoof = {
        "Host": "attacker.example",
        "X-Forwarded-Host": "attacker.example",
        "X-Forwarded-Proto": "http",
    }
    submitted = gw.submit("echo", "/", {"text": "x"}, headers=spoof)
    base = f"https://127.0.0.1:{gw.port}/queue/echo/requests/{submitted['request_id']}"
    assert submitted["status_url"] == f"{base}/status"
    assert submitted["response_url"] == base
    assert submitted["cancel_url"] == f"{base}/cancel"
    status = gw.http.get(submitted["status_url"], headers=spoof).json()
    assert status["response_url"] == base


def test_trusted_proxies_and_the_configured_public_url(
    tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None, bundles
) -> None:
    args = ("--public-url", "https://api.example.test/sf", "--trusted-proxy", "127.0.0.0/8")
    gw = GatewayProc(tmp_path / "state", tag, count_dir, args=args)
    try:
        gw.start()
        gw.register("echo", bundles["echo_public"], auth="public")
        plain = gw.submit("echo", "/", {"text": "a"}, headers={"Host": "attacker.example"})
        assert plain["status_url"].startswith("https://api.example.test/sf/queue/echo/requests/")
        # From a trusted proxy (this test is on 127.0.0.1), the forwarded scheme and host win.
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "edge.example.test:8443"}
        via = gw.submit("echo", "/", {"text": "b"}, headers=forwarded)
        assert via["response_url"] == (
            f"https://edge.example.test:8443/sf/queue/echo/requests/{via['request_id']}"
        )
        # A forwarded host that is not a host name is ignored, not echoed.
        bad = {"X-Forwarded-Host": "evil.example/<script>"}
        kept = gw.submit("echo", "/", {"text": "c"}, headers=bad)
        assert kept["status_url"].startswith("https://api.example.test/sf/queue/")
    finally:
        gw.stop()


def test_untrusted_peers_cannot_forward(
    tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None, bundles
) -> None:
    args = ("--public-url", "http://127.0.0.1:1", "--trusted-proxy", "10.9.8.0/24")
    gw = GatewayProc(tmp_path / "state", tag, count_dir, args=args)
    try:
        gw.start()
        gw.register("echo", bundles["echo_public"], auth="public")
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "edge.example.test"}
        submitted = gw.submit("echo", "/", {"text": "a"}, headers=forwarded)
        assert submitted["status_url"].startswith("http://127.0.0.1:1/queue/echo/requests/")
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--tls-cert", "/nonexistent.pem"), "--tls-cert and --tls-key go together"),
        (("--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"), "no such file"),
        (("--trusted-proxy", "not-an-ip"), "--trusted-proxy 'not-an-ip' is not an IP or CIDR"),
        (("--public-url", "ftp://x"), "--public-url must be an http(s) URL"),
    ],
)
def test_bad_tls_arguments_are_one_line(tmp_path: Path, args: tuple, needle: str) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "skyform.runtime.gateway", "--port", "1"]
    command += ["--state-dir", str(tmp_path / "s"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {needle}"] or (len(errors) == 1 and needle in errors[0])
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("hop", ["gateway", "runner"])
def test_mismatched_key_is_named(tmp_path: Path, pki: dict[str, CertFiles], hop: str) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "skyform.runtime.gateway", "--port", "1"]
    command += ["--state-dir", str(tmp_path / "s")]
    wrong = pki["foreign"].key
    if hop == "gateway":
        command += ["--tls-cert", str(pki["gateway"].cert), "--tls-key", str(wrong)]
    else:
        command += ["--runner-cert", str(pki["runner"].cert), "--runner-key", str(wrong)]
        command += ["--runner-ca", str(pki["runner"].ca)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"error: key {wrong} does not belong to certificate" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()  # refused before anything was made


def _served_names(port: int) -> set[str]:
    from cryptography import x509

    pem = ssl.get_server_certificate(("127.0.0.1", port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def test_a_pushed_certificate_and_public_url_take_effect(
    tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None, bundles
) -> None:
    import shutil

    first = ensure_leaf(tmp_path / "pki", "test", "gateway", [])
    serving = tmp_path / "serving"
    serving.mkdir()
    cert, key = serving / "gateway.pem", serving / "gateway.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    args = ("--tls-cert", str(cert), "--tls-key", str(key))
    gw = GatewayProc(tmp_path / "state", tag, count_dir, args=args, ca_file=first.ca)
    try:
        gw.start()
        gw.register("echo", bundles["echo_public"], auth="public")
        assert "gw.example.test" not in _served_names(gw.port)
        served = cert.read_bytes()
        other_key = ensure_leaf(tmp_path / "pki", "test", "runner", []).key.read_text()
        # What apply does once a cloud gateway's address is known: a certificate naming it.
        renewed = ensure_leaf(tmp_path / "pki", "test", "gateway", ["gw.example.test"])
        bad = gw.admin(
            "PUT",
            "/-/tls",
            json={"cert_pem": renewed.cert.read_text(), "key_pem": other_key},
        )
        assert bad.status_code == 400 and bad.json()["error_type"] == "bad_certificate"
        assert cert.read_bytes() == served  # nothing written
        assert gw.http.put("/-/tls", json={}).status_code == 401
        public = f"https://gw.example.test:{gw.port}"
        ok = gw.admin(
            "PUT",
            "/-/tls",
            json={
                "cert_pem": renewed.cert.read_text(),
                "key_pem": renewed.key.read_text(),
                "public_url": public,
            },
        )
        assert ok.status_code == 200 and ok.json() == {"replaced": True, "public_url": public}
        assert (key.stat().st_mode & 0o777) == 0o600
        wait_for(lambda: "gw.example.test" in _served_names(gw.port), 30, "the reloaded cert")
        # A client that knows the gateway by that name verifies it.
        with httpx.Client(verify=client_context(first.ca), trust_env=False) as client:
            named = client.get(
                f"{gw.url}/echo/playground", extensions={"sni_hostname": "gw.example.test"}
            )
        assert named.status_code == 200
        assert gw.submit("echo", "/", {"text": "x"})["status_url"].startswith(f"{public}/queue/")
        # The learned public URL survives a restart of the gateway.
        gw.stop()
        gw.start()
        assert gw.submit("echo", "/", {"text": "y"})["status_url"].startswith(f"{public}/queue/")
    finally:
        gw.stop()


def test_a_plain_gateway_has_no_certificate_to_replace(gateway: GatewayProc) -> None:
    answer = gateway.admin("PUT", "/-/tls", json={"cert_pem": "x", "key_pem": "y"})
    assert answer.status_code == 409
    assert "plain http" in answer.json()["detail"]
