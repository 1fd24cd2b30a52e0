"""Plans: what the stack file wants, against what is live, as a list of resource changes.

Two kinds of resource, with Terraform's addresses:

- `gateway`: the stack's one gateway. Any change of where it runs (provider,
  host, port) replaces it (`-/+`); a gateway that is not running any more is
  created again.
- `app.NAME`: one app registered at the gateway. A change of code,
  requirements, machine type or Python needs new runners: a new revision
  (`+/-`, rolling). Scaling knobs, timeouts, auth, env and secrets change in
  place (`~`).

This module is the plan's model: resources, `Action`, `ResourceChange`,
`Plan`. It is made by the planner (`planner.build_plan`, from the stack file
and the state refreshed by `refresh`, compared by `diff`), priced by `costs`,
saved and read by `planfile`, shown by `render` and carried out by `apply`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from skyform.errors import SkyformError

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
            "before": public_attrs(self.before),
            "after": public_attrs(self.after),
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


@dataclass
class PlanRequest:
    """What the user asked for on the command line."""

    mode: str = "apply"  # "apply" | "destroy" | "run"
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    port: int | None = None  # `run --port`


def tainted_reason(record: dict[str, Any] | None) -> str | None:
    """Why the last apply left this app unable to serve its revision, if it did."""
    tainted = (record or {}).get("tainted")
    if not tainted:
        return None
    reason = tainted.get("reason") if isinstance(tainted, dict) else tainted
    return str(reason or "the last apply could not make it live")


def strip_bookkeeping(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A state record without apply's bookkeeping."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if k not in BOOKKEEPING}


def public_attrs(attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Attributes as shown to people and `--json`: sensitive ones masked."""
    out = strip_bookkeeping(attrs)
    if out is None:
        return None
    for key in SENSITIVE:
        if out.get(key) is not None:
            out[key] = "(sensitive value)"
    return out
