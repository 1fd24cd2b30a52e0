"""A first `apply --auto-approve` starts the gateway while it plans (`skyform.engine.apply.EarlyGateway`).

The gateway process of a new stack is started as soon as the state is read,
so that its start overlaps the plan. What must hold: an apply that fails
before its gateway step leaves no process and no state behind, one that
succeeds records exactly the process it started (and no second one runs),
and without `--auto-approve` nothing starts before the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import cleanup, sky, state_of, write_project
from support.procs import pid_alive, port_free, processes_under

pytestmark = pytest.mark.slow


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = write_project(tmp_path / "proj")
    try:
        yield root
    finally:
        cleanup(root)
        assert processes_under(root) == []


def _port(root: Path) -> int:
    line = next(ln for ln in (root / "skyform.yaml").read_text().splitlines() if "port" in ln)
    return int(line.split("port:")[1].strip(" }"))


def _gateways(root: Path) -> list[int]:
    return [pid for pid, cmd in processes_under(root) if "skyform.runtime.gateway" in cmd]


def test_a_failed_first_apply_leaves_no_gateway_and_no_state(root: Path) -> None:
    good = (root / "app.py").read_text()
    (root / "app.py").write_text(good + "\nraise RuntimeError('broken at import')\n")
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken at import" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # The gateway was started during the plan (its log says so), and stopped when it failed.
    assert (root / ".skyform" / "runtime" / "demo" / "gateway" / "gateway.log").exists()
    assert _gateways(root) == [] and port_free(_port(root))
    assert not state_of(root).get("resources")
    # Without --auto-approve (and no terminal to ask on) nothing is started either.
    (root / "app.py").write_text(good)
    refused = sky(root, "apply")
    assert refused.returncode == 1 and "--auto-approve" in refused.stderr, refused.stderr
    assert _gateways(root) == [] and not state_of(root).get("resources")


def test_a_first_apply_records_the_gateway_it_started_while_planning(root: Path) -> None:
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.index("gateway: starting") < err.index("gateway: ready"), err
    handle = state_of(root)["resources"]["gateway"]["handle"]
    assert _gateways(root) == [handle["info"]["pid"]] and pid_alive(handle["info"]["pid"])
    again = sky(root, "plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    # A stack that has a gateway keeps it: a second apply starts none.
    second = sky(root, "apply", "--auto-approve")
    assert second.returncode == 0 and "gateway: starting" not in second.stderr, second.stderr
    assert _gateways(root) == [handle["info"]["pid"]]
