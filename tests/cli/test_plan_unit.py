"""Planning without a gateway: actions, forced revisions, secrets, targets, rendering, plan files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import set_apps, sky, write_project

from skyform.engine.apply import check_plan_current
from skyform.engine.plan import Plan, PlanRequest
from skyform.engine.planfile import load_plan, save_plan
from skyform.engine.planner import build_plan, host_has_gpu
from skyform.engine.refresh import Live
from skyform.engine.render import render_markdown, render_text
from skyform.engine.stackfile import load_stack
from skyform.errors import SkyformError
from skyform.providers.base import Price
from skyform.providers.local import LocalProvider
from skyform.state import StateDocument, open_backend

KEYS = {"bundle_key": "k" * 32, "admin_token": "a", "runner_token": "r", "api_key": "p"}


def plan_for(
    root: Path,
    doc: StateDocument | None = None,
    live_apps: dict[str, dict[str, Any]] | None = None,
    **request: Any,
) -> Plan:
    stack = load_stack(root / "skyform.yaml")
    doc = doc or StateDocument.new(stack.name)
    alive = live_apps is not None
    live = Live(alive, "http://127.0.0.1:1" if alive else None, live_apps)
    return build_plan(stack, doc, live, KEYS, PlanRequest(**request))


def applied(plan: Plan) -> tuple[StateDocument, dict[str, dict[str, Any]]]:
    """The state and the gateway's app list as if `plan` had been applied."""
    resources: dict[str, dict[str, Any]] = {}
    live: dict[str, dict[str, Any]] = {}
    for change in plan.resource_changes:
        if change.after is None:
            continue
        resources[change.address] = dict(change.after)
        if change.type == "app":
            a = change.after
            live[change.name] = {
                "name": change.name,
                "revision": a["revision"],
                "fingerprint": a["fingerprint"],
                "auth": a["auth"],
                "options": {
                    k: a[k]
                    for k in (
                        "machine_type",
                        "requirements",
                        "min_runners",
                        "max_runners",
                        "keep_alive",
                        "max_multiplexing",
                        "request_timeout",
                        "startup_timeout",
                    )
                },
                "runners": [],
            }
    doc = StateDocument.new(plan.stack).evolve(resources=resources).with_serial(3)
    return doc, live


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "p")


def test_first_plan_creates_gateway_and_app(root: Path) -> None:
    plan = plan_for(root)
    assert [(c.address, c.actions) for c in plan.resource_changes] == [
        ("gateway", ["create"]),
        ("app.hello", ["create"]),
    ]
    assert plan.counts() == {"add": 2, "change": 0, "destroy": 0}
    assert set(plan.bundles) == {"hello"}
    text = render_text(plan)
    assert "\nPlan: 2 to add, 0 to change, 0 to destroy.\n" in text
    assert '+ resource "app" "hello" {' in text
    assert "Outputs after apply:" in text
    body = plan.to_dict()
    assert body["format_version"] == "1"
    assert body["state"] == {"lineage": None, "serial": 0}
    port = body["resource_changes"][0]["after"]["port"]
    assert body["planned_outputs"]["apps"]["hello"] == {
        "url": f"http://127.0.0.1:{port}/hello/",
        "queue_url": f"http://127.0.0.1:{port}/queue/hello/",
        "playground_url": f"http://127.0.0.1:{port}/hello/playground",
    }


def test_no_change_after_apply_and_no_bundle_built(root: Path) -> None:
    doc, live = applied(plan_for(root))
    plan = plan_for(root, doc, live)
    assert not plan.has_changes
    assert plan.bundles == {}  # nothing changes: no bundle needed
    assert render_text(plan) == "No changes. Your stack matches the configuration.\n"


def test_scaling_knobs_change_in_place(root: Path) -> None:
    doc, live = applied(plan_for(root))
    set_apps(
        root,
        {
            "hello": {
                "app": "app.py::Hello",
                "env": {"GREETING": "Yo"},
                "max_runners": 3,
                "request_timeout": 9,
            }
        },
    )
    plan = plan_for(root, doc, live)
    change = plan.change("app.hello")
    assert change is not None
    assert change.actions == ["update"]
    assert change.changed == ["max_runners", "request_timeout", "env"]
    assert change.forces == []
    text = render_text(plan)
    assert "~ max_runners     = 1 -> 3" in text
    assert '~ env             = {"GREETING": "Hi"} -> {"GREETING": "Yo"}' in text
    assert "forces" not in text
    assert text.endswith("Plan: 0 to add, 1 to change, 0 to destroy.\n")
    assert "hello" in plan.bundles  # registering the change needs the bundle


