"""The stack file: validation errors name file, line and key; ${VAR}; overrides; schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import sky, write_project

from skyform.engine.stackfile import StackFileError, load_stack, parse_stack

GOOD = """\
stack: demo
provider: local
state: local
gateway: {port: 9001, host: 127.0.0.1}
apps:
  hello:
    app: app.py::Hello
    machine_type: CPU
    max_runners: 3
    env: {GREETING: "${GREETING_TEST}"}
    secrets: [HF_TOKEN]
"""


def load(text: str, env: dict[str, str] | None = None):
    return parse_stack(text, Path("/p/skyform.yaml"), display="skyform.yaml", environ=env or {})


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(StackFileError) as info:
        load(text, env)
    return str(info.value)


def test_good_file_parses_and_expands_variables() -> None:
    stack = load(GOOD, {"GREETING_TEST": "hey $there"})
    assert stack.name == "demo"
    assert stack.model.gateway.port == 9001
    entry = stack.apps["hello"]
    assert entry.env == {"GREETING": "hey $there"}
    assert entry.secrets == ["HF_TOKEN"]
    assert entry.overrides() == {"machine_type": "CPU", "max_runners": 3}


def test_missing_variable_names_line_and_key() -> None:
    message = error_of(GOOD)
    assert message == (
        "skyform.yaml:10: apps.hello.env.GREETING: environment variable GREETING_TEST is not set"
    )


def test_escaped_dollar_is_literal() -> None:
    stack = load(GOOD.replace("${GREETING_TEST}", "$${NOT_A_VAR}"))
    assert stack.apps["hello"].env["GREETING"] == "${NOT_A_VAR}"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "max_runners: 3",
            "max_runers: 3",
            'skyform.yaml:9: apps.hello.max_runers: unknown key "max_runers" (did you mean "max_runners"?)',
        ),
        (
            "gateway:",
            "gatewy:",
            'skyform.yaml:4: gatewy: unknown key "gatewy" (did you mean "gateway"?)',
        ),
        (
            "{port: 9001,",
            "{prot: 9001,",
            'skyform.yaml:4: gateway.prot: unknown key "prot" (did you mean "port"?)',
        ),
        (
            "machine_type: CPU",
            "machine_type: GPU-H10",
            'skyform.yaml:8: apps.hello.machine_type: unknown machine type "GPU-H10" (did you mean "GPU-H100"?)',
        ),
        (
            "provider: local",
            "provider: locl",
            'skyform.yaml:2: provider: unknown provider "locl" (did you mean "local"?)',
        ),
        (
            "max_runners: 3",
            "max_runners: 0",
            "skyform.yaml:9: apps.hello.max_runners: Input should be greater than or equal to 1",
        ),
        (
            "max_runners: 3",
            "max_runners: lots",
            "skyform.yaml:9: apps.hello.max_runners: Input should be a valid integer",
        ),
        (
            "app: app.py::Hello",
            "app: app.py",
            'skyform.yaml:7: apps.hello.app: "app.py" is not an app reference; expected FILE.py::Class',
        ),
        ("    app: app.py::Hello\n", "", "skyform.yaml:6: apps.hello.app: required key is missing"),
        ("stack: demo", "stack: Demo_Stack", "skyform.yaml:1: stack: String should match pattern"),
        (
            "state: local",
            "state: postgress",
            'skyform.yaml:3: state: unknown state backend "postgress" (did you mean "postgres"?)',
        ),
        (
            "state: local",
            "state: {postgres: {url: postgresql://h/db, shema: s}}",
            "skyform.yaml:3: state: postgres: unknown option 'shema' (did you mean \"schema\"?)",
        ),
        (
            "state: local",
            "state: {local: {dri: st}}",
            "skyform.yaml:3: state: local: unknown option 'dri' (did you mean \"dir\"?)",
        ),
        (
            "secrets: [HF_TOKEN]",
            "secrets: [GREETING]",
            "skyform.yaml:6: apps.hello: Value error, GREETING is both in env and in secrets",
        ),
        (
            "  hello:",
            "  Hello_App:",
            'skyform.yaml:5: apps: app name "Hello_App" must be lowercase',
        ),
        ("  hello:", "  queue:", 'skyform.yaml:5: apps: app name "queue" is reserved'),
    ],
)
def test_errors_name_file_line_and_key(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    message = error_of(GOOD.replace(old, new), {"GREETING_TEST": "x"})
    assert message.replace("Value error, ", "").startswith(expected.replace("Value error, ", ""))


def test_yaml_syntax_and_duplicate_keys() -> None:
    assert error_of("stack: [demo\n").startswith("skyform.yaml:2: not valid YAML")
    assert error_of("stack: a\nstack: b\n") == "skyform.yaml:2: stack: duplicate key"
    assert error_of("").endswith("the stack file is empty (it needs at least `stack: NAME`)")
    assert error_of("- a\n- b\n") == "skyform.yaml:1: the stack file must be a mapping"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match="no such stack file"):
        load_stack(tmp_path / "skyform.yaml")


def test_cli_error_is_one_line_exit_1(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    text = (root / "skyform.yaml").read_text().replace("    env:", "    min_runnrs: 1\n    env:")
    (root / "skyform.yaml").write_text(text)
    proc = sky(root, "plan")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert 'skyform.yaml:8: apps.hello.min_runnrs: unknown key "min_runnrs"' in lines[0]
    assert 'did you mean "min_runners"' in lines[0]
    assert not (root / ".skyform").exists()  # nothing was created


def test_cli_error_text_is_printed_as_is(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    proc = sky(root, "plan", "--format", "[/][red]x")  # brackets are text, not markup
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "--format [/][red]x: not a format" in proc.stderr


def test_stack_options_override_class_options(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p", {"hello": {"app": "app.py::Hello", "max_runners": 4, "keep_alive": 5}}
    )
    proc = sky(root, "plan", "--json")
    assert proc.returncode == 0, proc.stderr
    after = json.loads(proc.stdout)["resource_changes"][1]["after"]
    assert after["max_runners"] == 4  # the class says 1
    assert after["keep_alive"] == 5
    assert after["min_runners"] == 0  # not overridden: the class's value
    assert after["auth"] == "private"  # apply's default


def test_override_conflicting_with_class_is_reported_at_the_app(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", {"hello": {"app": "app.py::Hello", "min_runners": 3}})
    proc = sky(root, "plan")
    assert proc.returncode == 1
    assert "skyform.yaml:6: apps.hello:" in proc.stderr
    assert "min_runners (3) is greater than max_runners (1)" in proc.stderr


def test_schema_command_prints_json_schema(tmp_path: Path) -> None:
    proc = sky(tmp_path, "schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {"stack", "provider", "state", "gateway", "apps"}
    assert schema["required"] == ["stack"]
    app_entry = schema["$defs"]["AppEntry"]
    assert {"app", "max_runners", "env", "secrets", "auth"} <= set(app_entry["properties"])
    assert app_entry["additionalProperties"] is False


LIMITS = """\
stack: demo
gateway:
  port: 9001
  limits:
    max_header_bytes: 32KiB
    header_timeout: 2.5
    max_inflight_body_bytes: 100000000
    poison_after_deaths: 2
