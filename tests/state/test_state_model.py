"""The state document's rules, its JSON form, and the `state:` config, without any backend."""

from __future__ import annotations

import json

import pytest

from skyform.errors import SkyformError
from skyform.state import (
    STATE_VERSION,
    StateDocument,
    StateError,
    find_secret_values,
    list_addresses,
    open_backend,
    parse_config,
    secret_names,
    show,
)
from skyform.state.local import LocalBackend
from skyform.state.postgres import PostgresBackend, redact_url


def test_fresh_document_has_new_lineage_and_serial_zero() -> None:
    a, b = StateDocument.new("demo"), StateDocument.new("demo")
    assert a.version == STATE_VERSION
    assert (a.serial, a.resources, a.outputs, a.stack) == (0, {}, {}, "demo")
    assert a.lineage and a.lineage != b.lineage


def test_evolve_keeps_lineage_and_serial_and_copies() -> None:
    doc = StateDocument.new("demo")
    resources = {"app.hello": {"fingerprint": "abc"}}
    new = doc.evolve(resources=resources, outputs={"gateway_url": "http://x"})
    assert (new.lineage, new.serial) == (doc.lineage, doc.serial)
    assert new.resources == resources and doc.resources == {}
    resources["app.other"] = {}
    assert "app.other" not in new.resources  # evolve took a copy of the mapping
    assert new.evolve(outputs={}).resources == new.resources


def test_json_round_trip_orders_resources() -> None:
    doc = StateDocument.new("demo").evolve(resources={"b": {"x": 1}, "a": {"y": [1, "é"]}})
    text = doc.to_json()
    assert list(json.loads(text)) == [
        "version",
        "lineage",
        "serial",
        "stack",
        "resources",
        "outputs",
    ]
    assert list(json.loads(text)["resources"]) == ["a", "b"]
    assert StateDocument.from_json(text) == doc
    assert StateDocument.from_json(text.encode()) == doc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "is not a state document"),
        ('{"lineage": "x"}', "no integer 'version'"),
        ('{"version": 99}', "version 99, this skyform reads version 1; it was written by a newer"),
        ('{"version": 0}', "version 0, this skyform reads version 1"),
        (
            '{"version": 1, "lineage": "l", "serial": 1, "stack": "s", "resources": {}}',
            "missing outputs",
        ),
        (
            '{"version": 1, "lineage": "l", "serial": 1, "stack": "s", "resources": {}, "outputs": {}, "x": 1}',
            "unknown keys x",
        ),
        (
            '{"version": 1, "lineage": "", "serial": 1, "stack": "s", "resources": {}, "outputs": {}}',
            "lineage",
        ),
        (
            '{"version": 1, "lineage": "l", "serial": -1, "stack": "s", "resources": {}, "outputs": {}}',
            "serial",
        ),
        (
            '{"version": 1, "lineage": "l", "serial": true, "stack": "s", "resources": {}, "outputs": {}}',
            "serial",
        ),
        (
            '{"version": 1, "lineage": "l", "serial": 1, "stack": "s", "resources": [], "outputs": {}}',
            "resources",
        ),
        (
            '{"version": 1, "lineage": "l", "serial": 1, "stack": "s", "resources": {"a": 1}, "outputs": {}}',
            "'a' must be a JSON object",
        ),
        (
            '{"version": 1, "lineage": "l", "serial": 1, "stack": "s", "resources": {}, "outputs": []}',
            "outputs",
        ),
    ],
)
def test_bad_documents_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(StateError) as err:
        StateDocument.from_json(text, source="state file X")
    assert message in str(err.value)
    assert str(err.value).startswith("state file X")
    assert "\n" not in str(err.value)
    assert isinstance(err.value, SkyformError)


