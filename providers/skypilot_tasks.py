"""SkyPilot task files for runners and gateways, as plain YAML-ready dicts.

Nothing here imports `sky`: a task is built as the dict `sky.Task.from_yaml_config`
reads, so it can be rendered, inspected and written to disk (for audit) without
SkyPilot, and keys and tokens never enter it — they travel separately as the
task's secrets (environment values SkyPilot redacts in logs and YAML dumps).

Traffic between machines is TLS: a runner serves the stack's runner
certificate (its key travels as a file mount, made private before the runner
starts), and the gateway gets its own certificate and the runner material the
same way. The stack CA's key never leaves the deploying machine.

Cluster names carry stack, app and revision, so an orphan sweep can find every
cluster a stack owns by name alone (`sky status | grep sf-<stack>--`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyform.errors import SkyformError

RUNNER_PORT = 8080  # every runner cluster runs one runner, so one fixed port serves
REMOTE_HOME = "~/.skyform"  # file-mount destinations (SkyPilot expands "~")
REMOTE_HOME_SH = "$HOME/.skyform"  # the same folder inside shell commands
WHEEL_ENV = "SKYFORM_WHEEL"  # a skyform wheel to ship instead of building or using the index
CLUSTER_PREFIX = "sf-"
_SEP = "--"  # sanitised name parts never contain "--", so names split unambiguously
_GATEWAY = "gateway"


# --- cluster names ----------------------------------------------------------------


def _part(value: str) -> str:
    """Lowercase, [a-z0-9-] only, no doubled or edge hyphens (a valid cluster-name part)."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return cleaned or "x"


def stack_prefix(stack: str) -> str:
    """Every cluster of `stack` starts with this."""
    return f"{CLUSTER_PREFIX}{_part(stack)}{_SEP}"


def gateway_cluster_name(stack: str) -> str:
    return f"{stack_prefix(stack)}{_GATEWAY}"


def runner_cluster_name(stack: str, app: str, revision: str, runner_id: str) -> str:
    return f"{stack_prefix(stack)}{_part(app)}{_SEP}{_part(revision)[:8]}{_SEP}{_part(runner_id)}"


def new_runner_id() -> str:
    return uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class ClusterName:
    """What a skyform cluster name says about the cluster."""

    stack: str
    kind: str  # "runner" or "gateway"
    app: str = ""
    revision: str = ""  # first 8 characters of the fingerprint
    runner_id: str = ""


def parse_cluster_name(name: str) -> ClusterName | None:
    """The parts of a skyform cluster name; None for clusters skyform did not name."""
    if not name.startswith(CLUSTER_PREFIX):
        return None
    parts = name[len(CLUSTER_PREFIX) :].split(_SEP)
    if len(parts) == 2 and parts[1] == _GATEWAY:
        return ClusterName(stack=parts[0], kind="gateway")
    if len(parts) == 4 and all(parts):
        return ClusterName(parts[0], "runner", parts[1], parts[2], parts[3])
    return None


def cluster_labels(stack: str, app: str, revision: str) -> dict[str, str]:
    """Cloud labels (instance tags) so a sweep in the cloud console finds them too."""
    return {
        "skyform-stack": _part(stack)[:63],
        "skyform-app": _part(app)[:63],
        "skyform-revision": _part(revision)[:63],
    }


# --- the skyform package the remote side installs --------------------------------


@dataclass(frozen=True)
class SkyformPackage:
    """How the remote side gets the deploying side's skyform.

    `requirement` is what the installer is given (a shell word, double-quoted in
    the setup script); when `wheel` is set, that local file travels as a file
    mount and `requirement` points at its remote path.
    """

    version: str
    requirement: str
    wheel: Path | None = None
    digest: str = ""  # content hash of the wheel: the environment key changes with the code

    @property
    def version_id(self) -> str:
        """The skyform identity in the environment key: version, plus the wheel's digest."""
        return f"{self.version}+{self.digest}" if self.digest else self.version

    @property
    def remote_wheel(self) -> str | None:
        return f"{REMOTE_HOME}/wheels/{self.wheel.name}" if self.wheel else None


