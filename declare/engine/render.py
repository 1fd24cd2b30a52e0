"""Plans as people read them: Terraform-shaped text, and a compact Markdown summary.

The text is deterministic (resources in address order, attributes in a fixed
order, hashes shortened the same way every time) so two plans of the same
change are byte-identical, and a CI log diff shows only real differences.
Updates show only the attributes that change; secrets show as
`(sensitive value)`.

`render_plan` is the one renderer of the human plan: a `rich.text.Text`
whose lines carry Terraform's colours as styles (what an action or an
attribute sign means decides its colour, never the rendered characters);
`render_text` is its plain text. The CLI prints the `Text`, and rich drops
the styles when the stream is not a terminal or `NO_COLOR` is set.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from skyform.engine.plan import (
    BOOKKEEPING,
    FORCES_NEW_REVISION,
    SENSITIVE,
    Action,
    Plan,
    ResourceChange,
)

SYMBOL = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "+/-",
    Action.RECREATE: "-/+",
    Action.DELETE: "-",
    Action.NOOP: " ",
}
# Terraform's colours: what is added is green, what goes is red, what changes is yellow.
STYLE = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.REPLACE: "yellow",
    Action.RECREATE: "yellow",
    Action.DELETE: "red",
    Action.NOOP: "",
}
SIGN_STYLE = {"+": "green", "-": "red", "~": "yellow"}
SUMMARY_STYLE = "bold"
HIDDEN = ("fingerprint",)
HASHES = ("revision", "env_key")
MARKDOWN_ROWS = 50


def symbol(change: ResourceChange) -> str:
    return SYMBOL[change.action]


def headline(change: ResourceChange) -> str:
    addr = change.address
    text = {
        Action.CREATE: f"# {addr} will be created",
        Action.UPDATE: f"# {addr} will be updated in place",
        Action.REPLACE: (
            f"# {addr} will get a new revision (rolling: new runners first, then old ones drain)"
        ),
        Action.RECREATE: f"# {addr} must be replaced",
        Action.DELETE: f"# {addr} will be destroyed",
    }.get(change.action, f"# {addr}")
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
    """The human plan, like `terraform plan`, as plain text."""
    return render_plan(plan).plain


def render_plan(plan: Plan) -> Text:
    """The human plan, like `terraform plan`: one line per row, each styled by what it shows."""
    lines: list[Text] = []
    if plan.drift:
        lines.append(Text("Note: Objects have changed outside of skyform"))
        lines.append(Text())
        for d in plan.drift:
            lines.append(Text(f"  # {d['address']}: {d['reason']}"))
        lines.append(Text())
    for warning in plan.warnings:
        lines.append(Text(f"Warning: {warning}"))
    if plan.warnings:
        lines.append(Text())
    changes = plan.changes
    if changes:
        lines.append(Text("skyform will perform the following actions:"))
        lines.append(Text())
        for change in changes:
            lines.extend(_resource_block(change))
            lines.append(Text())
    lines.append(Text(summary_line(plan), style=SUMMARY_STYLE))
    if plan.costs:
        lines.append(Text())
        lines.extend(Text(line) for line in _costs(plan.costs))
    if _outputs_change(plan):
        lines.append(Text())
        lines.append(Text("Outputs after apply:"))
        lines.append(Text(f"  gateway_url = {plan.outputs['gateway_url']}"))
    return Text("\n").join(lines) + Text("\n")


def _outputs_change(plan: Plan) -> bool:
    """Whether apply changes the stack's URLs: a new gateway, or an app added or removed."""
    if plan.mode == "destroy":
        return False
    return any(c.action in (Action.CREATE, Action.DELETE, Action.RECREATE) for c in plan.changes)


def _resource_block(change: ResourceChange) -> list[Text]:
    sym = symbol(change)
    kind = f'resource "{change.type}"' + (f' "{change.name}"' if change.type == "app" else "")
    out = [Text(f"  {headline(change)}")]
    if change.tainted is not None:
        out.append(Text(f"  # tainted: {change.tainted}"))
    out.append(Text(f"{sym:>3} {kind} {{", style=STYLE[change.action]))
    before, after = change.before or {}, change.after or {}
    if change.action in (Action.CREATE, Action.DELETE):
        attrs, sign = (after, "+") if change.action is Action.CREATE else (before, "-")
        keys = _keys(attrs)
        width = max((len(k) for k in keys), default=0)
        for key in keys:
            out.append(_attribute(sign, f"{key:<{width}} = {_value(key, attrs[key])}"))
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
                out.append(_attribute("+", f"{key:<{width}} = {_value(key, after[key])}{force}"))
            elif key not in after:
                out.append(_attribute("-", f"{key:<{width}} = {_value(key, before[key])}{force}"))
            else:
                out.append(
                    _attribute(
                        "~",
                        f"{key:<{width}} = {_value(key, before[key])} -> "
                        f"{_value(key, after[key])}{force}",
                    )
                )
        hidden = len(_keys({**before, **after})) - len(shown)
        if hidden:
            out.append(Text(f"        # ({hidden} unchanged attributes hidden)"))
    out.append(Text("    }"))
    return out


def _attribute(sign: str, text: str) -> Text:
    """One attribute row: its sign (`+` added, `-` removed, `~` changed) decides its colour."""
    return Text(f"      {sign} {text}", style=SIGN_STYLE[sign])


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
    if change.action is Action.CREATE:
        text = "create"
    elif change.action is Action.DELETE:
        text = "destroy"
    elif change.action is Action.RECREATE:
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
        label = "new revision" if change.action is Action.REPLACE else "update"
        forced = [k for k in change.forces if k in FORCES_NEW_REVISION]
        text = label + (": " + ", ".join(parts) if parts else "")
        if forced and label == "new revision":
            text += " (forces new revision)"
    if change.tainted is not None:
        text += f" — tainted: {change.tainted}"
    if change.reason:
        text += f" — {change.reason}"
    return text.replace("|", "\\|")