def test_code_and_requirements_force_a_new_revision(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYFORM_ALLOW_CPU_FALLBACK", "1")
    doc, live = applied(plan_for(root))
    (root / "greeting.py").write_text((root / "greeting.py").read_text() + "\n# changed\n")
    plan = plan_for(root, doc, live)
    change = plan.change("app.hello")
    assert change is not None and change.actions == ["create", "delete"]
    assert change.forces == ["revision"]
    text = render_text(plan)
    assert '+/- resource "app" "hello" {' in text
    assert "# forces new revision" in text
    set_apps(
        root,
        {
            "hello": {
                "app": "app.py::Hello",
                "env": {"GREETING": "Hi"},
                "machine_type": "GPU-H100",
                "requirements": ["rich"],
            }
        },
    )
    change = plan_for(root, doc, live).change("app.hello")
    assert change is not None and change.actions == ["create", "delete"]
    assert {"machine_type", "requirements", "revision"} <= set(change.forces)


def test_removed_app_is_destroyed_and_target_limits(root: Path) -> None:
    set_apps(
        root,
        {"hello": {"app": "app.py::Hello"}, "other": {"app": "other.py::Other"}},
    )
    doc, live = applied(plan_for(root))
    set_apps(root, {"hello": {"app": "app.py::Hello", "max_runners": 2}})
    plan = plan_for(root, doc, live)
    assert plan.change("app.other").actions == ["delete"]  # type: ignore[union-attr]
    assert plan.counts() == {"add": 0, "change": 1, "destroy": 1}
    targeted = plan_for(root, doc, live, targets=("app.hello",))
    assert [c.address for c in targeted.changes] == ["app.hello"]
    with pytest.raises(SkyformError, match=r'no app "helo" in this stack .did you mean "hello"'):
        plan_for(root, doc, live, targets=("helo",))


def test_replace_forces_new_revision_and_gateway_replacement(root: Path) -> None:
    doc, live = applied(plan_for(root))
    plan = plan_for(root, doc, live, replace=("hello",))
    assert plan.change("app.hello").actions == ["create", "delete"]  # type: ignore[union-attr]
    assert plan.change("app.hello").reason == "--replace"  # type: ignore[union-attr]
    plan = plan_for(root, doc, live, replace=("gateway",))
    assert plan.change("gateway").actions == ["delete", "create"]  # type: ignore[union-attr]
    assert '-/+ resource "gateway"' in render_text(plan)


def test_tainted_app_is_replaced_with_its_reason(root: Path, tmp_path: Path) -> None:
    doc, live = applied(plan_for(root))
    record = {**doc.resources["app.hello"], "tainted": {"reason": "runner hello-1 failed"}}
    doc = doc.evolve(resources={**doc.resources, "app.hello": record})
    plan = plan_for(root, doc, live)
    change = plan.change("app.hello")
    assert change is not None and change.actions == ["create", "delete"]
    assert change.tainted == "runner hello-1 failed" and change.changed == []
    text = render_text(plan)
    assert "  # app.hello is tainted, so it will get a new revision (rolling" in text
    assert '\n  # tainted: runner hello-1 failed\n+/- resource "app" "hello" {' in text
    assert "Plan: 1 to add, 0 to change, 1 to destroy." in text
    body = next(c for c in plan.to_dict()["resource_changes"] if c["address"] == "app.hello")
    assert body["action_reason"] == "replace_because_tainted"
    assert body["tainted"] == "runner hello-1 failed"
    assert "tainted" not in (body["before"] or {})  # bookkeeping, not an attribute
    assert "tainted: runner hello-1 failed" in render_markdown(plan)
    saved = save_plan(plan, tmp_path / "t.plan", KEYS["bundle_key"], "skyform.yaml")
    assert load_plan(saved, KEYS["bundle_key"]).change("app.hello").tainted == change.tainted  # type: ignore[union-attr]
    # Once an apply makes it live (the record without the mark), the plan is clean again.
    doc = doc.evolve(resources={**doc.resources, "app.hello": {**record, "tainted": None}})
    assert not plan_for(root, doc, live).has_changes


def test_dead_gateway_recreates_everything(root: Path) -> None:
    doc, _live = applied(plan_for(root))
    stack = load_stack(root / "skyform.yaml")
    live = Live(False, None, None, [{"address": "gateway", "reason": "not running"}])
    plan = build_plan(stack, doc, live, KEYS, PlanRequest())
    assert [c.actions for c in plan.changes] == [["create"], ["create"]]
    assert "Note: Objects have changed outside of skyform" in render_text(plan)


def test_secrets_are_sensitive_and_rotation_shows(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_X", "s3cret-value-1234")
    set_apps(root, {"hello": {"app": "app.py::Hello", "secrets": ["TOKEN_X"]}})
    first = plan_for(root)
    text = render_text(first) + json.dumps(first.to_dict()) + render_markdown(first)
    assert "s3cret-value-1234" not in text
    assert "(sensitive value)" in text
    doc, live = applied(first)
    assert not plan_for(root, doc, live).has_changes
    monkeypatch.setenv("TOKEN_X", "rotated-value-5678")
    rotated = plan_for(root, doc, live)
    change = rotated.change("app.hello")
    assert change is not None and change.actions == ["update"]
    assert change.changed == ["secrets_digest"]
    assert "~ secrets_digest = (sensitive value) -> (sensitive value)" in render_text(rotated)


def test_markdown_summary_is_compact(root: Path) -> None:
    apps = {f"app-{i}": {"app": "other.py::Other"} for i in range(60)}
    set_apps(root, apps)
    md = render_markdown(plan_for(root))
    assert md.startswith("### skyform plan: `demo`")
    assert "**Plan: 61 to add, 0 to change, 0 to destroy.**" in md
    assert "| `+` | `app.app-0` | create |" in md
    assert "and 11 more changes" in md
    assert len(md.splitlines()) < 70


def test_plan_output_is_deterministic(root: Path) -> None:
    set_apps(root, {"b": {"app": "other.py::Other"}, "a": {"app": "app.py::Hello"}})
    one, two = plan_for(root), plan_for(root)
    assert render_text(one) == render_text(two)
    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())
    assert [c.address for c in one.resource_changes] == ["gateway", "app.a", "app.b"]


def test_saved_plan_roundtrip_tamper_and_staleness(root: Path, tmp_path: Path) -> None:
    plan = plan_for(root)
    path = save_plan(plan, tmp_path / "out.plan", KEYS["bundle_key"], "skyform.yaml")
    loaded = load_plan(path, KEYS["bundle_key"])
    assert loaded.to_dict() == plan.to_dict()
    assert loaded.bundles == plan.bundles
    # Another key, or any edit: refused.
    with pytest.raises(SkyformError, match="signature does not match"):
        load_plan(path, "another-key")
    raw = json.loads(path.read_text())
    raw["plan"]["resource_changes"][1]["after"]["max_runners"] = 99
    (tmp_path / "edited.plan").write_text(json.dumps(raw))
    with pytest.raises(SkyformError, match="signature does not match"):
        load_plan(tmp_path / "edited.plan", KEYS["bundle_key"])
    with pytest.raises(SkyformError, match="not a skyform plan file"):
        load_plan(root / "skyform.yaml", KEYS["bundle_key"])
    # Staleness against a real state backend.
    backend = open_backend("local", stack="demo", workdir=root)
    doc = backend.read()
    check_plan_current(loaded, doc, "out.plan")  # empty state, plan made on empty state: fine
    with backend.lock("test"):
        written = backend.write(doc.evolve(resources={"gateway": {"port": 1}}))
    with pytest.raises(
        SkyformError, match=r"out\.plan is stale: it was made when stack 'demo' had no state"
    ):
        check_plan_current(loaded, written, "out.plan")
    later = plan_for(root, written, {})
    check_plan_current(later, written, "p2")
    with backend.lock("test"):
        moved = backend.write(written.evolve(resources={"gateway": {"port": 2}}))
    with pytest.raises(SkyformError, match="made at state serial 1, the state is now at serial 2"):
        check_plan_current(later, moved, "p2")
    other = StateDocument.new("demo").with_serial(1)
    with pytest.raises(SkyformError, match="lineage"):
        check_plan_current(later, other, "p2")


@pytest.mark.skipif(host_has_gpu(), reason="this host has a GPU: nothing falls back to CPU")
def test_gpu_app_on_local_is_refused_by_apply_and_warned_by_run(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKYFORM_ALLOW_CPU_FALLBACK", raising=False)
    set_apps(root, {"hello": {"app": "app.py::Hello", "machine_type": "GPU-H100"}})
    with pytest.raises(
        SkyformError, match=r"skyform\.yaml:6: apps\.hello: machine type GPU-H100 needs a GPU"
    ):
        plan_for(root)
    plan = plan_for(root, mode="run")
    assert plan.warnings == ["app hello: GPU-H100 needs a GPU this host lacks; it runs on CPU here"]
    assert "Warning: app hello: GPU-H100 needs a GPU" in render_text(plan)
    assert plan.change("app.hello").after["auth"] == "public"  # type: ignore[union-attr]  # run's default
    monkeypatch.setenv("SKYFORM_ALLOW_CPU_FALLBACK", "1")
    assert plan_for(root).change("app.hello").actions == ["create"]  # type: ignore[union-attr]


class PricedProvider(LocalProvider):
    """Stands in for a cloud provider's price list (no cloud API can be reached here)."""

    name = "priced"

    def __init__(self) -> None:
        super().__init__("demo", Path("/nonexistent"))  # nothing is started

    def price(self, machine_type: str) -> Price | None:
        if machine_type == "CPU":
            return Price("CPU", "m6i.xlarge", "aws", "us-east-1", 0.25)
        return None


def test_costs_per_app_and_stack_when_the_provider_prices(root: Path) -> None:
    set_apps(
        root,
        {
            "hello": {"app": "app.py::Hello", "min_runners": 1, "max_runners": 4},
            "other": {"app": "other.py::Other"},
        },
    )
    stack = load_stack(root / "skyform.yaml")
    live = Live(False, None, None)
    plan = build_plan(
        stack, StateDocument.new("demo"), live, KEYS, PlanRequest(), provider=PricedProvider()
    )
    assert plan.costs == {
        "apps": {
            "hello": {
                "machine_type": "CPU",
                "instance_type": "m6i.xlarge",
                "cloud": "aws",
                "region": "us-east-1",
                "hourly_usd": 0.25,
                "hourly_usd_min": 0.25,
                "hourly_usd_max": 1.0,
            },
            "other": {
                "machine_type": "CPU",
                "instance_type": "m6i.xlarge",
                "cloud": "aws",
                "region": "us-east-1",
                "hourly_usd": 0.25,
                "hourly_usd_min": 0.0,
                "hourly_usd_max": 0.5,
            },
        },
        "hourly_usd_min": 0.25,
        "hourly_usd_max": 1.5,
    }
    text = render_text(plan)
    assert "app.hello: m6i.xlarge on aws/us-east-1 at $0.25/h each: $0.25 .. $1.00" in text
    assert "stack: $0.25 .. $1.50 per hour" in text
    assert plan_for(root).costs is None  # the local provider prices nothing


def test_requirements_give_an_environment_key(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_apps(root, {"hello": {"app": "app.py::Hello", "requirements": ["rich>=13"]}})
    after = plan_for(root).change("app.hello").after  # type: ignore[union-attr]
    assert after is not None and after["requirements"] == ["rich>=13"]
    assert isinstance(after.get("env_key"), str) and after["env_key"]


def test_apply_with_a_missing_secret_starts_and_stores_nothing(root: Path) -> None:
    set_apps(root, {"hello": {"app": "app.py::Hello", "secrets": ["UNSET_SECRET_X9"]}})
    result = sky(root, "apply", "--auto-approve")
    assert result.returncode == 1
    assert "secret UNSET_SECRET_X9 is not set in the environment" in result.stderr
    assert "gateway: starting" not in result.stderr
    assert not (root / ".skyform" / "demo.state.json").exists()


def test_cli_plan_formats_and_saved_plan_file(root: Path, tmp_path: Path) -> None:
    md = sky(root, "plan", "--format", "markdown", "--detailed-exitcode")
    assert md.returncode == 2
    assert md.stdout.startswith("### skyform plan: `demo`")
    assert "| `+` | `app.hello` | create |" in md.stdout
    js = sky(root, "plan", "--json", "--target", "hello", "--out", str(tmp_path / "t.plan"))
    assert js.returncode == 0, js.stderr
    body = json.loads(js.stdout)  # --out does not spoil machine output
    assert body["format_version"] == "1"
    assert [c["address"] for c in body["resource_changes"]] == ["gateway", "app.hello"]
    assert any("--target is in effect" in w for w in body["warnings"])
    assert (tmp_path / "t.plan").stat().st_mode & 0o777 == 0o600  # it carries bundles
    bad = sky(root, "plan", "--format", "markdwn")
    assert bad.returncode == 1
    assert 'not a format (did you mean "markdown"?)' in bad.stderr
    wrong = sky(root, "plan", "--target", "nope")
    assert wrong.returncode == 1 and 'no app "nope" in this stack' in wrong.stderr
    stale = sky(root, "apply", str(tmp_path / "t.plan"), "--target", "hello")
    assert stale.returncode == 1 and "a saved plan is applied as it is" in stale.stderr
    nowhere = sky(root, "plan", "--out", str(tmp_path / "t.plan" / "sub" / "x.plan"))
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert "cannot write the plan file" in nowhere.stderr


def test_on_a_gpu_host_plan_says_how_many_runners_of_each_gpu_app_fit(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's GPUs are a recorded nvidia-smi inventory (this machine has none)."""
    from skyform.providers import gpus

    recorded = Path(__file__).resolve().parents[1] / "data" / "gpus" / "h200x1.csv"
    monkeypatch.setattr("skyform.engine.planner.host_has_gpu", lambda: True)
    monkeypatch.setattr(gpus, "inventory", lambda: gpus.parse_nvidia_smi_csv(recorded.read_text()))
    monkeypatch.delenv("SKYFORM_ALLOW_CPU_FALLBACK", raising=False)
    set_apps(
        root,
        {
            "hello": {"app": "app.py::Hello", "machine_type": "GPU-H100", "max_runners": 3},
            "big": {"app": "app.py::Hello", "machine_type": "GPU-B200"},
        },
    )
    plan = plan_for(root)  # apply's mode: a GPU host refuses nothing
    assert plan.warnings == [
        "app big: this host's GPUs cannot hold one runner (it would wait for GPUs)",
        "app hello: this host can hold 1 runner(s) of GPU-H100 (1 H200 each); H200 stands in "
        "for H100 (at least as capable, per the machine catalog); max_runners is 3, so at most "
        "1 run at once here",
    ]
    assert "Warning: app hello: this host can hold 1 runner(s)" in render_text(plan)


def test_gateway_limits_replace_the_gateway_and_reach_its_environment(root: Path) -> None:
    from skyform.engine.apply import _limits_env

    doc, live = applied(plan_for(root))
    assert "limits" not in plan_for(root).gateway_spec  # unset: no attribute, no change
    yaml_path = root / "skyform.yaml"
    text = yaml_path.read_text()
    assert "gateway: {port: " in text
    yaml_path.write_text(
        text.replace("gateway: {port: ", "gateway: {limits: {max_body_bytes: 1MiB}, port: ")
    )
    plan = plan_for(root, doc, live)
    change = plan.change("gateway")
    assert change is not None and change.actions == ["delete", "create"]
    assert change.changed == ["limits"]
    assert "max_body_bytes" in render_text(plan)
    assert plan.gateway_spec["limits"] == {"max_body_bytes": 1024 * 1024}
    env = _limits_env(plan.gateway_spec)
    assert json.loads(env["SKYFORM_GATEWAY_LIMITS"]) == {"max_body_bytes": 1048576}
    doc, live = applied(plan)
    assert not plan_for(root, doc, live).has_changes