def source_root() -> Path | None:
    """The checkout skyform runs from, or None when it is installed from an index.

    A checkout (editable install) has `pyproject.toml` next to the package folders.
    """
    import skyform

    root = Path(skyform.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "skyform"' in pyproject.read_text():
        return root
    return None


def skyform_package(wheel_dir: Path, extras: tuple[str, ...] = ()) -> SkyformPackage:
    """The skyform the remote side installs: the same version as this side.

    Installed from a package index, the index has that version, so the remote side
    installs `skyform==VERSION`. Run from a checkout, the version may not be on any
    index (or be a different build of it), so this side builds its wheel and ships it.
    A gateway on SkyPilot was itself given a wheel (`$SKYFORM_WHEEL`): it ships that
    same wheel on to its runners.
    """
    from skyform import __version__

    extra = f"[{','.join(extras)}]" if extras else ""
    given = os.environ.get(WHEEL_ENV)
    if given:
        wheel = Path(given).expanduser()
        if not wheel.is_file():
            raise SkyformError(f"${WHEEL_ENV} names {given}, which is not a file")
    else:
        root = source_root()
        if root is None:
            return SkyformPackage(__version__, f"skyform{extra}=={__version__}")
        from skyform.providers.wheel import build_wheel

        wheel = build_wheel(root, wheel_dir)
    digest = wheel_digest(wheel)
    remote = f"{REMOTE_HOME_SH}/wheels/{wheel.name}"
    return SkyformPackage(__version__, f"skyform{extra} @ file://{remote}", wheel, digest)


def wheel_digest(wheel: Path) -> str:
    """Hash of the wheel's member names and contents (zip timestamps left out)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            digest.update(name.encode() + b"\0" + zf.read(name) + b"\0")
    return digest.hexdigest()[:16]


# --- setup: the same environment recipe as local runners ---------------------------


def _setup(
    requirements: list[str], python_version: str, package: SkyformPackage, kind: str
) -> tuple[str, str]:
    """(setup script, remote python word) for the environment with these inputs.

    The environment is built by `skyform.providers.environments`' remote recipe,
    cached on the machine under the hash of its inputs; a shipped wheel's
    content hash is part of the skyform identity, so changed code gets a fresh one.
    """
    from skyform.providers import environments

    version = package.version_id
    reqs = environments.normalize_requirements(requirements)
    minor = environments.python_minor(python_version)
    key = remote_environment_key(requirements, python_version, package, kind)
    script = environments.remote_setup_script(reqs, minor, package.requirement, version, kind=kind)
    return script, environments.remote_env_python(key)


def remote_environment_key(
    requirements: list[str], python_version: str, package: SkyformPackage, kind: str = "runner"
) -> str:
    """The key a remote machine builds this environment under (the plan shows it)."""
    from skyform.providers import environments

    return environments.environment_key(
        environments.normalize_requirements(requirements),
        environments.python_minor(python_version),
        package.version_id,
        kind=kind,
    )


# --- task configs -----------------------------------------------------------------


def _file_mounts(package: SkyformPackage, extra: dict[str, Path]) -> dict[str, str]:
    mounts = {remote: str(Path(local).resolve()) for remote, local in extra.items()}
    if package.wheel is not None and package.remote_wheel is not None:
        mounts[package.remote_wheel] = str(package.wheel.resolve())
    return mounts


def runner_task_config(
    *,
    name: str,
    bundle_path: Path,
    revision: str,
    requirements: list[str],
    python_version: str,
    package: SkyformPackage,
    port: int = RUNNER_PORT,
    tls: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """The task of one runner cluster (resources are added by the provider).

    Keys and tokens are not part of it: the provider adds them as secrets.
    `tls` (certificate, key) makes the runner serve https.
    """
    remote_bundle = f"{REMOTE_HOME}/bundles/{_part(revision)}.skyb"
    setup, python = _setup(requirements, python_version, package, "runner")
    mounts: dict[str, Path] = {remote_bundle: bundle_path}
    private = ""
    tls_args = ""
    if tls is not None:
        cert, key = f"{REMOTE_HOME}/tls/runner.pem", f"{REMOTE_HOME}/tls/runner.key"
        mounts.update({cert: tls[0], key: tls[1]})
        private = f"chmod 600 {key} && "
        tls_args = f" --tls-cert {cert} --tls-key {key}"
    run = (
        f"{private}exec {python} -m skyform.runtime.runner --bundle {remote_bundle} "
        f"--port {int(port)} --host 0.0.0.0{tls_args}"
    )
    return {
        "name": name,
        "setup": setup,
        "run": run,
        "file_mounts": _file_mounts(package, mounts),
    }


def gateway_task_config(
    *,
    name: str,
    stack: str,
    port: int,
    remote_state_dir: str,
    provider_json: Path,
    python_version: str,
    package: SkyformPackage,
    requirements: list[str],
    tls_files: dict[str, Path] | None = None,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """The task of the gateway cluster: it runs the gateway, which scales runners
    through SkyPilot (its provider config arrives as `<state-dir>/provider.json`).

    `tls_files` (file name -> local path) travel to `<state-dir>/tls/`, keys made
    private before the gateway starts; `extra_args` are more gateway arguments.
    """
    setup, python = _setup(requirements, python_version, package, "gateway")
    # The gateway ships the wheel it was given on to the runners it starts.
    wheel = (
        f'export {WHEEL_ENV}="{REMOTE_HOME_SH}/wheels/{package.wheel.name}" && '
        if package.wheel
        else ""
    )
    mounts: dict[str, Path] = {f"{remote_state_dir}/provider.json": provider_json}
    keys = []
    for file_name, local in (tls_files or {}).items():
        mounts[f"{remote_state_dir}/tls/{file_name}"] = local
        if file_name.endswith(".key"):
            keys.append(f"{remote_state_dir}/tls/{file_name}")
    private = f"chmod 600 {' '.join(keys)} && " if keys else ""
    # The TLS paths stay unquoted so that the shell expands their "~".
    tls_args = _gateway_tls_arguments(remote_state_dir, set(tls_files or {}))
    more = "".join(f" {a}" for a in tls_args)
    more += "".join(f" {shlex.quote(a)}" for a in extra_args or [])
    run = (
        f"mkdir -p {remote_state_dir} && {private}{wheel}exec {python} -m skyform.runtime.gateway "
        f"--port {int(port)} --state-dir {remote_state_dir} --host 0.0.0.0 "
        f"--stack {shlex.quote(stack)}{more}"
    )
    return {
        "name": name,
        "setup": setup,
        "run": run,
        "file_mounts": _file_mounts(package, mounts),
    }


def _gateway_tls_arguments(remote_state_dir: str, files: set[str]) -> list[str]:
    """The gateway's TLS arguments, naming the files `gateway_task_config` mounts."""
    tls = f"{remote_state_dir}/tls"
    args: list[str] = []
    if "gateway.pem" in files:
        args += ["--tls-cert", f"{tls}/gateway.pem", "--tls-key", f"{tls}/gateway.key"]
    if "runner.pem" in files:
        args += ["--runner-cert", f"{tls}/runner.pem", "--runner-key", f"{tls}/runner.key"]
        args += ["--runner-ca", f"{tls}/ca.pem"]
    return args


def local_python() -> str:
    """This interpreter's minor version: the gateway runs under the same one remotely."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"
