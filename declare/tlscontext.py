"""TLS as both ends of a connection use it: contexts from certificate files, and the names certificates carry.

Why apart from the stack CA (`skyform.engine.tls`, which issues): the
gateway and the runners load certificates and verify their peers here, and
the local provider checks a gateway it started; none of them issues a
certificate, and none may import the stack engine. The standard library's
`ssl` is all this needs.

Runner certificates name a fixed DNS name (`runner_server_name`): runner
machines get their addresses only once they exist, so the gateway checks that
name, not the address it dials. The gateway's certificate also names a fixed
`gateway_server_name`, so the CLI can verify a gateway whose public IP was not
known when its certificate was made.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from skyform.errors import SkyformError


class TLSError(SkyformError):
    """A certificate or key cannot be read, issued or used; says which file and why."""


def gateway_server_name(stack: str) -> str:
    """The DNS name every gateway certificate of `stack` carries (see the module docstring)."""
    return f"gateway.{stack}.skyform.internal"


def runner_server_name(stack: str) -> str:
    """The DNS name every runner certificate of `stack` carries; the gateway verifies it."""
    return f"runner.{stack}.skyform.internal"


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A TLS server context serving `cert` (TLS 1.2+); raises TLSError naming the file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(context, cert, key)
    return context


def load_cert_chain(context: ssl.SSLContext, cert: Path | str, key: Path | str) -> None:
    """`context.load_cert_chain`, with one clear error when the files are wrong."""
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise TLSError(f"no such file: {exc.filename}") from None
    except OSError as exc:
        if isinstance(exc, ssl.SSLError) and "KEY_VALUES_MISMATCH" in str(exc):
            raise TLSError(f"key {key} does not belong to certificate {cert}") from None
        raise TLSError(
            f"cannot load certificate {cert} with key {key}: {getattr(exc, 'reason', None) or exc}"
        ) from None


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs plus `ca_file` when given.

    `ca_file` may be a CA or the server's own certificate (a user-provided
    certificate pinned as its own trust anchor): partial chains are accepted.
    Host names are always checked.
    """
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except FileNotFoundError:
            raise TLSError(f"no such CA file: {ca_file}") from None
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"cannot read CA file {ca_file}: {exc}") from None
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