apps: {}
"""


def test_gateway_limits_parse_with_units_and_defaults_stay_unset() -> None:
    limits = load(LIMITS).model.gateway.limits
    assert limits.overrides() == {
        "max_header_bytes": 32 * 1024,
        "header_timeout": 2.5,
        "max_inflight_body_bytes": 100_000_000,
        "poison_after_deaths": 2,
    }
    assert load("stack: demo\n").model.gateway.limits.overrides() == {}


def test_gateway_limit_keys_are_the_gateways() -> None:
    from dataclasses import fields

    from skyform.engine.stackfile import GatewayLimitsConfig
    from skyform.runtime.limits import GatewayLimits

    assert list(GatewayLimitsConfig.model_fields) == [f.name for f in fields(GatewayLimits)]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    header_timeout: 2.5",
            "    header_timeuot: 2.5",
            'skyform.yaml:6: gateway.limits.header_timeuot: unknown key "header_timeuot" '
            '(did you mean "header_timeout"?)',
        ),
        (
            "32KiB",
            "lots",
            "skyform.yaml:5: gateway.limits.max_header_bytes: must be a size: a number of bytes, "
            "or a number with a unit (64KiB, 60MB, 1GiB); got 'lots'",
        ),
        ("32KiB", "0", "skyform.yaml:5: gateway.limits.max_header_bytes: Input should be greater"),
        (
            "2.5",
            "true",
            "skyform.yaml:6: gateway.limits.header_timeout: must be a number, got True",
        ),
        ("2.5", "-1", "skyform.yaml:6: gateway.limits.header_timeout: Input should be greater"),
        ("deaths: 2", "deaths: 0", "skyform.yaml:8: gateway.limits.poison_after_deaths: Input"),
    ],
)
def test_gateway_limit_errors_name_file_line_and_key(old: str, new: str, expected: str) -> None:
    assert old in LIMITS
    assert error_of(LIMITS.replace(old, new)).startswith(expected)


@pytest.mark.parametrize("name", ['"pwn\\n"', "playground", "queue", '"-"', "a_b", "-ab", "ab-"])
def test_app_names_are_matched_whole_and_reserved_ones_refused(name: str) -> None:
    from skyform.names import app_name_problem

    text = f"stack: demo\napps:\n  {name}:\n    app: app.py::Hello\n"
    message = error_of(text)
    assert message.startswith("skyform.yaml:2: apps: app name "), message
    # The stack file and the gateway's admin API share this one rule.
    assert app_name_problem(name.strip('"').replace("\\n", "\n")) in message
