"""The planner: the stack file against the refreshed state, as a `Plan`.

A change of code, requirements, machine type or Python needs new runners (a
new revision); other changes are in place (see `plan`). A plan needs a full
bundle only for apps that change; for the others the fingerprint is enough,
which keeps a no-change plan of a large stack fast. On the local provider,
GPU machine types on a host without GPUs are a warning under `run` and an
error under `apply`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyform.engine.costs import plan_costs
from skyform.engine.diff import (
    app_change,
    app_drift,
    gateway_attrs,
    gateway_change,
    state_app_names,
)
from skyform.engine.outputs import public_base, stack_outputs
from skyform.engine.plan import (
    APP_PREFIX,
    GATEWAY,
    SCALING_OPTIONS,
    Action,
    Plan,
    PlanRequest,
    ResourceChange,
    app_address,
    strip_bookkeeping,
)
from skyform.engine.refresh import Live, prior_app
from skyform.engine.stackfile import Stack
from skyform.errors import SkyformError
from skyform.options import option_or_default
from skyform.signing import sign
from skyform.suggest import did_you_mean

if TYPE_CHECKING:
    from skyform.providers.base import Provider


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
    gw_prior = gateway_attrs(resources.get(GATEWAY)) if live.gateway_alive else None
    gw_change = gateway_change(gw_prior, gw_want, GATEWAY in replace, live)
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
                return app_change(_n, _p, after, _f, gateway_fresh, _r, live)

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
    known = set(state_app_names(resources)) | set(live.apps or {})
    for name in sorted(known - desired_names):
        if app_targets and name not in app_targets:
            continue
        record = resources.get(app_address(name))
        before = prior_app(record, (live.apps or {}).get(name)) or strip_bookkeeping(record)
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
        drift=list(live.drift) + app_drift(resources, live, desired_names),
        costs=plan_costs(stack, provider, app_changes),
        warnings=sorted(set(notes)),
        gateway_spec=gw_want,
        bundles=built,
    )


def _destroy_plan(stack: Stack, state: Any, live: Live) -> Plan:
    """Everything the state records or the gateway runs goes; the gateway last."""
    resources = state.resources
    record = resources.get(GATEWAY)
    changes: list[ResourceChange] = []
    names = set(state_app_names(resources)) | set(live.apps or {})
    for name in sorted(names):
        before = strip_bookkeeping(resources.get(app_address(name))) or prior_app(
            None, (live.apps or {}).get(name)
        )
        changes.append(ResourceChange(app_address(name), "app", name, Action.DELETE, before, None))
    gw_action = Action.DELETE if record is not None else Action.NOOP
    changes.insert(
        0, ResourceChange(GATEWAY, "gateway", "gateway", gw_action, gateway_attrs(record), None)
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


def _resolve_names(
    names: tuple[str, ...], stack: Stack, state: Any, live: Live, flag: str
) -> set[str]:
    """`hello` or `app.hello` or `gateway` -> app names (and "gateway"); unknown ones are errors."""
    known = set(stack.apps) | set(state_app_names(state.resources)) | set(live.apps or {})
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
