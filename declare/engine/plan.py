"""Plans: what the stack file wants, against what is live, as a list of resource changes.

Two kinds of resource, with Terraform's addresses:

- `gateway`: the stack's one gateway. Any change of where it runs (provider,
  host, port) replaces it (`-/+`); a gateway that is not running any more is
  created again.
- `app.NAME`: one app registered at the gateway. A change of code,
  requirements, machine type or Python needs new runners: a new revision
  (`+/-`, rolling). Scaling knobs, timeouts, auth, env and secrets change in
  place (`~`).

"What is live" is the state refreshed against the gateway: the gateway's own
list of apps wins over what the state remembers, so drift (a killed gateway,
an interrupted apply, an app removed by hand) shows up as the change that
repairs it. A plan needs a full bundle only for apps that change; for the
others the fingerprint is enough, which keeps a no-change plan of a large
stack fast.
"""

from __future__ import annotations

import hmac
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyform.engine.stackfile import Stack
from skyform.errors import SkyformError
from skyform.files import write_atomic
from skyform.options import option_or_default
from skyform.signing import sign
from skyform.suggest import did_you_mean

if TYPE_CHECKING:
    from skyform.providers.base import Provider

FORMAT_VERSION = "1"
GATEWAY = "gateway"
APP_PREFIX = "app."

# App attributes whose change needs new runners (a new revision); any other change is in place.
FORCES_NEW_REVISION = ("app", "python", "machine_type", "requirements", "revision", "env_key")
SENSITIVE = ("secrets_digest",)
# Attributes kept in state for bookkeeping but never compared.
NOT_COMPARED = ("fingerprint",)
# Apply's own bookkeeping in a state record: not an attribute of the resource.
BOOKKEEPING = ("handle", "pending", "tainted")
GATEWAY_ATTRS = ("provider", "host", "port", "tls", "public_url", "trusted_proxies", "limits")
# What a gateway recorded before an attribute existed had: no TLS, no proxies.
_GATEWAY_DEFAULTS: dict[str, Any] = {"tls": "off", "public_url": None, "trusted_proxies": []}
SCALING_OPTIONS = (
    "min_runners",
    "max_runners",
    "keep_alive",
    "max_multiplexing",
    "request_timeout",
    "startup_timeout",
)


class Action(Enum):
    """What a plan does to one resource; `.actions` is its JSON `actions` list (DESIGN §4).

    The order of a two-step action is the order apply carries it out in:
    `replace` starts the new one before the old one goes (an app's rolling
    revision), `recreate` removes the old one first (the gateway, whose port
    cannot be held twice).
    """

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # create-before-destroy
    RECREATE = "recreate"  # delete-then-create
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def actions(self) -> list[str]:
        return list(_ACTION_LISTS[self])

    @property
    def creates(self) -> bool:
        """Something new comes to exist (counted as one "to add")."""
        return "create" in _ACTION_LISTS[self]

    @property
    def deletes(self) -> bool:
        """Something existing goes (counted as one "to destroy")."""
        return "delete" in _ACTION_LISTS[self]

    @classmethod
    def from_actions(cls, actions: Iterable[str]) -> Action:
        """The action of a JSON `actions` list; an unknown list is a plan file this cannot read."""
        key = tuple(actions)
        for action, listed in _ACTION_LISTS.items():
            if listed == key:
                return action
        raise SkyformError(f"unknown plan actions {list(key)!r}")


_ACTION_LISTS: dict[Action, tuple[str, ...]] = {
    Action.CREATE: ("create",),
    Action.UPDATE: ("update",),
    Action.REPLACE: ("create", "delete"),
    Action.RECREATE: ("delete", "create"),
    Action.DELETE: ("delete",),
    Action.NOOP: ("no-op",),
}


def app_address(name: str) -> str:
    return APP_PREFIX + name


