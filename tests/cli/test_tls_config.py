"""The gateway's TLS keys in the stack file, and the stack CA's certificates.

Stack-file errors name file, line and key; `tls: off` on SkyPilot is refused at
plan time without touching the state. Certificates: keys 0600, the right
names, renewed before expiry, reissued for a new host or another CA.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from support.cli import sky, write_project

from skyform.engine.stackfile import StackFileError, load_stack, parse_stack
from skyform.engine.tls import RENEW_BEFORE, ensure_leaf
from skyform.tlscontext import gateway_server_name, runner_server_name


def stack_text(gateway: str, provider: str = "local") -> str:
    return f"""\
stack: demo
provider: {provider}
state: local
gateway: {gateway}
apps: {{}}
"""


def load(text: str, base: Path):
    return parse_stack(text, base / "skyform.yaml", display="skyform.yaml", environ={})


def error_of(text: str, base: Path) -> str:
    with pytest.raises(StackFileError) as info:
        load(text, base)
    return str(info.value)


def issue_pair(folder: Path) -> tuple[Path, Path]:
    leaf = ensure_leaf(folder, "mine", "gateway", [])
    return leaf.cert, leaf.key


def test_modes_and_defaults(tmp_path: Path) -> None:
    assert load(stack_text("{port: 9001}"), tmp_path).tls_mode == "off"  # local default
    assert load(stack_text("{tls: off}"), tmp_path).tls_mode == "off"  # YAML's `off` is false
    assert load(stack_text("{tls: auto}"), tmp_path).tls_mode == "auto"
    sky_file = stack_text("{port: 9001}", "{skypilot: {clouds: [lambda]}}")
    assert load(sky_file, tmp_path).tls_mode == "auto"  # the skypilot default


def test_user_certificate_paths_are_relative_to_the_stack_file(tmp_path: Path) -> None:
    cert, key = issue_pair(tmp_path / "pki")
    text = stack_text(
        f"{{tls: {{cert: {cert.relative_to(tmp_path)}, key: {key.relative_to(tmp_path)}}}}}"
    )
    stack = load(text, tmp_path)
    files = stack.tls_files()
    assert stack.tls_mode == "files" and files is not None
    assert Path(files.cert) == cert and Path(files.key) == key and files.ca is None


@pytest.mark.parametrize(
    ("gateway", "expected"),
    [
        ("{tls: on}", "skyform.yaml:4: gateway.tls: tls must be"),
        (
            "{tls: automatic}",
            'skyform.yaml:4: gateway.tls: unknown tls mode "automatic" (did you mean "auto"?)',
        ),
        (
            "{tls: {crt: a.pem, key: b.pem}}",
            'skyform.yaml:4: gateway.tls.crt: unknown key "crt" (did you mean "cert"?)',
        ),
        (
            "{tls: {cert: missing.pem, key: missing.key}}",
            "skyform.yaml:4: gateway.tls.cert: no such file missing.pem (relative to the stack file)",
        ),
        (
            "{tls: {key: k.pem}}",
            "skyform.yaml:4: gateway.tls: cert (a PEM file path) is required",
        ),
        (
            "{trusted_proxies: [10.0.0.0/8, nope]}",
            "skyform.yaml:4: gateway.trusted_proxies: 'nope' is not an IP address or CIDR network",
        ),
        (
            "{public_url: 'gw.example.com'}",
            "skyform.yaml:4: gateway.public_url: public_url must be an http(s) URL with a host",
        ),
        ("{tsl: auto}", 'skyform.yaml:4: gateway.tsl: unknown key "tsl" (did you mean "tls"?)'),
    ],
)
def test_bad_tls_keys_name_file_line_and_key(gateway: str, expected: str, tmp_path: Path) -> None:
    message = error_of(stack_text(gateway), tmp_path)
    assert message.startswith(expected), message


def test_a_key_that_does_not_fit_the_certificate(tmp_path: Path) -> None:
    cert, _key = issue_pair(tmp_path / "a")
    _cert, other_key = issue_pair(tmp_path / "b")
    text = stack_text(f"{{tls: {{cert: {cert}, key: {other_key}}}}}")
    assert error_of(text, tmp_path) == (
        f"skyform.yaml:4: gateway.tls.key: key {other_key} does not belong to certificate {cert}"
    )


def test_a_tls_problem_names_the_line_of_its_key(tmp_path: Path) -> None:
    cert, _key = issue_pair(tmp_path / "pki")
    text = f"""\
stack: demo
provider: local
gateway:
  port: 9001
  tls:
    cert: {cert}
    key: pki/missing.key
