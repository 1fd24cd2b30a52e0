"""Plans as people read them: Terraform-shaped text, and a compact Markdown summary.

The text is deterministic (resources in address order, attributes in a fixed
order, hashes shortened the same way every time) so two plans of the same
change are byte-identical, and a CI log diff shows only real differences.
Updates show only the attributes that change; secrets show as
`(sensitive value)`.
"""

from __future__ import annotations

import json
from typing import Any

from skyform.plan import BOOKKEEPING, FORCES_NEW_REVISION, SENSITIVE, Plan, ResourceChange

SYMBOL = {
    ("create",): "+",
    ("update",): "~",
    ("create", "delete"): "+/-",
    ("delete", "create"): "-/+",
    ("delete",): "-",
    ("no-op",): " ",
}
HIDDEN = ("fingerprint",)
HASHES = ("revision", "env_key")
MARKDOWN_ROWS = 50


def symbol(change: ResourceChange) -> str:
    return SYMBOL.get(tuple(change.actions), "?")


def headline(change: ResourceChange) -> str:
    acts = tuple(change.actions)
    addr = change.address
    text = {
        ("create",): f"# {addr} will be created",
        ("update",): f"# {addr} will be updated in place",
        ("create", "delete"): (
            f"# {addr} will get a new revision (rolling: new runners first, then old ones drain)"
        ),
        ("delete", "create"): f"# {addr} must be replaced",
        ("delete",): f"# {addr} will be destroyed",
    }.get(acts, f"# {addr}")
    if change.tainted is not None:
        text = text.replace(f"# {addr} will", f"# {addr} is tainted, so it will", 1)
    if change.reason:
        text += f" ({change.reason})"
    return text


def summary_line(plan: Plan) -> str:
    if not plan.has_changes:
        return "No changes. Your stack matches the configuration."
    c = plan.counts()
    verb = "Destroy" if plan.mode == "destroy" else "Plan"
    return f"{verb}: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."


def render_text(plan: Plan) -> str:
    """The human plan, like `terraform plan`."""
    lines: list[str] = []
    if plan.drift:
        lines.append("Note: Objects have changed outside of skyform")
        lines.append("")
        for d in plan.drift:
            lines.append(f"  # {d['address']}: {d['reason']}")
        lines.append("")
    for warning in plan.warnings:
        lines.append(f"Warning: {warning}")
    if plan.warnings:
        lines.append("")
    changes = plan.changes
    if changes:
        lines.append("skyform will perform the following actions:")
        lines.append("")
        for change in changes:
            lines.extend(_resource_block(change))
            lines.append("")
    lines.append(summary_line(plan))
    if plan.costs:
        lines.append("")
        lines.extend(_costs(plan.costs))
    if _outputs_change(plan):
        lines.append("")
        lines.append("Outputs after apply:")
        lines.append(f"  gateway_url = {plan.outputs['gateway_url']}")
    return "\n".join(lines) + "\n"


def _outputs_change(plan: Plan) -> bool:
    """Whether apply changes the stack's URLs: a new gateway, or an app added or removed."""
    if plan.mode == "destroy":
        return False
    return any(
        tuple(c.actions) in (("create",), ("delete",), ("delete", "create")) for c in plan.changes
    )


def _resource_block(change: ResourceChange) -> list[str]:
    sym = symbol(change)
    kind = f'resource "{change.type}"' + (f' "{change.name}"' if change.type == "app" else "")
    out = [f"  {headline(change)}"]
    if change.tainted is not None:
        out.append(f"  # tainted: {change.tainted}")
    out.append(f"{sym:>3} {kind} {{")
    acts = tuple(change.actions)
    before, after = change.before or {}, change.after or {}
    if acts in (("create",), ("delete",)):
        attrs, sign = (after, "+") if acts == ("create",) else (before, "-")
        keys = _keys(attrs)
        width = max((len(k) for k in keys), default=0)
        for key in keys:
            out.append(f"      {sign} {key:<{width}} = {_value(key, attrs[key])}")
    else:
        shown = [k for k in _keys({**before, **after}) if k in change.changed]
        width = max((len(k) for k in shown), default=0)
        for key in shown:
            force = (
                "  # forces new revision" if key in change.forces and change.type == "app" else ""
            )
            if change.type == "gateway" and key in change.forces:
                force = "  # forces replacement"
            if key not in before:
                out.append(f"      + {key:<{width}} = {_value(key, after[key])}{force}")
            elif key not in after:
                out.append(f"      - {key:<{width}} = {_value(key, before[key])}{force}")
            else:
                out.append(
                    f"      ~ {key:<{width}} = {_value(key, before[key])} -> "
                    f"{_value(key, after[key])}{force}"
                )
        hidden = len(_keys({**before, **after})) - len(shown)
        if hidden:
            out.append(f"        # ({hidden} unchanged attributes hidden)")
    out.append("    }")
    return out