@dataclass
class ResourceChange:
    """One resource's planned change (Terraform's `resource_changes` entry)."""

    address: str
    type: str  # "gateway" | "app"
    name: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: list[str] = field(default_factory=list)  # top-level attributes that differ
    forces: list[str] = field(default_factory=list)  # of those, the ones forcing replacement
    reason: str | None = None  # why, when not a plain config change (drift, --replace)
    tainted: str | None = None  # why the last apply left it broken: it is replaced

    @property
    def action_reason(self) -> str | None:
        """Terraform's `action_reason` for the JSON plan."""
        if self.tainted is not None:
            return "replace_because_tainted"
        if self.reason == "--replace":
            return "replace_by_request"
        return None

    @property
    def actions(self) -> list[str]:
        """The JSON `actions` list of this change's action."""
        return self.action.actions

    @property
    def is_noop(self) -> bool:
        return self.action is Action.NOOP

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "type": self.type,
            "name": self.name,
            "actions": list(self.actions),
            "before": _public(self.before),
            "after": _public(self.after),
            "changed": list(self.changed),
            "forces": list(self.forces),
            "reason": self.reason,
            "action_reason": self.action_reason,
            "tainted": self.tainted,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ResourceChange:
        return cls(
            address=raw["address"],
            type=raw["type"],
            name=raw["name"],
            action=Action.from_actions(raw["actions"]),
            before=raw.get("before"),
            after=raw.get("after"),
            changed=list(raw.get("changed", [])),
            forces=list(raw.get("forces", [])),
            reason=raw.get("reason"),
            tainted=raw.get("tainted"),
        )


@dataclass
class Plan:
    """A stack's planned changes, and everything `apply` needs to carry them out exactly."""

    stack: str
    mode: str  # "apply" | "destroy" | "run"
    lineage: str | None  # None: no state stored yet
    serial: int
    resource_changes: list[ResourceChange]
    outputs: dict[str, Any]
    drift: list[dict[str, str]] = field(default_factory=list)
    costs: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    # For apply: per app, the env to register (never secret values) and the bundle bytes.
    gateway_spec: dict[str, Any] = field(default_factory=dict)
    bundles: dict[str, bytes] = field(default_factory=dict)

    @property
    def changes(self) -> list[ResourceChange]:
        return [c for c in self.resource_changes if not c.is_noop]

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        """Terraform's summary: replacements count as one add and one destroy."""
        add = change = destroy = 0
        for c in self.changes:
            add += c.action.creates
            destroy += c.action.deletes
            change += c.action is Action.UPDATE
        return {"add": add, "change": change, "destroy": destroy}

    def change(self, address: str) -> ResourceChange | None:
        return next((c for c in self.resource_changes if c.address == address), None)

    def to_dict(self) -> dict[str, Any]:
        """The public `--json` form (no bundles, no secret values)."""
        from skyform import __version__

        return {
            "format_version": FORMAT_VERSION,
            "skyform_version": __version__,
            "stack": self.stack,
            "mode": self.mode,
            "state": {"lineage": self.lineage, "serial": self.serial},
            "resource_changes": [c.to_dict() for c in self.resource_changes],
            "resource_drift": list(self.drift),
            "summary": self.counts(),
            "changes": self.has_changes,
            "planned_outputs": self.outputs,
            "costs": self.costs,
            "warnings": list(self.warnings),
        }


# -- building a plan -----------------------------------------------------------------------


@dataclass
class Live:
    """The state refreshed against what runs: the gateway and its apps."""

    gateway_alive: bool
    gateway_url: str | None
    apps: dict[str, dict[str, Any]] | None  # None: the gateway cannot be asked
    drift: list[dict[str, str]] = field(default_factory=list)


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


