"""The CI example, run the way GitHub Actions runs it: against a real PostgreSQL,
in fresh checkouts that share nothing but the database and the secrets.

The commands come from `examples/ci/.github/workflows/skyform.yml` itself: each
`run:` step of the plan and apply jobs is executed as Actions would (bash -eo
pipefail, `$GITHUB_OUTPUT`, the workflow's `env:` with its secrets filled in),
so the workflow and this test cannot drift. What GitHub itself does (checkout,
installing skyform, passing the artifact, posting the comment) the test does by
hand. The stack's SkyPilot provider is swapped for the local one: a cloud is
the one thing that cannot exist here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from support.ci import EXAMPLES, REPO, fresh_checkout
from support.pg import temp_postgres
from support.procs import free_port, kill_all_under, processes_under

from skyform.workdir import KEY_ENV_NAMES

WORKFLOW = EXAMPLES / "ci" / ".github" / "workflows" / "skyform.yml"
# Steps GitHub performs, not skyform: the test does their part itself.
SIMULATED = {"install", "upload", "comment", "download"}
# Every key skyform would otherwise generate into .skyform/ (lost with the CI job).
SECRETS = tuple(KEY_ENV_NAMES.values())

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def workflow() -> dict[Any, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    if True in doc:  # YAML 1.1 reads the key `on:` as a boolean; GitHub reads it as "on"
        doc["on"] = doc.pop(True)
    return doc


def job_steps(job: str) -> dict[str, dict[str, Any]]:
    """A job's steps by id; every step is either an id'd step or a plain `uses:` set-up."""
    steps: dict[str, dict[str, Any]] = {}
    for step in workflow()["jobs"][job]["steps"]:
        if "id" not in step:
            assert step["uses"].split("@")[0] in ("actions/checkout", "actions/setup-python"), step
            continue
        steps[step["id"]] = step
    return steps


def ci_env(pg_url: str, keys: dict[str, str], tmp: Path) -> dict[str, str]:
    """The workflow's `env:` with its secrets filled in, plus what the runner provides."""
    values = {"SKYFORM_PG_URL": pg_url, **keys}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYFORM_")}
    if "SKYFORM_CACHE_DIR" in os.environ:  # the suite's private environment cache
        env["SKYFORM_CACHE_DIR"] = os.environ["SKYFORM_CACHE_DIR"]
    for name, value in workflow()["env"].items():
        secret = re.fullmatch(r"\$\{\{ secrets\.(\w+) \}\}", str(value))
        env[name] = values.get(secret.group(1), "") if secret else str(value)
    # "Install skyform": this checkout's skyform, first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GITHUB_STEP_SUMMARY"] = str(tmp / "summary.md")
    return env


def run_step(step: dict[str, Any], checkout: Path, env: dict[str, str]) -> tuple[int, str, dict]:
    """One `run:` step as Actions runs it; returns its exit code, output and `$GITHUB_OUTPUT`."""
    script = step["run"]
    assert "${{" not in script, f"step {step['id']} needs GitHub expressions the test cannot fill"
    outputs = checkout.parent / f"{checkout.name}-{step['id']}.out"
    outputs.write_text("")
    script_file = checkout.parent / f"{checkout.name}-{step['id']}.sh"
    script_file.write_text(script)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)],
        cwd=checkout,
        env={**env, "GITHUB_OUTPUT": str(outputs)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return proc.returncode, proc.stdout + proc.stderr, values


def checkout(tmp: Path, name: str, port: int) -> Path:
    """A fresh clone of the example, its cloud provider swapped for this machine."""
    root = fresh_checkout("ci", tmp / name, port=port)
    stackfile = root / "skyform.yaml"
    text, count = re.subn(r"(?m)^provider: .*$", "provider: local", stackfile.read_text())
    assert count == 1
    stackfile.write_text(text)
    return root


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with temp_postgres() as url:
        yield url


def test_workflow_is_valid_for_github_actions():
    """Checked against SchemaStore's workflow schema (vendored in tests/data, offline)."""
    schema = json.loads(
        (REPO / "tests" / "data" / "schemastore" / "github-workflow.json").read_text()
    )
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(workflow())
    ]
    assert not errors, errors
    assert set(workflow()["on"]) == {"pull_request", "push"}


