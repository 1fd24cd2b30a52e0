"""`gateway.webhook_hosts` in the stack file: validated, planned, handed to the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyform.engine.apply import StackContext
from skyform.engine.keys import webhook_key
from skyform.engine.planner import desired_gateway
from skyform.engine.stackfile import StackFileError, parse_stack

BASE = """\
stack: demo
gateway:
  port: 9001
  webhook_hosts: {hosts}
apps:
  hello:
    app: app.py::Hello
"""


def load(hosts: str):
    text = BASE.format(hosts=hosts)
    return parse_stack(text, Path("/p/skyform.yaml"), display="skyform.yaml", environ={})


def _context(stack) -> StackContext:
    keys = {"bundle_key": "b", "admin_token": "a", "runner_token": "r", "api_key": "p"}
    return StackContext(stack, Path("/p"), keys, None, None, Path("/p"))


def test_hosts_are_normalised_planned_and_passed_to_the_gateway() -> None:
    stack = load("[Hooks.Example.com, 127.0.0.1, '[::1]', hooks.example.com]")
    assert stack.model.gateway.webhook_hosts == ["127.0.0.1", "::1", "hooks.example.com"]
    assert desired_gateway(stack)["webhook_hosts"] == ["127.0.0.1", "::1", "hooks.example.com"]
    env = _context(stack).gateway_credentials()
    assert env["SKYFORM_WEBHOOK_HOSTS"] == "127.0.0.1,::1,hooks.example.com"


def test_webhook_key_is_the_environment_s_or_derived_from_the_bundle_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = load("[127.0.0.1]")
    monkeypatch.delenv("SKYFORM_WEBHOOK_KEY", raising=False)
    derived = _context(stack).gateway_credentials()["SKYFORM_WEBHOOK_KEY"]
    assert (
        len(derived) == 64
        and derived == _context(stack).gateway_credentials()["SKYFORM_WEBHOOK_KEY"]
    )
    other = StackContext(stack, Path("/p"), {"bundle_key": "other"}, None, None, Path("/p"))
    assert webhook_key(other.keys) != derived
    monkeypatch.setenv("SKYFORM_WEBHOOK_KEY", "from-env")
    assert _context(stack).gateway_credentials()["SKYFORM_WEBHOOK_KEY"] == "from-env"


def test_unset_list_changes_nothing_for_existing_stacks() -> None:
    stack = parse_stack(
        BASE.replace("  webhook_hosts: {hosts}\n", ""),
        Path("/p/skyform.yaml"),
        display="skyform.yaml",
        environ={},
    )
    assert stack.model.gateway.webhook_hosts is None
    assert "webhook_hosts" not in desired_gateway(stack)
    assert "SKYFORM_WEBHOOK_HOSTS" not in _context(stack).gateway_credentials()


@pytest.mark.parametrize(
    "bad", ["https://hooks.example.com", "hooks.example.com:8443", "a/b", "-x.com", "''"]
)
def test_bad_host_is_one_error_naming_file_line_and_key(bad: str) -> None:
    with pytest.raises(StackFileError) as info:
        load(f"[{bad}]")
    message = str(info.value)
    assert message.startswith("skyform.yaml:4: gateway.webhook_hosts"), message
    assert "is not a host name or IP address" in message
    assert "\n" not in message
