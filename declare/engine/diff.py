"""The diff: one resource's attributes as they are against as they are wanted, as a change.

Which attributes differ (types matter: 2 is not "2"; 2 and 2.0 are the same
number), which of them force a new revision, and what drifted between the
state and the gateway. Pure: no provider, no gateway, no bundle.
"""

from __future__ import annotations

from typing import Any

from skyform.engine.plan import (
    APP_PREFIX,
    BOOKKEEPING,
    FORCES_NEW_REVISION,
    GATEWAY,
    GATEWAY_ATTRS,
    NOT_COMPARED,
    Action,
    ResourceChange,
    app_address,
    tainted_reason,
)
from skyform.engine.refresh import Live

# What a gateway recorded before an attribute existed had: no TLS, no proxies.
_GATEWAY_DEFAULTS: dict[str, Any] = {"tls": "off", "public_url": None, "trusted_proxies": []}


def gateway_attrs(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gateway's compared attributes in a state record, with defaults for older records."""
    if not record:
        return None
    # limits: only when the stack sets any, so that stacks without limits see no change
    return {
        k: record.get(k, _GATEWAY_DEFAULTS.get(k))
        for k in GATEWAY_ATTRS
        if k != "limits" or record.get(k)
    }


def gateway_change(
    prior: dict[str, Any] | None, want: dict[str, Any] | None, force: bool, live: Live
) -> ResourceChange:
    """The gateway's change: any difference (or `--replace`) recreates it; none is a no-op."""
    if want is None:
        return ResourceChange(GATEWAY, "gateway", "gateway", Action.NOOP, prior, None)
    if prior is None:
        reason = live.drift[0]["reason"] if live.drift else None
        return ResourceChange(
            GATEWAY, "gateway", "gateway", Action.CREATE, None, want, reason=reason
        )
    changed = changed_attributes(prior, want)
    if force or changed:
        return ResourceChange(
            GATEWAY,
            "gateway",
            "gateway",
            Action.RECREATE,
            prior,
            want,
            changed=changed,
            forces=changed,
            reason="--replace" if force and not changed else None,
        )
    return ResourceChange(GATEWAY, "gateway", "gateway", Action.NOOP, prior, want)


def app_change(
    name: str,
    prior: dict[str, Any] | None,
    after: dict[str, Any],
    force: bool,
    gateway_fresh: bool,
    record: dict[str, Any] | None,
    live: Live,
) -> ResourceChange:
    """An app's change: a new revision when a forcing attribute differs, is forced or tainted."""
    address = app_address(name)
    if prior is None:
        reason = None
        if gateway_fresh and record is not None:
            reason = "the gateway is created again"
        elif record is not None and live.apps is not None:
            reason = "not registered at the gateway: removed outside skyform, or interrupted"
        return ResourceChange(address, "app", name, Action.CREATE, None, after, reason=reason)
    changed = changed_attributes(prior, after)
    forces = [c for c in changed if c in FORCES_NEW_REVISION]
    tainted = tainted_reason(record)
    if force or forces or tainted is not None:
        return ResourceChange(
            address,
            "app",
            name,
            Action.REPLACE,
            prior,
            after,
            changed=changed,
            forces=forces,
            reason="--replace" if force and not forces else None,
            tainted=tainted,
        )
    if changed:
        return ResourceChange(address, "app", name, Action.UPDATE, prior, after, changed=changed)
    return ResourceChange(address, "app", name, Action.NOOP, prior, after)


def changed_attributes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Top-level attributes that differ, by deepdiff (types matter: 2 is not 2.0 is not "2")."""
    b, a = _comparable(before), _comparable(after)
    if b == a:
        return []
    from deepdiff import DeepDiff

    diff = DeepDiff(b, a, ignore_order=False, verbose_level=0)
    roots = {str(path) for path in diff.affected_root_keys}
    order = list(after) + [k for k in before if k not in after]
    return [k for k in order if k in roots]


def _comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    skip = (*NOT_COMPARED, *BOOKKEEPING)
    return {k: _numeric(v) for k, v in attrs.items() if k not in skip}


def _numeric(value: Any) -> Any:
    """2 and 2.0 are the same timeout: compare numbers by value, not by JSON type."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def state_app_names(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The state's app records by app name (`app.hello` -> `hello`)."""
    return {a[len(APP_PREFIX) :]: r for a, r in resources.items() if a.startswith(APP_PREFIX)}


def app_drift(
    resources: dict[str, dict[str, Any]], live: Live, desired: set[str]
) -> list[dict[str, str]]:
    """Where the state and the gateway disagree about apps, each with a reason people read."""
    out: list[dict[str, str]] = []
    if live.apps is None:
        return out
    for name, record in sorted(state_app_names(resources).items()):
        addr = app_address(name)
        if "pending" in record:
            out.append(
                {
                    "address": addr,
                    "reason": f"an interrupted {record['pending'].get('operation', 'change')} is reconciled",
                }
            )
        elif name not in live.apps:
            out.append({"address": addr, "reason": "not registered at the gateway any more"})
        elif live.apps[name].get("fingerprint") != record.get("fingerprint"):
            out.append({"address": addr, "reason": "the live revision differs from the state"})
    for name in sorted(set(live.apps) - set(state_app_names(resources))):
        if name not in desired:
            out.append(
                {
                    "address": app_address(name),
                    "reason": "registered at the gateway but not in the state",
                }
            )
    return out