def test_secret_values_are_refused_by_the_model() -> None:
    doc = StateDocument.new("demo")
    with pytest.raises(StateError, match="'secrets' must be a list of names"):
        doc.evolve(resources={"app.x": {"secrets": {"HF_TOKEN": "hf_value"}}})
    with pytest.raises(StateError, match="'secrets' must be a list of names"):
        doc.evolve(resources={"app.x": {"spec": {"secrets": "HF_TOKEN"}}})
    with pytest.raises(StateError, match="secret HF_TOKEN appears in 'env'"):
        doc.evolve(
            resources={"app.x": {"spec": {"secrets": ["HF_TOKEN"], "env": {"HF_TOKEN": "v"}}}}
        )
    with pytest.raises(StateError, match="is not a secret name"):
        doc.evolve(resources={"app.x": {"secrets": ["HF_TOKEN=abc"]}})
    ok = doc.evolve(resources={"app.x": {"spec": {"secrets": ["HF_TOKEN"], "env": {"A": "b"}}}})
    assert secret_names(ok) == {"HF_TOKEN"}
    # A document read from storage is held to the same rule.
    bad = json.loads(ok.to_json())
    bad["resources"]["app.x"]["spec"]["secrets"] = {"HF_TOKEN": "value"}
    with pytest.raises(StateError, match="secret values are never stored"):
        StateDocument.from_json(json.dumps(bad))


def test_find_secret_values_scans_text() -> None:
    env = {"HF_TOKEN": "hf_abcdefgh12345", "SHORT": "1234", "QUOTED": 'a"b\\c-long-value'}
    assert find_secret_values("x hf_abcdefgh12345 y", {"HF_TOKEN"}, env) == ["HF_TOKEN"]
    assert find_secret_values("port 1234", {"SHORT"}, env) == []  # too short to be a secret
    assert find_secret_values(json.dumps({"v": env["QUOTED"]}), {"QUOTED"}, env) == ["QUOTED"]
    assert find_secret_values("nothing here", {"HF_TOKEN", "UNSET"}, env) == []


def test_list_and_show() -> None:
    doc = StateDocument.new("demo").evolve(
        resources={"gateway": {"port": 1}, "app.hello": {"n": 2}}
    )
    assert list_addresses(doc) == ["app.hello", "gateway"]
    assert show(doc, "gateway") == {"port": 1}
    assert show(doc)["resources"]["app.hello"] == {"n": 2}
    with pytest.raises(StateError, match=r"no resource 'app.helo'.*did you mean .app.hello."):
        show(doc, "app.helo")
    with pytest.raises(StateError, match="is empty"):
        show(StateDocument.new("demo"), "gateway")


def test_parse_config_forms(tmp_path) -> None:
    assert parse_config(None) == ("local", {})
    assert parse_config("local") == ("local", {})
    assert parse_config({"local": None}) == ("local", {})
    assert parse_config({"postgres": {"url": "postgresql://u@h/db"}}) == (
        "postgres",
        {"url": "postgresql://u@h/db"},
    )
    local = open_backend({"local": {"dir": "st"}}, "demo", tmp_path)
    assert isinstance(local, LocalBackend)
    assert local.path == tmp_path / "st" / "demo.state.json"
    assert open_backend("local", "demo", tmp_path).path == tmp_path / ".skyform" / "demo.state.json"
    pg = open_backend({"postgres": {"url": "postgresql://u:pw@h/db"}}, "demo", tmp_path)
    assert isinstance(pg, PostgresBackend)
    assert "pw" not in pg.location and "***" in pg.location


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("locl", "unknown backend 'locl' (did you mean \"local\"?)"),
        ({"postgress": {"url": "x"}}, 'did you mean "postgres"?'),
        ({"postgres": {"uri": "postgresql://h"}}, "unknown option 'uri' (did you mean \"url\"?)"),
        ({"postgres": {}}, "`url` is required"),
        ({"postgres": {"url": "${SKYFORM_PG_URL}"}}, "${SKYFORM_PG_URL}, which is not set"),
        ({"postgres": {"url": "mysql://h/db"}}, "must start with postgresql://"),
        ({"postgres": "url"}, "expected a mapping of options"),
        ({"local": {}, "postgres": {}}, "expected `local` or one backend"),
        (42, "expected `local` or one backend"),
    ],
)
def test_bad_config_is_one_clear_error(config, message, tmp_path) -> None:
    with pytest.raises(StateError) as err:
        open_backend(config, "demo", tmp_path)
    assert message in str(err.value)
    assert not (tmp_path / ".skyform").exists()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "a b", "x" * 101])
def test_bad_stack_names_are_refused(name, tmp_path) -> None:
    with pytest.raises(StateError, match="invalid stack name"):
        open_backend("local", name, tmp_path)


def test_redact_url() -> None:
    assert redact_url("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact_url("postgresql://db/x?password=s3cret&sslmode=require") == (
        "postgresql://db/x?password=***&sslmode=require"
    )
    assert redact_url("postgresql://me@db/x") == "postgresql://me@db/x"
