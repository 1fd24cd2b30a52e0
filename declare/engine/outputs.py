"""A stack's URLs: the gateway's base URL and, per app, its sync, queue and playground URLs.

The shape of `skyform output` (DESIGN §4), planned by the planner and
recorded by apply; `skyform status` shows the same per-app URLs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def gateway_url(host: str, port: int, scheme: str = "http") -> str:
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}"


def public_base(gateway: dict[str, Any]) -> str:
    """Where callers reach a gateway of these attributes: `public_url`, else scheme+host+port."""
    if gateway.get("public_url"):
        return str(gateway["public_url"])
    scheme = "http" if gateway.get("tls", "off") == "off" else "https"
    return gateway_url(str(gateway["host"]), int(gateway["port"]), scheme)


def app_urls(base: str, name: str) -> dict[str, str]:
    base = base.rstrip("/")
    return {
        "url": f"{base}/{name}/",
        "queue_url": f"{base}/queue/{name}/",
        "playground_url": f"{base}/{name}/playground",
    }


def stack_outputs(
    base: str, apps: Iterable[str], tls: bool = False, ca_file: str | None = None
) -> dict[str, Any]:
    """DESIGN §4's output shape; with TLS also `ca_file` (None: the system's CAs vouch)."""
    out: dict[str, Any] = {"gateway_url": base}
    if tls:
        out["ca_file"] = ca_file
    out["apps"] = {n: app_urls(base, n) for n in sorted(apps)}
    return out