apps: {{}}
"""
    assert error_of(text, tmp_path) == (
        "skyform.yaml:7: gateway.tls.key: no such file pki/missing.key (relative to the stack file)"
    )


def test_plaintext_on_skypilot_is_refused_at_plan_time(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", apps={})
    text = (root / "skyform.yaml").read_text()
    text = text.replace("provider: local", "provider: {skypilot: {clouds: [lambda]}}")
    text = text.replace("gateway: {port:", "gateway: {tls: off, port:")
    (root / "skyform.yaml").write_text(text)
    done = sky(root, "plan")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: skyform.yaml:4: gateway.tls: off is refused on the skypilot provider: API keys "
        "and tokens would cross the network in clear; use auto (the default there) or "
        "{cert: PATH, key: PATH}"
    ]
    assert not (root / ".skyform").exists()  # nothing made, nothing written


def test_schema_describes_the_tls_keys(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", apps={})
    schema = json.loads(sky(root, "schema").stdout)
    gateway = schema["$defs"]["GatewayConfig"]["properties"]
    assert {"tls", "public_url", "trusted_proxies"} <= set(gateway)
    assert set(schema["$defs"]["TLSFiles"]["properties"]) == {"cert", "key", "ca"}


def _names(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def test_certificates_name_their_hosts_and_keys_are_private(tmp_path: Path) -> None:
    gateway = ensure_leaf(
        tmp_path, "demo", "gateway", ["gw.example.test", "203.0.113.7", "0.0.0.0"]
    )
    runner = ensure_leaf(tmp_path, "demo", "runner", [])
    assert _names(gateway.cert) == {
        "127.0.0.1",
        "localhost",
        gateway_server_name("demo"),
        "gw.example.test",
        "203.0.113.7",
    }
    assert runner_server_name("demo") in _names(runner.cert)
    folder = tmp_path / ".skyform" / "tls" / "demo"
    for key in ("ca.key", "gateway.key", "runner.key"):
        assert stat.S_IMODE(os.stat(folder / key).st_mode) == 0o600, key
    # Both chain to the stack CA, as a verifying client sees it.
    context = ssl.create_default_context(cafile=str(gateway.ca))
    assert context.cert_store_stats()["x509_ca"] == 1


def test_renewed_before_expiry_and_reissued_for_new_hosts(tmp_path: Path) -> None:
    first = ensure_leaf(tmp_path, "demo", "gateway", ["a.example.test"])
    pem = first.cert.read_bytes()
    assert ensure_leaf(tmp_path, "demo", "gateway", ["a.example.test"]).cert.read_bytes() == pem
    # A new host: a new certificate naming it.
    ensure_leaf(tmp_path, "demo", "gateway", ["b.example.test"])
    assert "b.example.test" in _names(first.cert)
    second = first.cert.read_bytes()
    # Close to expiry: renewed, though nothing else changed.
    expires = x509.load_pem_x509_certificate(second).not_valid_after_utc
    later = expires - RENEW_BEFORE + dt.timedelta(hours=1)
    ensure_leaf(tmp_path, "demo", "gateway", ["b.example.test"], now=later)
    renewed = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert renewed.not_valid_after_utc > expires
    # The CA stays the same through all of it.
    ca = x509.load_pem_x509_certificate(first.ca.read_bytes()) if first.ca else None
    assert ca is not None
    renewed.verify_directly_issued_by(ca)


def test_a_certificate_of_another_ca_is_reissued(tmp_path: Path) -> None:
    leaf = ensure_leaf(tmp_path, "demo", "runner", [])
    other = ensure_leaf(tmp_path / "other", "demo", "runner", [])
    leaf.cert.write_bytes(other.cert.read_bytes())
    leaf.key.write_bytes(other.key.read_bytes())
    again = ensure_leaf(tmp_path, "demo", "runner", [])
    assert again.ca is not None
    ca = x509.load_pem_x509_certificate(again.ca.read_bytes())
    x509.load_pem_x509_certificate(again.cert.read_bytes()).verify_directly_issued_by(ca)


def test_load_stack_resolves_against_the_file_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "proj"
    cert, key = issue_pair(project / "pki")
    (project / "skyform.yaml").write_text(
        stack_text(
            "{tls: {cert: pki/.skyform/tls/mine/gateway.pem, key: pki/.skyform/tls/mine/gateway.key}}"
        )
    )
    monkeypatch.chdir(tmp_path)
    files = load_stack(project / "skyform.yaml").tls_files()
    assert files is not None and Path(files.cert) == cert and Path(files.key) == key


def test_what_a_remote_gateway_is_told_once_its_address_is_known(tmp_path: Path) -> None:
    from skyform.engine.apply import address_update
    from skyform.providers.base import GatewayHandle

    plain = load(stack_text("{tls: auto}"), tmp_path)
    fixed = load(stack_text("{tls: auto, public_url: 'https://api.example.test'}"), tmp_path)
    cloud = GatewayHandle("demo", "https://203.0.113.7:8765", "skypilot")
    local = GatewayHandle("demo", "https://127.0.0.1:8765", "local")
    assert address_update(plain, local, None, b"new") is None  # it reads its own files
    assert address_update(plain, cloud, b"old", b"new") == {
        "cert": "new",
        "public_url": "https://203.0.113.7:8765",
    }
    assert address_update(fixed, cloud, b"same", b"same") is None
    assert address_update(fixed, cloud, b"old", b"new") == {"cert": "new"}
