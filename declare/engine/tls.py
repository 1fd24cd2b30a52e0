"""The stack CA: issues the gateway's and the runners' certificates, on the deploying side.

Why a per-stack CA rather than self-signed leaves: one `ca.pem` is all a
client needs to trust (the CLI, fal-client through `SSL_CERT_FILE`, curl
`--cacert`), whatever host names or IPs the gateway gets later, and the
gateway verifies runners against the same CA without ever holding its key.

Files, in `.skyform/tls/<stack>/` (beside, never inside, the state):

    ca.pem        the stack CA's certificate (public: hand it to clients)
    ca.key        its private key (0600; never leaves the deploying machine)
    gateway.pem   the gateway's certificate, and gateway.key (0600)
    runner.pem    the certificate every runner of the stack serves, and runner.key (0600)

Leaf certificates are reissued when they no longer name every host asked for,
were signed by another CA, or expire within `RENEW_BEFORE`: each `apply` renews
them, and a running gateway reloads its certificate files when they change.

The certificates name the fixed server names of `skyform.tlscontext`
(`gateway_server_name`, `runner_server_name`), where the contexts that load
and verify them are made: the gateway and the runners use that module, never
this one. `cryptography` is imported only to issue.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyform.files import write_atomic
from skyform.tlscontext import TLSError, gateway_server_name, runner_server_name
from skyform.workdir import SKYFORM_DIR

TLS_DIR = "tls"
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=30)
_CLOCK_SKEW = dt.timedelta(minutes=5)
LOCAL_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """A certificate, its key, and the CA file a client trusts it through."""

    cert: Path
    key: Path
    ca: Path | None = None


def tls_dir(workdir: Path, stack: str) -> Path:
    """`<workdir>/.skyform/tls/<stack>/`."""
    return Path(workdir) / SKYFORM_DIR / TLS_DIR / stack


# --- issuing (deploying side) -------------------------------------------------------


def ensure_ca(workdir: Path, stack: str) -> CertFiles:
    """The stack's CA, created once (its key 0600); reused while it is valid."""
    folder = tls_dir(workdir, stack)
    with _locked(folder):
        return _ensure_ca(folder, stack)


def ensure_leaf(
    workdir: Path, stack: str, kind: str, hosts: Sequence[str], now: dt.datetime | None = None
) -> CertFiles:
    """The `kind` ("gateway" or "runner") certificate naming `hosts`, signed by the stack CA.

    Reissued when missing, unreadable, signed by another CA, missing one of
    `hosts`, or expiring within `RENEW_BEFORE` of `now`.
    """
    folder = tls_dir(workdir, stack)
    now = now or dt.datetime.now(dt.UTC)
    fixed = gateway_server_name(stack) if kind == "gateway" else runner_server_name(stack)
    names = _unique([*LOCAL_NAMES, fixed, *hosts])
    with _locked(folder):
        ca = _ensure_ca(folder, stack, now)
        leaf = CertFiles(folder / f"{kind}.pem", folder / f"{kind}.key", ca.cert)
        if not _leaf_current(leaf, ca, names, now):
            _issue_leaf(leaf, ca, f"skyform {stack} {kind}", names, now)
        return leaf


def _ensure_ca(folder: Path, stack: str, now: dt.datetime | None = None) -> CertFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = now or dt.datetime.now(dt.UTC)
    ca = CertFiles(folder / "ca.pem", folder / "ca.key")
    if ca.cert.exists() and ca.key.exists():
        cert = _load_cert(ca.cert)
        if cert.not_valid_after_utc - now > RENEW_BEFORE:
            _load_key(ca.key)  # a CA whose key is unreadable cannot sign: fail here, clearly
            return ca
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skyform {stack} CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(ca.key, key)
    write_atomic(ca.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644, fsync=True)
    return ca


def _issue_leaf(
    leaf: CertFiles, ca: CertFiles, common_name: str, names: Sequence[str], now: dt.datetime
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = _load_cert(ca.cert)
    ca_key: Any = _load_key(ca.key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(leaf.key, key)
    write_atomic(leaf.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644, fsync=True)


def _leaf_current(leaf: CertFiles, ca: CertFiles, names: Sequence[str], now: dt.datetime) -> bool:
    from cryptography import x509

    if not (leaf.cert.exists() and leaf.key.exists()):
        return False
    try:
        cert = _load_cert(leaf.cert)
        ca_cert = _load_cert(ca.cert)
        cert.verify_directly_issued_by(ca_cert)
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (TLSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    except Exception:  # cryptography's InvalidSignature: signed by another CA
        return False
    named = {str(v) for v in have.get_values_for_type(x509.IPAddress)} | set(
        have.get_values_for_type(x509.DNSName)
    )
    return set(names) <= named and cert.not_valid_after_utc - now > RENEW_BEFORE


def _san(names: Sequence[str]) -> list[Any]:
    from cryptography import x509

    out: list[Any] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, mode=0o600, fsync=True)
    os.chmod(path, 0o600)  # write_atomic honours the umask; a key is never group-readable


def _load_cert(path: Path) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise TLSError(f"cannot read certificate {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TLSError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise TLSError(f"cannot read key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise TLSError(f"{path} is not an unencrypted PEM private key") from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One issuer at a time per stack (two applies, or apply and run, may race)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    except OSError as exc:
        raise TLSError(f"cannot write TLS files in {folder}: {exc.strerror or exc}") from None


def _unique(items: Sequence[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        item = item.strip().strip("[]")
        if item and item not in ("0.0.0.0", "::") and item not in out:
            out.append(item)
    return out
