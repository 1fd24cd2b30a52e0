"""`skyform env list` / `skyform env prune`, through the real CLI, on a cache of real builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.envs import PYTHON_VERSION, reaped

from skyform.providers.environments import EnvUser, ensure_environment

pytestmark = pytest.mark.slow


def skyform(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skyform.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
        check=False,
    )


def listed(cwd: Path) -> dict[str, dict]:
    result = skyform("env", "list", "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return {e["key"]: e for e in json.loads(result.stdout)["environments"]}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache of its own: prune must not take the other tests' environments."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SKYFORM_CACHE_DIR", str(path))
    return path


def _state(workdir: Path, stack: str, resources: dict, extra: dict | None = None) -> None:
    (workdir / ".skyform").mkdir(parents=True, exist_ok=True)
    doc = {"version": 1, "lineage": "l", "serial": 1, "stack": stack, "resources": resources}
    (workdir / ".skyform" / f"{stack}.state.json").write_text(json.dumps({**doc, **(extra or {})}))


def test_list_and_prune_keep_exactly_what_is_in_use(cache: Path, tmp_path: Path) -> None:
    work, gone = tmp_path / "work", tmp_path / "gone"
    work.mkdir()
    gone.mkdir()
    build = lambda reqs, user=None: ensure_environment(reqs, PYTHON_VERSION, used_by=user)  # noqa: E731

    superseded = build(["six"], EnvUser("demo", "hello", work))
    current = build(["six", "toolz"], EnvUser("demo", "hello", work))  # hello's requirements moved
    _state(work, "demo", {"apps": {"hello": {"revision": "abc"}}})
    destroyed = build(["toolz"], EnvUser("gone", "api", gone))  # its stack has no state any more
    named = build(["iniconfig"], EnvUser("other", "x", work))
    _state(work, "other", {}, {"outputs": {"environment": named.key}})  # state names the key
    running = build(["tomli-w"])  # nobody recorded it, but a process runs from it
    incomplete = cache / "envs" / ("0" * 24)
    incomplete.mkdir()
    (incomplete / "junk").write_text("half a build")

    proc = subprocess.Popen(
        [str(running.python), "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    with reaped(proc):  # type: ignore[arg-type]
        envs = listed(tmp_path)
        assert set(envs) == {
            superseded.key,
            current.key,
            destroyed.key,
            named.key,
            running.key,
            incomplete.name,
        }
        in_use = {key for key, e in envs.items() if e["in_use"]}
        assert in_use == {current.key, named.key, running.key}
        assert envs[running.key]["in_use_by"] == ["running"]
        assert envs[current.key]["requirements"] == ["six", "toolz"]
        assert envs[current.key]["users"][0]["stack"] == "demo"
        assert envs[incomplete.name]["complete"] is False
        assert envs[current.key]["size"] > 0

        human = skyform("env", "list", cwd=tmp_path)
        assert human.returncode == 0 and current.key[:12] in human.stdout
        assert "stack demo" in human.stdout and "running" in human.stdout

        dry = skyform("env", "prune", "--dry-run", "--json", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        expected_gone = {superseded.key, destroyed.key, incomplete.name}
        assert set(json.loads(dry.stdout)["removed"]) == expected_gone
        assert len(listed(tmp_path)) == 6, "a dry run removes nothing"

        pruned = skyform("env", "prune", "--json", cwd=tmp_path)
        assert pruned.returncode == 0, pruned.stderr
        report = json.loads(pruned.stdout)
        assert set(report["removed"]) == expected_gone and report["freed_bytes"] > 0
        assert set(listed(tmp_path)) == {current.key, named.key, running.key}
        for key in expected_gone:
            assert not (cache / "envs" / key).exists()

    # the process has stopped, and the stack is destroyed: nothing keeps them now
    (work / ".skyform" / "other.state.json").unlink()
    _state(work, "demo", {})
    human = skyform("env", "prune", cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert "Removed 3 environment(s)" in human.stdout
    assert listed(tmp_path) == {}


def test_empty_cache_lists_nothing(cache: Path, tmp_path: Path) -> None:
    result = skyform("env", "list", cwd=tmp_path)
    assert result.returncode == 0 and "No environments" in result.stdout
    assert json.loads(skyform("env", "prune", "--json", cwd=tmp_path).stdout)["removed"] == []


@pytest.mark.parametrize(
    "args", [["env", "prune", "--bogus"], ["env", "lst"], ["env", "list", "x"]]
)
def test_bad_usage_fails_and_changes_nothing(cache: Path, tmp_path: Path, args: list[str]) -> None:
    env = ensure_environment(["six"], PYTHON_VERSION)
    result = skyform(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip()
    assert env.path.is_dir() and env.python.exists()