def desired_gateway(stack: Stack, port: int | None = None) -> dict[str, Any]:
    from skyform.providers import provider_name

    gw = stack.model.gateway
    want: dict[str, Any] = {
        "provider": provider_name(stack.model.provider),
        "host": gw.host,
        "port": port if port is not None else gw.port,
        "tls": stack.tls_mode,
        "public_url": gw.public_url,
        "trusted_proxies": list(gw.trusted_proxies),
    }
    limits = gw.limits.overrides()
    if limits:  # absent when unset, so that stacks without limits see no change
        want["limits"] = limits
    if gw.webhook_hosts is not None:  # only when set: stacks without it see no change
        want["webhook_hosts"] = list(gw.webhook_hosts)
    return want


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


@dataclass
class PlanRequest:
    """What the user asked for on the command line."""

    mode: str = "apply"  # "apply" | "destroy" | "run"
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    port: int | None = None  # `run --port`


def build_plan(
    stack: Stack,
    state: Any,  # StateDocument
    live: Live,
    keys: dict[str, str],
    request: PlanRequest,
    provider: Provider | None = None,
    progress: Any = None,
) -> Plan:
    """Diff the stack file against the refreshed state. Builds bundles only for changed apps."""
    if request.mode == "destroy":
        return _destroy_plan(stack, state, live)
    targets = _resolve_names(request.targets, stack, state, live, "--target")
    replace = _resolve_names(request.replace, stack, state, live, "--replace")
    resources = state.resources
    notes: list[str] = []

    # The gateway first: every app lives in it.
    gw_want = desired_gateway(stack, request.port)
    gw_prior = _gateway_attrs(resources.get(GATEWAY)) if live.gateway_alive else None
    gw_change = _gateway_change(gw_prior, gw_want, GATEWAY in replace, live)
    gateway_fresh = gw_change.action.creates  # every app must be registered anew

    desired_names = set(stack.apps)
    app_targets = targets - {GATEWAY}
    selected = {n for n in desired_names if not app_targets or n in app_targets}
    built: dict[str, bytes] = {}
    app_changes: dict[str, ResourceChange] = {}
    from skyform.loader import batch_loading

    env_key_for = _environment_keys(provider)
    with batch_loading():  # one import-cache refresh for the whole stack
        for name in sorted(selected):
            record = resources.get(app_address(name))
            prior = None if gateway_fresh else prior_app(record, (live.apps or {}).get(name))
            force = name in replace

            def decide(
                after: dict[str, Any],
                _n: str = name,
                _r: Any = record,
                _p: Any = prior,
                _f: bool = force,
            ) -> ResourceChange:
                return _app_change(_n, _p, after, _f, gateway_fresh, _r, live)

            try:
                change, bundle = _desired_app(
                    stack, name, keys, request.mode, prior, decide, notes, env_key_for
                )
            except SkyformError as exc:
                raise SkyformError(f"{stack.where('apps', name)}: apps.{name}: {exc}") from None
            if bundle is not None:
                built[name] = bundle
            app_changes[name] = change
            if progress is not None:
                progress(name)
    known = set(_state_app_names(resources)) | set(live.apps or {})
    for name in sorted(known - desired_names):
        if app_targets and name not in app_targets:
            continue
        record = resources.get(app_address(name))
        before = prior_app(record, (live.apps or {}).get(name)) or _strip(record)
        app_changes[name] = ResourceChange(
            app_address(name),
            "app",
            name,
            Action.DELETE,
            before,
            None,
            reason="not in the stack file any more",
        )
    _check_local_gpus(stack, app_changes, request.mode, notes)
    if targets:
        notes.append(
            "--target is in effect: this plan covers part of the stack; "
            "run a full plan before relying on it"
        )
    if targets and GATEWAY not in targets and not gateway_fresh:
        gw_change.action = Action.NOOP  # untargeted replacements wait for a full apply
    changes = [gw_change, *(app_changes[n] for n in sorted(app_changes))]
    base = public_base(gw_want)
    return Plan(
        stack=stack.name,
        mode=request.mode,
        lineage=state.lineage if state.serial > 0 else None,
        serial=state.serial,
        resource_changes=changes,
        outputs=stack_outputs(base, desired_names),
        drift=list(live.drift) + _app_drift(resources, live, desired_names),
        costs=_costs(stack, provider, app_changes),
        warnings=sorted(set(notes)),
        gateway_spec=gw_want,
        bundles=built,
    )


