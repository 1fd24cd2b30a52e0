"""The state document: what a stack owns, as one JSON object.

`{version, lineage, serial, stack, resources, outputs}`. `lineage` is fixed
when the state is first created, so two unrelated states of the same stack can
never be mistaken for each other; `serial` grows by one on every write that
changes something, so a writer holding an older copy is refused instead of
silently undoing someone else's apply. The backends enforce both rules; this
module only checks shape.

Secrets never enter a state: a resource keeps the *names* of its secrets
(`"secrets": ["HF_TOKEN"]`), never their values. The model refuses a mapping
there, or a secret's name in a sibling `env`, and `find_secret_values` is a
last line of defence that scans the bytes about to be stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from skyform.state.errors import StateError

STATE_VERSION = 1
"""The format this skyform reads and writes; any other version is refused."""

FIELDS = ("version", "lineage", "serial", "stack", "resources", "outputs")

_SEPARATORS = (", ", ": ")

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

MIN_SCANNED_SECRET_LEN = 8
"""Shorter values are not scanned for: they would match ordinary numbers and words."""


@dataclass(frozen=True)
class StateDocument:
    """One stack's state. Treat as a value: `evolve` returns a changed copy."""

    version: int
    lineage: str
    serial: int
    stack: str
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, stack: str) -> StateDocument:
        """A fresh, empty state with a new lineage and serial 0."""
        return cls(version=STATE_VERSION, lineage=str(uuid.uuid4()), serial=0, stack=stack)

    def evolve(
        self,
        *,
        resources: Mapping[str, Mapping[str, Any]] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> StateDocument:
        """A copy with new resources and/or outputs; lineage and serial are kept.

        The backend decides the next serial when the copy is written, so a
        caller cannot skip or reuse one.
        """
        new_resources = (
            self.resources if resources is None else {k: dict(v) for k, v in resources.items()}
        )
        new_outputs = self.outputs if outputs is None else dict(outputs)
        validate_resources(new_resources)
        check_outputs(new_outputs)
        return dataclasses.replace(self, resources=new_resources, outputs=new_outputs)

    def with_serial(self, serial: int) -> StateDocument:
        """A copy carrying `serial`; only backends call this, when they store it."""
        return dataclasses.replace(self, serial=serial)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "lineage": self.lineage,
            "serial": self.serial,
            "stack": self.stack,
            "resources": {k: self.resources[k] for k in sorted(self.resources)},
            "outputs": self.outputs,
        }

    def to_json(self) -> str:
        """The stored form: fields one per line, and each resource on one line.

        One line per resource keeps diffs and greps of a state meaningful, and
        lets the C JSON encoder do the work (full indentation would fall back
        to Python's encoder, several times slower on a large stack).
        `skyform state show` pretty-prints for people.
        """
        try:
            head = [f"  {json.dumps(k)}: {json.dumps(getattr(self, k))}" for k in FIELDS[:4]]
            rows = [
                f"    {json.dumps(a, ensure_ascii=False)}: "
                f"{json.dumps(self.resources[a], ensure_ascii=False, separators=_SEPARATORS)}"
                for a in sorted(self.resources)
            ]
            resources = "{\n" + ",\n".join(rows) + "\n  }" if rows else "{}"
            outputs = json.dumps(self.outputs, ensure_ascii=False, separators=_SEPARATORS)
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"state of stack {self.stack!r} is not JSON-serialisable: {exc}"
            ) from None
        body = ",\n".join([*head, f'  "resources": {resources}', f'  "outputs": {outputs}'])
        return "{\n" + body + "\n}\n"

    def same_content(self, other: StateDocument) -> bool:
        """True when writing `other` over `self` would change nothing but the serial."""
        return (self.version, self.stack, self.resources, self.outputs) == (
            other.version,
            other.stack,
            other.resources,
            other.outputs,
        )

    @classmethod
    def from_json(cls, data: str | bytes, source: str = "state") -> StateDocument:
        """Parse and check a stored document; `source` names it in errors (a path, a row)."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"{source} is not valid JSON ({exc}); it was left untouched") from None
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "state") -> StateDocument:
        if not isinstance(raw, dict):
            raise StateError(f"{source} is not a state document (expected a JSON object)")
        version = raw.get("version")
        if type(version) is not int:
            raise StateError(f"{source} has no integer 'version'; it is not a skyform state")
        if version != STATE_VERSION:
            hint = "it was written by a newer skyform; upgrade" if version > STATE_VERSION else ""
            raise StateError(
                f"{source} has state format version {version}, this skyform reads version "
                f"{STATE_VERSION}{'; ' + hint if hint else ''}; it was left untouched"
            )
        missing = [k for k in FIELDS if k not in raw]
        unknown = sorted(set(raw) - set(FIELDS))
        if missing or unknown:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if unknown:
                parts.append("unknown keys " + ", ".join(unknown))
            raise StateError(f"{source} is not a valid state document ({'; '.join(parts)})")
        lineage, serial, stack = raw["lineage"], raw["serial"], raw["stack"]
        if not isinstance(lineage, str) or not lineage:
            raise StateError(f"{source}: 'lineage' must be a non-empty string")
        if type(serial) is not int or serial < 0:
            raise StateError(f"{source}: 'serial' must be a non-negative integer")
        if not isinstance(stack, str) or not stack:
            raise StateError(f"{source}: 'stack' must be a non-empty string")
        resources, outputs = raw["resources"], raw["outputs"]
        try:
            validate_resources(resources)
            check_outputs(outputs)
        except StateError as exc:
            raise StateError(f"{source}: {exc}") from None
        return cls(version, lineage, serial, stack, resources, outputs)


def validate_resources(resources: Any) -> set[str]:
    """Shape and secret rules for `resources`: `{address: {...}}`, secrets by name only.

    Returns the names of the secrets the resources declare.
    """
    if not isinstance(resources, dict):
        raise StateError("'resources' must be a mapping of address to object")
    names: set[str] = set()
    for address, body in resources.items():
        if not isinstance(address, str) or not address:
            raise StateError(f"resource address {address!r} must be a non-empty string")
        if not isinstance(body, dict):
            raise StateError(f"resource {address!r} must be a JSON object")
        names.update(_check_secrets(address, body))
    return names


def check_outputs(outputs: Any) -> None:
    if not isinstance(outputs, dict):
        raise StateError("'outputs' must be a mapping")


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every mapping nested anywhere in `value`, itself included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _check_secrets(address: str, body: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for mapping in _dicts(body):
        if "secrets" not in mapping:
            continue
        names = mapping["secrets"]
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise StateError(
                f"resource {address!r}: 'secrets' must be a list of names; "
                "secret values are never stored in state"
            )
        bad = [n for n in names if not SECRET_NAME.match(n)]
        if bad:
            raise StateError(f"resource {address!r}: {bad[0]!r} is not a secret name")
        env = mapping.get("env")
        if isinstance(env, dict):
            leaked = sorted(set(names) & set(env))
            if leaked:
                raise StateError(
                    f"resource {address!r}: secret {leaked[0]} appears in 'env'; "
                    "secrets are kept by name only and read from the environment at apply"
                )
        found.extend(names)
    return found


def secret_names(doc: StateDocument) -> set[str]:
    """The names of every secret any resource of `doc` declares."""
    return validate_resources(doc.resources)


def find_secret_values(
    data: str, names: set[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Names of secrets whose current value occurs in `data` (the text about to be stored).

    Values are looked for as they would appear inside a JSON string. Values
    shorter than MIN_SCANNED_SECRET_LEN are skipped: they are not credible
    secrets and would match unrelated numbers.
    """
    env = os.environ if environ is None else environ
    found = []
    for name in sorted(names):
        value = env.get(name)
        if not value or len(value) < MIN_SCANNED_SECRET_LEN:
            continue
        encoded = json.dumps(value, ensure_ascii=False)[1:-1]
        if value in data or encoded in data:
            found.append(name)
    return found