def _keys(attrs: dict[str, Any]) -> list[str]:
    return [
        k
        for k in attrs
        if k not in HIDDEN and k not in BOOKKEEPING and not (k in SENSITIVE and attrs[k] is None)
    ]


def _value(key: str, value: Any) -> str:
    if key in SENSITIVE:
        return "(sensitive value)" if value is not None else "null"
    if key in HASHES and isinstance(value, str):
        return json.dumps(value[:12])
    return json.dumps(value, sort_keys=True)


def _costs(costs: dict[str, Any]) -> list[str]:
    lines = ["Estimated cost (per hour, at min_runners .. max_runners):"]
    for name, c in sorted(costs["apps"].items()):
        where = f"{c['cloud']}" + (f"/{c['region']}" if c.get("region") else "")
        lines.append(
            f"  app.{name}: {c['instance_type']} on {where} at ${c['hourly_usd']:.2f}/h each: "
            f"${c['hourly_usd_min']:.2f} .. ${c['hourly_usd_max']:.2f}"
        )
    lines.append(
        f"  stack: ${costs['hourly_usd_min']:.2f} .. ${costs['hourly_usd_max']:.2f} per hour"
    )
    return lines


def render_markdown(plan: Plan) -> str:
    """A compact summary for a pull-request comment: one table row per change."""
    lines = [f"### skyform plan: `{plan.stack}`", "", f"**{summary_line(plan)}**", ""]
    if plan.drift:
        lines.append(
            "Drift: "
            + "; ".join(f"`{d['address']}` {d['reason']}" for d in plan.drift[:10])
            + (f" (and {len(plan.drift) - 10} more)" if len(plan.drift) > 10 else "")
        )
        lines.append("")
    changes = plan.changes
    if changes:
        lines += ["| | resource | change |", "|---|---|---|"]
        for change in changes[:MARKDOWN_ROWS]:
            lines.append(f"| `{symbol(change)}` | `{change.address}` | {_md_detail(change)} |")
        if len(changes) > MARKDOWN_ROWS:
            lines.append(f"| | | and {len(changes) - MARKDOWN_ROWS} more changes |")
        lines.append("")
    if plan.costs:
        lines.append(
            f"Estimated cost: ${plan.costs['hourly_usd_min']:.2f} .. "
            f"${plan.costs['hourly_usd_max']:.2f} per hour"
        )
        lines.append("")
    return "\n".join(lines)


def _md_detail(change: ResourceChange) -> str:
    acts = tuple(change.actions)
    if acts == ("create",):
        text = "create"
    elif acts == ("delete",):
        text = "destroy"
    elif acts == ("delete", "create"):
        text = "replace"
    else:
        parts = []
        before, after = change.before or {}, change.after or {}
        for key in change.changed:
            if key in HIDDEN:
                continue
            if key in SENSITIVE:
                parts.append(f"{key} (sensitive)")
            elif key in before and key in after and not isinstance(after[key], dict | list):
                parts.append(f"{key}: {_value(key, before[key])} → {_value(key, after[key])}")
            else:
                parts.append(key)
        label = "new revision" if acts == ("create", "delete") else "update"
        forced = [k for k in change.forces if k in FORCES_NEW_REVISION]
        text = label + (": " + ", ".join(parts) if parts else "")
        if forced and label == "new revision":
            text += " (forces new revision)"
    if change.tainted is not None:
        text += f" — tainted: {change.tainted}"
    if change.reason:
        text += f" — {change.reason}"
    return text.replace("|", "\\|")
