"""Where callers reach the gateway: the base of every URL it hands out.

Why not the request's `Host` header: any caller can send any `Host`, and the
gateway would echo it into `status_url`/`response_url`/`cancel_url` (a client
following those would then send its API key wherever the header pointed).
The base comes from configuration (`gateway.public_url`, by default the
gateway's own scheme, host and port). Behind a TLS terminator the public
scheme and host differ from the gateway's: `X-Forwarded-Proto` and
`X-Forwarded-Host` are honoured, but only from a peer listed in
`gateway.trusted_proxies`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from skyform.runtime.asgi import Scope

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def default_public_url(scheme: str, host: str, port: int) -> str:
    """`scheme://host:port`, with a wildcard bind address shown as 127.0.0.1."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}"


class PublicURL:
    """The configured public base URL, adjusted for requests from trusted proxies."""

    def __init__(self, base: str, trusted_proxies: Iterable[str] = ()) -> None:
        self.base = base.rstrip("/")
        parts = urlsplit(self.base)
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._path = parts.path
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def for_request(self, scope: Scope) -> str:
        """The base URL for answers to this request."""
        if not self._trusted or not self._from_trusted(scope):
            return self.base
        proto = _first(_header(scope, b"x-forwarded-proto")).lower()
        host = _first(_header(scope, b"x-forwarded-host"))
        scheme = proto if proto in ("http", "https") else self._scheme
        netloc = host if host and _HOST.match(host) else self._netloc
        return f"{scheme}://{netloc}{self._path}"

    def _from_trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in net for net in self._trusted)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _first(value: str) -> str:
    """The first entry of a comma-separated forwarded header (the client-facing hop)."""
    return value.split(",", 1)[0].strip()
