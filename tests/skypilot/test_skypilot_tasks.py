"""Runner and gateway tasks: real `sky.Task`s that round-trip through YAML, carry the
bundle and skyform as file mounts, and never put a key or token on disk."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from support.skypilot import stack_tls

from skyform import __version__
from skyform.errors import SkyformError
from skyform.providers import create_provider
from skyform.providers import skypilot_tasks as tasks
from skyform.providers.base import GatewaySpec, RunnerSpec
from skyform.providers.skypilot import API_SERVER_ENV, ProvisioningError, SkyPilotProvider

pytestmark = [pytest.mark.skypilot, pytest.mark.slow]

SECRETS = {
    "SKYFORM_BUNDLE_KEY": "bundle-key-4f1d9a",
    "SKYFORM_RUNNER_TOKEN": "runner-token-8c2e77",
    "HF_TOKEN": "hf-secret-0b9e41",
}


def runner_spec(tmp_path: Path, machine_types: list[str]) -> RunnerSpec:
    bundle = tmp_path / "embed.skyb"
    bundle.write_bytes(b"signed bundle bytes")
    return RunnerSpec(
        stack="demo",
        app="embed",
        revision="3f9a0c1d2e4b5a6978",
        bundle_path=bundle,
        machine_types=machine_types,
        requirements=["numpy==2.1.0"],
        python_version="3.11",
        env=dict(SECRETS),
        runner_id="r1",
        tls=stack_tls(tmp_path)["runner_tls"],
    )


def files_under(path: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in path.rglob("*") if p.is_file() and p.suffix != ".whl"
    )


def test_runner_task_round_trips_and_keeps_secrets_off_disk(enabled, sky, tmp_path: Path):
    provider = SkyPilotProvider("demo", tmp_path / "rt", clouds=["lambda"], autostop_minutes=20)
    spec = runner_spec(tmp_path, ["GPU-H100", "GPU-B200"])
    cluster = tasks.runner_cluster_name("demo", "embed", spec.revision, "r1")
    task = provider.runner_task(spec, cluster)

    task_file = tmp_path / "rt" / "skypilot" / "tasks" / f"{cluster}.yaml"
    on_disk = yaml.safe_load(task_file.read_text())
    again = sky.Task.from_yaml_config(copy.deepcopy(on_disk)).to_yaml_config()
    again.pop("_user_specified_yaml")  # SkyPilot keeps the YAML it was given
    assert again == on_disk
    # What SkyPilot will run, per the runner's command-line contract.
    assert on_disk["run"].startswith("chmod 600 ~/.skyform/tls/runner.key && exec ")
    assert on_disk["run"].endswith(
        "-m skyform.runtime.runner --bundle ~/.skyform/bundles/3f9a0c1d2e4b5a6978.skyb "
        "--port 8080 --host 0.0.0.0 "
        "--tls-cert ~/.skyform/tls/runner.pem --tls-key ~/.skyform/tls/runner.key"
    )
    assert "--python 3.11" in on_disk["setup"]
    assert "numpy==2.1.0" in on_disk["setup"]
    # Fallback machine types become ordered candidates, each with autostop and the port.
    ordered = on_disk["resources"]["ordered"]
    assert [c["accelerators"] for c in ordered] == [{"H100": 1}, {"B200": 1}]
    assert all(c["autostop"] == {"idle_minutes": 20, "down": True} for c in ordered)
    assert all(c["ports"] == ["8080"] for c in ordered)
    assert ordered[0]["labels"]["skyform-stack"] == "demo"
    # The bundle and skyform's wheel travel as file mounts.
    mounts = on_disk["file_mounts"]
    assert mounts["~/.skyform/bundles/3f9a0c1d2e4b5a6978.skyb"] == str(spec.bundle_path.resolve())
    # So does the runner certificate: the runner serves https (traffic leaves the machine).
    assert spec.tls is not None
    assert mounts["~/.skyform/tls/runner.pem"] == str(spec.tls.cert.resolve())
    assert mounts["~/.skyform/tls/runner.key"] == str(spec.tls.key.resolve())
    wheel_remote = next(k for k in mounts if k.endswith(".whl"))
    wheel = Path(mounts[wheel_remote])
    assert wheel.name.startswith(f"skyform-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        assert "skyform/runtime/__init__.py" in zf.namelist()
    assert f'"skyform @ file://$HOME/.skyform/wheels/{wheel.name}"' in on_disk["setup"]

    # Keys and tokens: in the task in memory as secrets, on disk nowhere.
    assert set(task.secrets) == set(SECRETS)
    assert (
        task.envs_and_secrets["SKYFORM_RUNNER_TOKEN"].get_secret_value()
        == SECRETS["SKYFORM_RUNNER_TOKEN"]
    )
    assert "secrets" not in on_disk
    written = files_under(tmp_path / "rt")
    for value in SECRETS.values():
        assert value not in written
    # What SkyPilot shows of the task (dashboard, logs) has them redacted.
    shown = yaml.safe_dump(task.to_yaml_config(use_user_specified_yaml=True))
    assert not any(value in shown for value in SECRETS.values())


def test_single_machine_type_lets_the_optimizer_choose(enabled, sky, tmp_path: Path):
    regions = ["us-east-1", "us-west-1"]
    provider = SkyPilotProvider("demo", tmp_path / "rt", clouds=["lambda"], regions=regions)
    spec = runner_spec(tmp_path, ["CPU"])
    task = provider.runner_task(spec, "sf-demo--embed--3f9a0c1d--r1")
    config = task.to_yaml_config()
    assert list(config["resources"]) == ["any_of"]
    candidates = config["resources"]["any_of"]
    assert sorted(c["infra"] for c in candidates) == ["lambda/us-east-1", "lambda/us-west-1"]
    assert all(c["cpus"] == "4+" for c in candidates)


def test_gateway_task_reaches_the_api_server(enabled, sky, tmp_path: Path):
    provider = SkyPilotProvider(
        "demo",
        tmp_path / "rt",
        clouds=["lambda"],
        api_server="https://skypilot.example.com",
    )
    spec = GatewaySpec(
        stack="demo",
        port=8765,
        state_dir=tmp_path / "gw",
        env={"SKYFORM_ADMIN_TOKEN": "adm-77"},
        public_url="https://gw.example.com",
        trusted_proxies=("10.0.0.0/8",),
        **stack_tls(tmp_path),
    )
    endpoint = provider.gateway_endpoint()
    assert endpoint == "https://skypilot.example.com"
    task = provider.gateway_task(spec, tasks.gateway_cluster_name("demo"), endpoint)
    config = task.to_yaml_config()
    assert "-m skyform.runtime.gateway --port 8765 --state-dir ~/.skyform/gateway" in config["run"]
    tls = "~/.skyform/gateway/tls"
    assert config["run"].endswith(
        f"--host 0.0.0.0 --stack demo --tls-cert {tls}/gateway.pem --tls-key {tls}/gateway.key "
        f"--runner-cert {tls}/runner.pem --runner-key {tls}/runner.key --runner-ca {tls}/ca.pem "
        "--public-url https://gw.example.com --trusted-proxy 10.0.0.0/8"
    )
    assert f"chmod 600 {tls}/gateway.key {tls}/runner.key && " in config["run"]
    # Certificates and keys travel as file mounts; the CA's key never leaves this machine.
    mounted = {Path(v).name for k, v in config["file_mounts"].items() if k.startswith(tls)}
    assert mounted == {"gateway.pem", "gateway.key", "runner.pem", "runner.key", "ca.pem"}
    assert (
        task.envs_and_secrets[API_SERVER_ENV].get_secret_value() == "https://skypilot.example.com"
    )
    assert task.envs_and_secrets["SKYFORM_ADMIN_TOKEN"].get_secret_value() == "adm-77"
    candidate = config["resources"]  # one candidate: written as plain resources
    assert candidate["infra"] == "lambda"
    assert candidate["cpus"] == "4+" and "accelerators" not in candidate
    assert candidate["ports"] == ["8765"]
    # The gateway reads its provider config from <state-dir>/provider.json.
    local_json = Path(config["file_mounts"]["~/.skyform/gateway/provider.json"])
    sent = json.loads(local_json.read_text())
    assert sent["skypilot"]["clouds"] == ["lambda"]
    assert sent["skypilot"]["autostop_minutes"] == 30
    rebuilt = create_provider(sent, stack="demo", runtime_dir=tmp_path / "remote")
    assert rebuilt.options() == provider.options()
    assert '"skyform[skypilot] @ file://' in config["setup"]
    assert "adm-77" not in files_under(tmp_path / "rt")
    # The gateway ships the wheel it was given on to its runners.
    wheel = next(k for k in config["file_mounts"] if k.endswith(".whl"))
    name = Path(wheel).name
    assert f'export SKYFORM_WHEEL="$HOME/.skyform/wheels/{name}"' in config["run"]


def test_a_given_wheel_is_shipped_as_is(enabled, tmp_path: Path, monkeypatch):
    given = tmp_path / "given" / f"skyform-{__version__}-py3-none-any.whl"
    given.parent.mkdir()
    shutil.copy(tasks.skyform_package(tmp_path / "built").wheel, given)
    monkeypatch.setenv("SKYFORM_WHEEL", str(given))
    provider = SkyPilotProvider("demo", tmp_path / "rt", clouds=["lambda"])
    task = provider.runner_task(runner_spec(tmp_path, ["CPU"]), "sf-demo--embed--3f9a0c1d--r1")
    assert task.file_mounts[f"~/.skyform/wheels/{given.name}"] == str(given.resolve())
    monkeypatch.setenv("SKYFORM_WHEEL", str(tmp_path / "missing.whl"))
    with pytest.raises(
        SkyformError, match=r"SKYFORM_WHEEL names .*missing\.whl, which is not a file"
    ):
        provider.runner_task(runner_spec(tmp_path, ["CPU"]), "sf-demo--embed--3f9a0c1d--r2")


def test_gateway_refuses_an_api_server_only_this_machine_reaches(fake_cloud, tmp_path: Path):
    provider = SkyPilotProvider("demo", tmp_path, client=fake_cloud)
    with pytest.raises(ProvisioningError) as info:
        provider.start_gateway(
            GatewaySpec(stack="demo", port=8765, state_dir=tmp_path / "gw", **stack_tls(tmp_path))
        )
    assert info.value.kind == "api_server"
    assert "http://127.0.0.1:46580" in str(info.value)
    assert fake_cloud.launched == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"autostop_minute": 5},
            'unknown key "autostop_minute" (did you mean "autostop_minutes"?)',
        ),
        ({"cloud": ["aws"]}, 'unknown key "cloud" (did you mean "clouds"?)'),
        ({"autostop_minutes": 0}, "autostop_minutes must be a whole number >= 1"),
        ({"autostop_minutes": None}, "autostop_minutes must be a whole number >= 1"),
        ({"use_spot": "yes"}, "use_spot must be true or false"),
        ({"clouds": [3]}, "clouds must be a list of names"),
        ({"api_server": "skypilot:46580"}, "api_server must be an http(s) URL"),
    ],
)
def test_bad_stack_keys_are_clear_errors(options, message, tmp_path: Path):
    with pytest.raises(SkyformError) as info:
        create_provider({"skypilot": options}, stack="demo", runtime_dir=tmp_path)
    assert message in str(info.value)
    assert not any(tmp_path.iterdir())


def test_missing_extra_is_a_clear_error(tmp_path: Path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "sky" else real_find_spec(name, *args),
    )
    with pytest.raises(SkyformError, match=r"pip install 'skyform\[skypilot\]'"):
        create_provider({"skypilot": {}}, stack="demo", runtime_dir=tmp_path)


def test_cluster_names_carry_stack_app_and_revision():
    name = tasks.runner_cluster_name("My_Stack", "embed.v2", "ABCDEF0123456789", "x9")
    assert name == "sf-my-stack--embed-v2--abcdef01--x9"
    parsed = tasks.parse_cluster_name(name)
    assert (parsed.stack, parsed.kind, parsed.app, parsed.revision, parsed.runner_id) == (
        "my-stack",
        "runner",
        "embed-v2",
        "abcdef01",
        "x9",
    )
    assert tasks.parse_cluster_name(tasks.gateway_cluster_name("My_Stack")).kind == "gateway"
    assert tasks.parse_cluster_name("my-dev-box") is None


def test_plan_shows_the_environment_key_the_runner_task_builds(enabled, sky, tmp_path: Path):
    provider = SkyPilotProvider("demo", tmp_path / "rt", clouds=["lambda"])
    spec = runner_spec(tmp_path, ["CPU"])
    key = provider.environment_key(list(spec.requirements), spec.python_version)
    config = provider.runner_task(spec, "sf-demo--embed--3f9a0c1d--r1").to_yaml_config()
    assert key in config["setup"]
    assert key in config["run"]  # the runner starts from that environment's python
    assert provider.environment_key(["numpy==2.2.0"], "3.11") != key


def test_plaintext_off_host_is_refused(enabled, fake_cloud, tmp_path: Path):
    from dataclasses import replace

    provider = SkyPilotProvider("demo", tmp_path / "rt", clouds=["lambda"])
    with pytest.raises(SkyformError, match="needs the stack's runner certificate"):
        provider.runner_task(replace(runner_spec(tmp_path, ["CPU"]), tls=None), "sf-demo--e--x--r1")
    remote = SkyPilotProvider(
        "demo", tmp_path / "gw-rt", api_server="https://sky.example.com", client=fake_cloud
    )
    with pytest.raises(ProvisioningError, match="serves TLS and verifies its runners"):
        remote.start_gateway(GatewaySpec(stack="demo", port=8765, state_dir=tmp_path / "gw"))
    assert fake_cloud.launched == []
