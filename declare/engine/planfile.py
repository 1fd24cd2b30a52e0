"""Saved plans (`plan --out`, `apply PLAN`): the plan, its bundles and the desired spec, signed.

A saved plan is applied exactly: it carries the bundles it was made with and
the state's lineage and serial (`apply` refuses it once the state moved on),
and its HMAC signature, with the stack's bundle key, refuses a file that was
edited or made for another stack.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

from skyform.engine.plan import FORMAT_VERSION, Plan, ResourceChange, strip_bookkeeping
from skyform.errors import SkyformError
from skyform.files import write_atomic
from skyform.signing import sign

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
                c.address: {
                    "before": strip_bookkeeping(c.before),
                    "after": strip_bookkeeping(c.after),
                }
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