def _destroy_plan(stack: Stack, state: Any, live: Live) -> Plan:
    """Everything the state records or the gateway runs goes; the gateway last."""
    resources = state.resources
    record = resources.get(GATEWAY)
    changes: list[ResourceChange] = []
    names = set(_state_app_names(resources)) | set(live.apps or {})
    for name in sorted(names):
        before = _strip(resources.get(app_address(name))) or prior_app(
            None, (live.apps or {}).get(name)
        )
        changes.append(ResourceChange(app_address(name), "app", name, Action.DELETE, before, None))
    gw_action = Action.DELETE if record is not None else Action.NOOP
    changes.insert(
        0, ResourceChange(GATEWAY, "gateway", "gateway", gw_action, _gateway_attrs(record), None)
    )
    return Plan(
        stack=stack.name,
        mode="destroy",
        lineage=state.lineage if state.serial > 0 else None,
        serial=state.serial,
        resource_changes=changes,
        outputs={},
        drift=list(live.drift),
    )


def _desired_app(
    stack: Stack,
    name: str,
    keys: dict[str, str],
    mode: str,
    prior: dict[str, Any] | None,
    decide: Any,
    notes: list[str],
    env_key_for: Callable[[list[str]], str | None],
) -> tuple[ResourceChange, bytes | None]:
    from skyform.bundle import app_identity, bundle_loaded_app
    from skyform.loader import loaded_app

    entry = stack.apps[name]
    overrides = entry.overrides()
    with loaded_app(entry.app, stack.base_dir) as loaded:
        if "auth" not in overrides:
            overrides["auth"] = loaded.cls.auth or ("public" if mode == "run" else "private")
        identity = app_identity(loaded, overrides)
        options = identity.options
        after: dict[str, Any] = {
            "app": entry.app,
            "revision": identity.revision,
            "fingerprint": identity.fingerprint,
            "python": _python_version(),
            "machine_type": list(options.machine_types),
            "requirements": list(options.requirements),
            **{n: getattr(options, n) for n in SCALING_OPTIONS},
            "auth": options.auth,
            "env": dict(sorted(entry.env.items())),
            "secrets": list(entry.secrets),
        }
        env_key = env_key_for(list(options.requirements))
        if env_key:
            after["env_key"] = env_key
        after["secrets_digest"] = _secrets_digest(
            entry.secrets, keys["bundle_key"], prior, notes, name
        )
        change: ResourceChange = decide(after)
        if change.is_noop:
            return change, None
        # Only a change needs the full bundle (pickle + OpenAPI): the slow part of a plan.
        bundle = bundle_loaded_app(loaded, keys["bundle_key"], overrides)
    return change, bundle.data


ALLOW_CPU_FALLBACK = "SKYFORM_ALLOW_CPU_FALLBACK"


def host_has_gpu() -> bool:
    """Whether this host has an NVIDIA GPU a local runner could use."""
    import shutil

    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def _check_local_gpus(
    stack: Stack, changes: dict[str, ResourceChange], mode: str, notes: list[str]
) -> None:
    """On the local provider, GPU machine types run on CPU: a warning in run, an error in apply.

    `SKYFORM_ALLOW_CPU_FALLBACK=1` allows it under apply too (a CI box without GPUs).
    """
    from skyform.machines import get_machine_type
    from skyform.providers import provider_class

    if not provider_class(stack.model.provider).runs_on_this_host:
        return
    gpu_apps = [
        (name, c.after["machine_type"])
        for name, c in sorted(changes.items())
        if c.after is not None
        and not c.is_noop
        and all(get_machine_type(m).needs_gpu for m in c.after["machine_type"])
    ]
    if not gpu_apps:
        return
    if host_has_gpu():
        _note_gpu_capacity(stack, changes, gpu_apps, notes)
        return
    allowed = mode == "run" or os.environ.get(ALLOW_CPU_FALLBACK, "") in {"1", "true", "yes"}
    name, types = gpu_apps[0]
    if not allowed:
        raise SkyformError(
            f"{stack.where('apps', name)}: apps.{name}: machine type {types[0]} needs a GPU and "
            f"this host has none; the local provider would run it on CPU. Set "
            f"{ALLOW_CPU_FALLBACK}=1 to allow that, or use the skypilot provider"
        )
    for name, types in gpu_apps:
        notes.append(f"app {name}: {types[0]} needs a GPU this host lacks; it runs on CPU here")


