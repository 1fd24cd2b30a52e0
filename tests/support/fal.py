"""Helpers for the fal wire-compatibility tests: a throwaway CA, a TLS gateway, fal-client runs.

fal-client reads `FAL_RUN_HOST` and friends when it is imported and always
builds `https://` URLs, so every call of the real client runs in a fresh
process (`fal_driver.py`) whose environment holds exactly the four variables a
user would set; the tests never patch the client.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from support.gateway import ADMIN, API_KEY, BUNDLE_KEY, RUNNER_TOKEN, GatewayProc
from support.procs import TAG_VAR
from support.waiting import wait_for

HERE = Path(__file__).resolve().parents[1] / "fal"
APPS = HERE / "apps"
DRIVER = HERE / "fal_driver.py"
STACK = "test"  # GatewayProc starts gateways with --stack test
WEBHOOK_KEY = "fal-test-webhook-key"


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skyform test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class TLSGateway(GatewayProc):
    """A gateway process serving HTTPS with a test CA (`--tls-cert/--tls-key`)."""

    def __init__(
        self,
        state_dir: Path,
        tag: str,
        count_dir: Path,
        tls: tuple[Path, Path, Path],
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(state_dir, tag, count_dir)
        self.ca, self.cert, self.key = tls
        self.extra_env = env or {}
        self.url = f"https://127.0.0.1:{self.port}"
        self.http.close()
        self.http = httpx.Client(
            base_url=self.url,
            timeout=60.0,
            trust_env=False,
            verify=ssl.create_default_context(cafile=str(self.ca)),
        )

    def start(self) -> TLSGateway:
        env = dict(
            os.environ,
            SKYFORM_ADMIN_TOKEN=ADMIN,
            SKYFORM_API_KEY=API_KEY,
            SKYFORM_RUNNER_TOKEN=RUNNER_TOKEN,
            SKYFORM_BUNDLE_KEY=BUNDLE_KEY,
            SKYFORM_WEBHOOK_KEY=WEBHOOK_KEY,
            SKYFORM_WEBHOOK_BACKOFF_S="0.2",
            GW_COUNT_DIR=str(self.count_dir),
            **{TAG_VAR: self.tag},
            **self.extra_env,
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "test-gateway.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "skyform.runtime.gateway",
                "--port", str(self.port), "--state-dir", str(self.state_dir), "--stack", STACK,
                "--tls-cert", str(self.cert), "--tls-key", str(self.key),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for(self._up, 30, "the gateway to answer")
        return self

    def fal_env(self, key: str = API_KEY) -> dict[str, str]:
        """The four variables a fal-client user sets, and nothing else of theirs."""
        return {
            "FAL_RUN_HOST": f"127.0.0.1:{self.port}",
            "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{self.port}/queue",
            "FAL_KEY": key,
            "SSL_CERT_FILE": str(self.ca),
        }


def run_fal(
    gateway: TLSGateway | dict[str, str], scenario: str, *args: str, timeout: float = 120
) -> Any:
    """Run one scenario of `fal_driver.py` with the real fal-client; its JSON result.

    `gateway`: a test gateway, or the four FAL_*/SSL_CERT_FILE variables themselves.
    """
    fal_env = gateway.fal_env() if isinstance(gateway, TLSGateway) else gateway
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        **fal_env,
    }
    done = subprocess.run(
        [sys.executable, str(DRIVER), scenario, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"fal driver {scenario} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 recording every POST; answers `codes` in turn, then 200."""

    def __init__(self, codes: list[int] | None = None, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.codes = list(codes or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
