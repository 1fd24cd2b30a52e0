"""Refresh: the state, checked against what runs (the provider's gateway, the gateway's apps).

"What is live" is the state refreshed against the gateway: the gateway's own
list of apps wins over what the state remembers, so drift (a killed gateway,
an interrupted apply, an app removed by hand) shows up as the change that
repairs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skyform.engine.plan import BOOKKEEPING, GATEWAY, SCALING_OPTIONS
from skyform.errors import SkyformError


@dataclass
class Live:
    """The state refreshed against what runs: the gateway and its apps."""

    gateway_alive: bool
    gateway_url: str | None
    apps: dict[str, dict[str, Any]] | None  # None: the gateway cannot be asked
    drift: list[dict[str, str]] = field(default_factory=list)


def refresh(
    state_resources: dict[str, dict[str, Any]],
    provider: Any,
    admin_token: str,
    ca_file: str | None = None,
) -> Live:
    """Ask the provider whether the recorded gateway runs, and the gateway which apps it has."""
    from skyform.engine.admin_client import GatewayClient, GatewayError
    from skyform.providers.base import GatewayHandle

    record = state_resources.get(GATEWAY)
    handle = (record or {}).get("handle")
    if not handle:
        drift = []
        if record is not None:
            drift.append({"address": GATEWAY, "reason": "its start was interrupted"})
        return Live(False, None, None, drift)
    gh = GatewayHandle(**handle)
    if not provider.gateway_alive(gh):
        pending = (record or {}).get("pending")
        reason = (
            f"an interrupted apply left its {pending.get('operation', 'change')} unfinished"
            if pending
            else "the gateway is not running: stopped outside skyform, or crashed"
        )
        return Live(False, gh.url, None, [{"address": GATEWAY, "reason": reason}])
    with GatewayClient.for_handle(gh, admin_token, ca_file=ca_file) as client:
        try:
            apps = client.list_apps()
        except GatewayError as exc:
            if exc.status in (401, 403):
                raise SkyformError(
                    f"the gateway at {gh.url} refuses this stack's admin token: these keys are "
                    "not the ones it was applied with. Set SKYFORM_ADMIN_TOKEN, "
                    "SKYFORM_BUNDLE_KEY, SKYFORM_RUNNER_TOKEN and SKYFORM_API_KEY as in the "
                    "first apply (in CI: from secrets), or copy its .skyform/ keys file"
                ) from None
            return Live(False, gh.url, None, [{"address": GATEWAY, "reason": str(exc)}])
    return Live(True, gh.url, apps)


def prior_app(record: dict[str, Any] | None, live: dict[str, Any] | None) -> dict[str, Any] | None:
    """An app's attributes as they are: the state's record corrected by the gateway's."""
    if live is None:
        return None
    base = {k: v for k, v in (record or {}).items() if k not in BOOKKEEPING}
    options = live.get("options") or {}
    base["revision"] = live.get("revision")
    base["fingerprint"] = live.get("fingerprint")
    if live.get("auth"):
        base["auth"] = live["auth"]
    for name in SCALING_OPTIONS:
        if name in options:
            base[name] = options[name]
    if "machine_type" in options:
        mt = options["machine_type"]
        base["machine_type"] = [mt] if isinstance(mt, str) else list(mt)
    if "requirements" in options:
        base["requirements"] = list(options["requirements"])
    return base
