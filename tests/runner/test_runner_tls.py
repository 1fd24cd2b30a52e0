"""A runner serving TLS (`--tls-cert/--tls-key`), as runners reached over a network do."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.procs import free_port
from support.runner import runner_env, running

from skyform.engine.tls import ensure_leaf
from skyform.tlscontext import client_context, runner_server_name

pytestmark = pytest.mark.slow


def test_runner_serves_its_certificate_verified_by_the_stack_ca(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    leaf = ensure_leaf(tmp_path / "pki", "demo", "runner", [])
    args = ("--tls-cert", str(leaf.cert), "--tls-key", str(leaf.key))
    with running(bundles["nosetup"], tmp_path / "probe", args=args) as runner:
        url = f"https://127.0.0.1:{runner.port}/health"
        verify = client_context(leaf.ca)
        for _ in range(600):
            try:
                health = httpx.get(url, verify=verify, timeout=5, trust_env=False)
                break
            except httpx.ConnectError as exc:
                assert "CERTIFICATE_VERIFY_FAILED" not in str(exc)
                assert runner.proc.poll() is None, runner.log()
                time.sleep(0.05)
        assert health.status_code == 200 and health.json()["status"] == "ready"
        # The name the gateway checks is in the certificate, whatever address it dials.
        with httpx.Client(verify=verify, trust_env=False) as client:
            named = client.get(url, extensions={"sni_hostname": runner_server_name("demo")})
        assert named.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{runner.port}/health", timeout=5, trust_env=False)
        assert "serving NoSetup" in runner.log() and "on https://" in runner.log()


@pytest.mark.parametrize(
    ("which", "needle"),
    [
        ("cert-only", "--tls-cert and --tls-key go together"),
        ("mismatch", "does not belong to certificate"),
        ("missing", "no such file"),
    ],
)
def test_bad_tls_files_are_one_line_and_nothing_is_served(
    bundles: dict[str, Path], tmp_path: Path, which: str, needle: str
) -> None:
    mine = ensure_leaf(tmp_path / "a", "demo", "runner", [])
    other = ensure_leaf(tmp_path / "b", "demo", "runner", [])
    args = {
        "cert-only": ["--tls-cert", str(mine.cert)],
        "mismatch": ["--tls-cert", str(mine.cert), "--tls-key", str(other.key)],
        "missing": ["--tls-cert", str(tmp_path / "no.pem"), "--tls-key", str(mine.key)],
    }[which]
    port = free_port()
    command = [sys.executable, "-m", "skyform.runtime.runner", "--bundle", str(bundles["nosetup"])]
    done = subprocess.run(
        [*command, "--port", str(port), *args],
        env=runner_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skyform runner: ") and needle in lines[0]