def _note_gpu_capacity(
    stack: Stack,
    changes: dict[str, ResourceChange],
    gpu_apps: list[tuple[str, list[str]]],
    notes: list[str],
) -> None:
    """On a host with GPUs: how many runners of each GPU app it can hold, on which GPUs.

    Each runner gets GPUs of its own (the local provider's placement), so
    the host, not `max_runners`, may be what limits an app; and a GPU model
    standing in for the one asked for is named.
    """
    from skyform.providers.gpus import capacity, inventory

    gpus = inventory()
    if not gpus:
        return
    for name, types in gpu_apps:
        fits = capacity(types, gpus)
        line = fits.describe(name)
        after = changes[name].after or {}
        wanted = int(option_or_default(after, "max_runners"))
        if 0 < fits.runners < wanted:
            line += f"; max_runners is {wanted}, so at most {fits.runners} run at once here"
        notes.append(line)


def _python_version() -> str:
    from skyform.bundle import PYTHON_VERSION

    return PYTHON_VERSION


def _environment_keys(provider: Provider | None) -> Callable[[list[str]], str | None]:
    """How to name an app's environment: the key its runners' environment is built under.

    The provider says (`Provider.environment_key`: SkyPilot ships a wheel whose
    digest is part of the key); without one, runners use the local recipe of
    `skyform.providers.environments`.
    """
    from skyform.providers.base import local_environment_key

    if provider is None:
        return lambda requirements: local_environment_key(tuple(requirements), _python_version())
    return lambda requirements: provider.environment_key(requirements, _python_version())


def _secrets_digest(
    names: list[str], key: str, prior: dict[str, Any] | None, notes: list[str], app: str
) -> str | None:
    """A keyed digest of the secrets' values: a rotated secret shows as a change, no value leaks."""
    if not names:
        return None
    missing = [n for n in names if n not in os.environ]
    if missing:
        notes.append(
            f"app {app}: secret {missing[0]} is not set here; its change cannot be detected "
            "(apply needs it)"
        )
        return (prior or {}).get("secrets_digest")
    return "hmac-sha256:" + sign({n: os.environ[n] for n in names}, key)[:32]