def test_workflow_steps_are_what_the_test_runs():
    """Every step is one the test runs or knowingly stands in for; plan and apply use saved plans."""
    assert set(job_steps("plan")) == {"install", "plan", "upload", "comment"}
    assert set(job_steps("apply")) == {"install", "download", "apply"}
    assert "--out skyform.plan" in job_steps("plan")["plan"]["run"]
    assert job_steps("plan")["upload"]["with"]["path"] == "skyform.plan"
    assert job_steps("apply")["apply"]["run"].strip() == "skyform apply skyform.plan"
    assert set(SECRETS) | {"SKYFORM_PG_URL"} <= set(workflow()["env"])


def test_plan_on_a_pull_request_then_apply_on_main(tmp_path: Path, pg_url: str):
    keys = {name: secrets.token_urlsafe(24) for name in SECRETS}
    env = ci_env(pg_url, keys, tmp_path)
    port = free_port()
    plan_step, apply_step = job_steps("plan")["plan"], job_steps("apply")["apply"]
    artifact = tmp_path / "artifact"
    try:
        # Pull request: checkout A plans, keeps the saved plan, posts the markdown.
        a = checkout(tmp_path, "a", port)
        code, output, outputs = run_step(plan_step, a, env)
        assert code == 0, output
        assert outputs == {"changes": "true"}
        comment = (a / "plan.md").read_text()
        assert "app.echo" in comment
        assert "Plan: 2 to add, 0 to change, 0 to destroy." in comment, comment
        assert "No changes" not in comment
        artifact.mkdir()
        shutil.copy2(a / "skyform.plan", artifact / "skyform.plan")
        # Nothing a CI job would need later stays in the checkout: no state, no keys.
        assert not list(a.glob(".skyform/*.state.json*"))
        assert not list(a.glob(".skyform/*.keys.json"))

        # Merge to main: checkout B gets the artifact and applies exactly that plan.
        b = checkout(tmp_path, "b", port)
        shutil.copy2(artifact / "skyform.plan", b / "skyform.plan")
        code, output, _ = run_step(apply_step, b, env)
        assert code == 0, output
        assert processes_under(b), "apply returned but no gateway runs"

        # The stack is live: a caller with the API key from the secrets gets an answer.
        out = subprocess.run(
            ["skyform", "output", "--json"], cwd=b, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        url = json.loads(out.stdout)["apps"]["echo"]["url"]
        answer = httpx.post(
            url,
            json={"text": "from main"},
            headers={"Authorization": f"Bearer {keys['SKYFORM_API_KEY']}"},
            timeout=120,
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"echo": "from main"}

        # The next pull request's plan, in a third fresh checkout, sees nothing to do.
        c = checkout(tmp_path, "c", port)
        code, output, outputs = run_step(plan_step, c, env)
        assert code == 0, output
        assert outputs == {"changes": "false"}
        assert "No changes" in (c / "plan.md").read_text()

        # The same saved plan again is stale now: refused, the state is untouched.
        d = checkout(tmp_path, "d", port)
        shutil.copy2(artifact / "skyform.plan", d / "skyform.plan")
        code, output, _ = run_step(apply_step, d, env)
        assert code == 1, output
        assert "Traceback" not in output
        assert "stale" in output.lower() or "moved on" in output.lower(), output
    finally:
        root = next((p for p in (tmp_path / n for n in "cba") if p.exists()), None)
        if root is not None:
            subprocess.run(
                ["skyform", "destroy", "--auto-approve", "--lock-timeout", "30"],
                cwd=root,
                env=env,
                capture_output=True,
                timeout=120,
            )
        left = processes_under(tmp_path)
        kill_all_under(tmp_path)
    assert not left, f"destroy left processes running: {left}"