def _gateway_attrs(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    # limits: only when the stack sets any, so that stacks without limits see no change
    return {
        k: record.get(k, _GATEWAY_DEFAULTS.get(k))
        for k in GATEWAY_ATTRS
        if k != "limits" or record.get(k)
    }


def _gateway_change(
    prior: dict[str, Any] | None, want: dict[str, Any] | None, force: bool, live: Live
) -> ResourceChange:
    if want is None:
        return ResourceChange(GATEWAY, "gateway", "gateway", Action.NOOP, prior, None)
    if prior is None:
        reason = live.drift[0]["reason"] if live.drift else None
        return ResourceChange(
            GATEWAY, "gateway", "gateway", Action.CREATE, None, want, reason=reason
        )
    changed = _changed(prior, want)
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


def _app_change(
    name: str,
    prior: dict[str, Any] | None,
    after: dict[str, Any],
    force: bool,
    gateway_fresh: bool,
    record: dict[str, Any] | None,
    live: Live,
) -> ResourceChange:
    address = app_address(name)
    if prior is None:
        reason = None
        if gateway_fresh and record is not None:
            reason = "the gateway is created again"
        elif record is not None and live.apps is not None:
            reason = "not registered at the gateway: removed outside skyform, or interrupted"
        return ResourceChange(address, "app", name, Action.CREATE, None, after, reason=reason)
    changed = _changed(prior, after)
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


def tainted_reason(record: dict[str, Any] | None) -> str | None:
    """Why the last apply left this app unable to serve its revision, if it did."""
    tainted = (record or {}).get("tainted")
    if not tainted:
        return None
    reason = tainted.get("reason") if isinstance(tainted, dict) else tainted
    return str(reason or "the last apply could not make it live")


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
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


def _strip(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A state record without apply's bookkeeping."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if k not in BOOKKEEPING}


def _state_app_names(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a[len(APP_PREFIX) :]: r for a, r in resources.items() if a.startswith(APP_PREFIX)}


def _app_drift(
    resources: dict[str, dict[str, Any]], live: Live, desired: set[str]
) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if live.apps is None:
        return out
    for name, record in sorted(_state_app_names(resources).items()):
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
    for name in sorted(set(live.apps) - set(_state_app_names(resources))):
        if name not in desired:
            out.append(
                {
                    "address": app_address(name),
                    "reason": "registered at the gateway but not in the state",
                }
            )
    return out


def _resolve_names(
    names: tuple[str, ...], stack: Stack, state: Any, live: Live, flag: str
) -> set[str]:
    """`hello` or `app.hello` or `gateway` -> app names (and "gateway"); unknown ones are errors."""
    known = set(stack.apps) | set(_state_app_names(state.resources)) | set(live.apps or {})
    out: set[str] = set()
    for raw in names:
        name = raw.removeprefix(APP_PREFIX)
        if raw == GATEWAY:
            out.add(GATEWAY)
            continue
        if name not in known:
            choices = [*sorted(known), GATEWAY]
            raise SkyformError(
                f'{flag} {raw}: no app "{name}" in this stack{did_you_mean(name, choices)}'
            )
        out.add(name)
    return out


def _costs(
    stack: Stack, provider: Provider | None, changes: dict[str, ResourceChange]
) -> dict[str, Any] | None:
    """The plan's cost section: each desired app's size, priced by the provider."""
    if provider is None:
        return None
    sizes: dict[str, tuple[str, int, int]] = {}
    for name in sorted(stack.apps):
        change = changes.get(name)
        after = change.after if change else None
        if after:
            sizes[name] = (after["machine_type"][0], after["min_runners"], after["max_runners"])
    return estimate_costs(provider, sizes)


def estimate_costs(
    provider: Provider, apps: Mapping[str, tuple[str, int, int]]
) -> dict[str, Any] | None:
    """Hourly cost per app at min and max runners, where the provider can price machines.

    `apps` is {name: (machine type, min_runners, max_runners)}. An app whose
    machine type the provider does not price (`Provider.price` is None, or
    raises a user error) is left out; None when no app is priced. Pure given
    the provider's prices, so it is tested without a cloud.
    """
    apps_out: dict[str, Any] = {}
    total_min = total_max = 0.0
    cache: dict[str, Any] = {}
    for name, (mt, min_runners, max_runners) in sorted(apps.items()):
        if mt not in cache:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cache[mt] = provider.price(mt)
            except SkyformError:
                cache[mt] = None
        price = cache[mt]
        if price is None:
            continue
        lo = price.hourly_usd * min_runners
        hi = price.hourly_usd * max_runners
        total_min += lo
        total_max += hi
        apps_out[name] = {
            "machine_type": mt,
            "instance_type": price.instance_type,
            "cloud": price.cloud,
            "region": price.region,
            "hourly_usd": price.hourly_usd,
            "hourly_usd_min": round(lo, 4),
            "hourly_usd_max": round(hi, 4),
        }
    if not apps_out:
        return None
    return {
        "apps": apps_out,
        "hourly_usd_min": round(total_min, 4),
        "hourly_usd_max": round(total_max, 4),
    }


def _public(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Attributes as shown to people and `--json`: sensitive ones masked."""
    out = _strip(attrs)
    if out is None:
        return None
    for key in SENSITIVE:
        if out.get(key) is not None:
            out[key] = "(sensitive value)"
    return out


# -- saved plans ---------------------------------------------------------------------------

PLAN_FILE_MAGIC = "skyform-plan"


def save_plan(plan: Plan, path: Path | str, key: str, stack_file: str) -> Path:
    """Write a plan file: the plan, its bundles and the desired spec, signed with the stack key."""
    import base64

    body = {
        "plan": plan.to_dict(),
        "private": {
            "gateway_spec": plan.gateway_spec,
            "stack_file": stack_file,
            "before_after": {
                c.address: {"before": _strip(c.before), "after": _strip(c.after)}
                for c in plan.resource_changes
            },
        },
        "bundles": {n: base64.b64encode(b).decode() for n, b in sorted(plan.bundles.items())},
    }
    signed = {"format": PLAN_FILE_MAGIC, "version": 1, **body, "signature": sign(body, key)}
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(signed, sort_keys=True), mode=0o600)  # it carries bundles
    except OSError as exc:
        raise SkyformError(f"{path}: cannot write the plan file: {exc.strerror or exc}") from None
    return path


def load_plan(path: Path | str, key: str) -> Plan:
    """Read a plan file; refuses one that is not a plan, or was changed after it was written."""
    import base64

    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SkyformError(f"{path}: no such plan file") from None
    except (OSError, ValueError) as exc:
        raise SkyformError(f"{path}: not a skyform plan file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != PLAN_FILE_MAGIC:
        raise SkyformError(f"{path}: not a skyform plan file")
    if raw.get("version") != 1:
        raise SkyformError(f"{path}: plan file version {raw.get('version')!r} is not supported")
    body: dict[str, Any] = {k: raw.get(k) for k in ("plan", "private", "bundles")}
    if not hmac.compare_digest(str(raw.get("signature", "")), sign(body, key)):
        raise SkyformError(
            f"{path}: the plan file's signature does not match (it was edited, or made for "
            "another stack or with another SKYFORM_BUNDLE_KEY); run plan again"
        )
    public, private = body["plan"], body["private"]
    if not isinstance(public, dict) or not isinstance(private, dict):
        raise SkyformError(f"{path}: not a skyform plan file (its plan is missing)")
    if public.get("format_version") != FORMAT_VERSION:
        raise SkyformError(f"{path}: plan format {public.get('format_version')!r} is not supported")
    from skyform import __version__

    if public.get("skyform_version") != __version__:
        raise SkyformError(
            f"{path}: the plan was made by skyform {public.get('skyform_version')}, "
            f"this is {__version__}; run plan again"
        )
    changes = []
    for rc in public["resource_changes"]:
        try:
            change = ResourceChange.from_dict(rc)
        except SkyformError as exc:
            raise SkyformError(f"{path}: {exc}") from None
        exact = private["before_after"].get(change.address, {})
        change.before, change.after = exact.get("before"), exact.get("after")
        changes.append(change)
    state = public["state"]
    return Plan(
        stack=public["stack"],
        mode=public["mode"],
        lineage=state["lineage"],
        serial=state["serial"],
        resource_changes=changes,
        outputs=public.get("planned_outputs") or {},
        drift=public.get("resource_drift") or [],
        costs=public.get("costs"),
        warnings=public.get("warnings") or [],
        gateway_spec=private.get("gateway_spec") or {},
        bundles={n: base64.b64decode(b) for n, b in (body["bundles"] or {}).items()},
    )
