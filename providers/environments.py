"""Per-app virtual environments: built from an app's requirements, cached, shared.

Why: an App names the packages it needs; a runner must run with exactly those,
plus skyform's runtime, under the bundle's Python minor version — never with
whatever the deployer happens to have installed. Building an environment is
slow, so (as fal's isolate does) each one is cached under a hash of its inputs
and reused by every runner and every stack that needs the same inputs:

    key = hash(recipe version, Python minor, sorted requirements,
               skyform version, skyform's runtime requirements)

An environment is built once per key: builds of one key are serialised by a
file lock, and an environment counts as built only once its marker file has
been written, last and atomically — a half-built one (a crash, a kill) has no
marker and is removed and rebuilt, never used.

What goes in, and why it does not fight the app's pins:

- the app's requirements and skyform's *runtime* needs (pydantic, cloudpickle,
  fastapi, uvicorn, httpx, pyyaml) as skyform's own lower bounds, no upper
  pins, resolved together in one resolution: an app pinning `pydantic==2.9.2`
  or `fastapi==0.115.0` gets exactly that. skyform's CLI-side dependencies
  (typer, rich, deepdiff, psycopg, uv, SkyPilot) never enter the environment.
- skyform itself, copied from the deployer's own install without its
  dependencies: a wheel install's files, or for an editable checkout the same
  editable hook (so runners see the checkout's code).

uv builds it when available (fast, shared download cache), else `venv` + pip.
The user's package index configuration (pip's files and `PIP_*` variables,
`UV_*` variables) applies — see `skyform.providers.envconfig`.

Installers are children that must never outlive their build: each runs in its
own process group with a parent-death signal (SIGKILL), and holds the key's
lock fd itself, so the lock stays held for as long as any installer process
lives — a builder killed by SIGKILL cannot let the next one build beside a
still-running installer. Installers start from an allowlisted environment
(`skyform.providers.processenv`), never with the deployer's secrets. A finished
environment is readable by everyone (runners may run as another user).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from skyform.errors import SkyformError
from skyform.files import write_atomic
from skyform.providers.processenv import tool_env

Progress = Callable[[str], None]

# 2: runtime gained uvloop + httptools; site-packages compiled to bytecode.
RECIPE_VERSION = 2
MARKER = ".skyform-env.json"  # written last: its presence means "complete"
REQUIREMENTS_FILE = ".skyform-requirements.txt"
LOG_SUFFIX = ".log"
LOCK_SUFFIX = ".lock"
KEY_LENGTH = 24

# What `python -m skyform.runtime.runner` imports besides skyform itself
# (python-multipart: form and file endpoints; websockets: websocket endpoints;
# psutil: a runner that leads its process group stops its members on exit).
RUNTIME_PACKAGES = (
    "pydantic",
    "cloudpickle",
    "fastapi",
    "uvicorn",
    "httpx",
    "pyyaml",
    "python-multipart",
    "websockets",
    "psutil",
)
_RUNTIME_FALLBACK = {
    "python-multipart": "python-multipart>=0.0.9",
    "websockets": "websockets>=13.0",
    "psutil": "psutil>=5.9",
    "pydantic": "pydantic>=2.7",
    "cloudpickle": "cloudpickle>=3.0",
    "fastapi": "fastapi>=0.110",
    "uvicorn": "uvicorn>=0.29",
    "httpx": "httpx>=0.27",
    "pyyaml": "pyyaml>=6.0",
}
# uvicorn's fast event loop and HTTP parser. The runner uses them when present
# and serves about twice the requests per second with them, so every runner
# environment gets them (where they build: not on Windows, not on PyPy).
SPEED_REQUIREMENTS = (
    'uvloop>=0.19; sys_platform != "win32" and platform_python_implementation == "CPython"',
    'httptools>=0.6; platform_python_implementation == "CPython"',
)
_ERROR_TAIL_LINES = 25


class EnvironmentBuildError(SkyformError):
    """An app's environment could not be built; carries the installer's own message."""

    def __init__(self, message: str, *, key: str = "", output: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.output = output
        self.error_type = "environment_build_failed"


@dataclass(frozen=True)
class Environment:
    """A complete, ready environment: run `python -m skyform.runtime.runner` with `.python`."""

    key: str
    path: Path
    python: Path
    python_version: str
    requirements: tuple[str, ...]
    skyform_version: str
    installer: str
    created: float
    build_id: str
    built: bool = False  # True when this call built it, False when it was cached


@dataclass(frozen=True)
class EnvUser:
    """Who asked for an environment: lets `skyform env prune` tell used from unused."""

    stack: str
    app: str
    workdir: Path


@dataclass(frozen=True)
class SkyformInstall:
    """How skyform is installed where the deployer runs it."""

    version: str
    editable_path: Path | None  # the checkout, for editable installs
    files: tuple[str, ...] = field(default=(), repr=False)  # RECORD paths
    dist_dir: Path | None = field(default=None, repr=False)

    @property
    def version_id(self) -> str:
        """The skyform identity an environment key uses.

        An editable install's environment points at its checkout, so two
        checkouts of one version must not share an environment.
        """
        if self.editable_path is None:
            return self.version
        digest = hashlib.sha256(str(self.editable_path).encode()).hexdigest()[:8]
        return f"{self.version}+editable.{digest}"


# --------------------------------------------------------------------------- inputs


def python_minor(version: str) -> str:
    """`"3.11"` from `"3.11"` or `"3.11.7"`; anything else is an error."""
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", str(version))
    if not match:
        raise EnvironmentBuildError(f'invalid Python version "{version}" (expected e.g. "3.11")')
    return f"{match.group(1)}.{match.group(2)}"


def normalize_requirements(requirements: Sequence[str]) -> list[str]:
    """Requirements as the key sees them: trimmed, de-duplicated, sorted.

    Order and spacing do not change what gets installed, so two apps listing
    the same packages differently share one environment. Each must be a PEP 508
    requirement (what `packaging` parses: a name, extras, versions, markers,
    `name @ URL`); anything else is refused here, before any installer runs.
    """
    if isinstance(requirements, str):
        raise EnvironmentBuildError("requirements must be a list of strings, not one string")
    seen: dict[str, None] = {}
    for raw in requirements:
        if not isinstance(raw, str):
            raise EnvironmentBuildError(f"requirement {raw!r} is not a string")
        text = " ".join(raw.split())
        if not text or text.startswith("#"):
            continue
        if text.startswith("-"):
            raise EnvironmentBuildError(
                f'requirement "{text}" is an installer option; requirements name packages '
                "(put index settings in pip's or uv's configuration)"
            )
        _parse(text)
        seen.setdefault(text, None)
    return sorted(seen, key=str.lower)


def _parse(text: str) -> Requirement:
    """`text` as a PEP 508 requirement, or one clear error saying what is wrong with it."""
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0].rstrip(".") if str(exc).strip() else "unparsable"
        hint = ""
        if "://" in text or text.startswith((".", "/", "~")):
            hint = ' (a URL or path needs the package name first: "name @ URL")'
        raise EnvironmentBuildError(
            f'requirement "{text}" is not a valid requirement: {reason}{hint}'
        ) from None


def runtime_requirements() -> list[str]:
    """skyform's runtime needs, with skyform's own lower bounds (from its metadata)."""
    found: dict[str, str] = {}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for req in importlib.metadata.requires("skyform") or []:
            if ";" in req:
                continue  # extras (skypilot, torch, dev)
            name = _req_name(req)
            if name in RUNTIME_PACKAGES:
                found[name] = req.strip()
    return [found.get(name, _RUNTIME_FALLBACK[name]) for name in RUNTIME_PACKAGES] + list(
        SPEED_REQUIREMENTS
    )


def skyform_install() -> SkyformInstall:
    """The deployer's skyform distribution (the installed one, not a stray egg-info)."""
    for dist in importlib.metadata.distributions(name="skyform"):
        record = dist.read_text("RECORD")
        if record is None:
            continue
        files = tuple(line.split(",")[0] for line in record.splitlines() if line.strip())
        editable: Path | None = None
        direct = dist.read_text("direct_url.json")
        if direct:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                info = json.loads(direct)
                if info.get("dir_info", {}).get("editable"):
                    editable = Path(_file_url_path(info["url"]))
        dist_dir = Path(str(dist.locate_file(""))).resolve()
        return SkyformInstall(dist.version, editable, files, dist_dir)
    raise EnvironmentBuildError(
        "skyform is not installed as a package here; install it (pip install -e . or a wheel) "
        "so environments can include it"
    )


def skyform_version() -> str:
    """The skyform identity to pass to `environment_key` (see `SkyformInstall.version_id`)."""
    return skyform_install().version_id


def environment_key(
    requirements: Sequence[str], python_version: str, skyform_version: str, *, kind: str = "runner"
) -> str:
    """The cache key of an environment: the same inputs give the same key anywhere.

    `kind="gateway"` (skyform with all its dependencies, for a remote gateway)
    gets keys of its own, so it never shares a runner's leaner environment.
    """
    material: dict[str, object] = {
        "recipe": RECIPE_VERSION,
        "python": python_minor(python_version),
        "requirements": normalize_requirements(requirements),
        "skyform": skyform_version,
        "runtime": runtime_requirements(),
    }
    if kind != "runner":
        material["kind"] = kind
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:KEY_LENGTH]


# --------------------------------------------------------------------------- cache


SYSTEM_CACHE = Path("/var/cache/skyform")


def cache_root() -> Path:
    """`$SKYFORM_CACHE_DIR`, else `$XDG_CACHE_HOME/skyform`, else `~/.cache/skyform`.

    As root, the default is `/var/cache/skyform`: runners then run as an
    unprivileged user, who could not enter root's home to reach the environment.
    """
    if os.environ.get("SKYFORM_CACHE_DIR"):
        return Path(os.environ["SKYFORM_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "skyform"
    if os.geteuid() == 0:
        return SYSTEM_CACHE
    return Path.home() / ".cache" / "skyform"


def envs_dir() -> Path:
    """Where environments live: one directory per key."""
    return cache_root() / "envs"


def env_path(key: str) -> Path:
    return envs_dir() / key


def env_python(path: Path) -> Path:
    return path / "bin" / "python"


@contextlib.contextmanager
def key_lock(key: str, *, blocking: bool = True, on_wait: Progress | None = None) -> Iterator[bool]:
    """Hold the OS lock of one key (released if the process dies).

    Yields True when held; with `blocking=False`, yields False when another
    process holds it.
    """
    directory = _shared_dir(envs_dir())
    with open(directory / f"{key}{LOCK_SUFFIX}", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                yield False
                return
            if on_wait is not None:
                on_wait(f"environment {key[:12]}: waiting for a build in another process")
            fcntl.flock(handle, fcntl.LOCK_EX)
        previous = getattr(_held, "fd", None)
        _held.fd = handle.fileno()
        try:
            yield True
        finally:
            _held.fd = previous
            # Not LOCK_UN: that would also free the lock an installer's copy of the fd
            # holds; closing our copy leaves it held until the last holder is gone.


# The lock fd of the build this thread is running: handed to its installers.
_held = threading.local()


def _shared_dir(path: Path) -> Path:
    """`path` (and missing parents) created readable and enterable by everyone."""
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                os.chmod(folder, 0o755)
    return path


def read_marker(path: Path) -> dict[str, object] | None:
    """The completion marker of an environment directory, or None when incomplete."""
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != path.name:
        return None
    if not env_python(path).exists():
        return None
    return data


def load_environment(key: str, *, built: bool = False) -> Environment | None:
    """The complete environment of `key`, or None (missing or half-built)."""
    path = env_path(key)
    marker = read_marker(path)
    if marker is None:
        return None
    fields = marker_fields(marker)
    return Environment(
        key=key,
        path=path,
        python=env_python(path),
        **{**fields, "requirements": tuple(fields["requirements"])},
        build_id=str(marker.get("build_id", "")),
        built=built,
    )


def marker_fields(marker: dict[str, object]) -> dict[str, Any]:
    """What a completion marker says about its environment (empty values where absent)."""
    return {
        "python_version": str(marker.get("python_version", "")),
        "requirements": list(marker.get("requirements", []) or []),  # type: ignore[call-overload]
        "skyform_version": str(marker.get("skyform_version", "")),
        "installer": str(marker.get("installer", "")),
        "created": float(marker.get("created", 0) or 0),  # type: ignore[arg-type]
    }


# --------------------------------------------------------------------------- ensure


def ensure_environment(
    requirements: Sequence[str],
    python_version: str,
    progress: Progress | None = None,
    *,
    used_by: EnvUser | None = None,
) -> Environment:
    """The ready environment for these inputs, building it first if needed.

    Safe to call from many processes at once: one builds, the others wait and
    reuse it. Raises `EnvironmentBuildError` (with the installer's message)
    when it cannot be built; nothing half-built is left to be used.
    """
    report = _safe(progress)
    _forced_installer()  # a bad setting is an error even when the environment is cached
    reqs = normalize_requirements(requirements)
    minor = python_minor(python_version)
    install = skyform_install()
    key = environment_key(reqs, minor, install.version_id)
    env = load_environment(key)
    if env is None:
        with key_lock(key, on_wait=report):
            env = load_environment(key)
            if env is None:
                env = _build(key, reqs, minor, install, report)
    else:
        report(f"environment {key[:12]}: cached")
    if used_by is not None:
        record_use(key, used_by)
    return env


USERS_FILE = ".skyform-users.json"  # who asked for an environment: see envusage


def record_use(key: str, user: EnvUser) -> None:
    """Note that `user` runs on environment `key` (latest use time per user)."""
    path = env_path(key)
    if not path.is_dir():
        return
    with key_lock(key):
        users = read_users(path)
        workdir = str(Path(user.workdir).resolve())
        users = [
            u
            for u in users
            if (u.get("stack"), u.get("app"), u.get("workdir")) != (user.stack, user.app, workdir)
        ]
        users.append(
            {"stack": user.stack, "app": user.app, "workdir": workdir, "last_used": time.time()}
        )
        write_atomic(path / USERS_FILE, json.dumps({"users": users}, indent=2), fsync=True)


def read_users(path: Path) -> list[dict[str, object]]:
    """The users recorded in environment directory `path` ([] when none, or unreadable)."""
    try:
        data = json.loads((path / USERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    users = data.get("users") if isinstance(data, dict) else None
    return [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []


def _safe(progress: Progress | None) -> Progress:
    def report(message: str) -> None:
        if progress is None:
            return
        with contextlib.suppress(Exception):  # a broken display must not break a build
            progress(message)

    return report


def _forced_installer() -> str:
    forced = os.environ.get("SKYFORM_ENV_INSTALLER", "").strip().lower()
    if forced not in {"", "uv", "pip"}:
        raise EnvironmentBuildError(f'SKYFORM_ENV_INSTALLER must be "uv" or "pip", got "{forced}"')
    return forced


def installer_name() -> str:
    """`uv` when available (or forced by `SKYFORM_ENV_INSTALLER=uv`), else `pip`."""
    forced = _forced_installer()
    if forced == "pip":
        return "pip"
    if uv_binary() is not None:
        return "uv"
    if forced == "uv":
        raise EnvironmentBuildError("SKYFORM_ENV_INSTALLER=uv but uv is not installed")
    return "pip"


def uv_binary() -> str | None:
    try:
        import uv  # the PyPI package ships the binary

        found = uv.find_uv_bin()
        if found and os.path.exists(found):
            return str(found)
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def _build(
    key: str, reqs: list[str], minor: str, install: SkyformInstall, report: Progress
) -> Environment:
    path = env_path(key)
    installer = installer_name()
    started = time.monotonic()
    summary = ", ".join(reqs) if reqs else "no requirements"
    report(f"environment {key[:12]}: building for Python {minor} ({summary}) with {installer}")
    if path.exists() or path.is_symlink():
        report(f"environment {key[:12]}: removing an incomplete earlier build")
        remove_tree(path)
    log_path = envs_dir() / f"{key}{LOG_SUFFIX}"
    try:
        with open(log_path, "w") as log:
            interpreter = _interpreter(minor, installer)
            if installer == "uv":
                _build_with_uv(path, interpreter, minor, reqs, report, log)
            else:
                _build_with_pip(path, interpreter, reqs, report, log)
            _copy_skyform(install, _site_packages(path, minor))
            _compile_bytecode(path, minor, report, log)
            _share_tree(path)
            _check_imports(path, key)
    except BaseException as exc:
        remove_tree(path)
        if isinstance(exc, EnvironmentBuildError) and not exc.key:
            exc.key = key
        raise
    marker = {
        "key": key,
        "recipe": RECIPE_VERSION,
        "python_version": minor,
        "requirements": reqs,
        "runtime_requirements": runtime_requirements(),
        "skyform_version": install.version_id,
        "installer": installer,
        "bytecode": True,
        "created": time.time(),
        "build_id": uuid.uuid4().hex,
    }
    write_atomic(path / MARKER, json.dumps(marker, indent=2), mode=0o644, fsync=True)
    os.chmod(path / MARKER, 0o644)
    report(f"environment {key[:12]}: ready in {time.monotonic() - started:.1f}s")
    env = load_environment(key, built=True)
    assert env is not None  # the marker was just written
    return env


def _interpreter(minor: str, installer: str) -> str:
    """The Python to base the environment on: ours when the minor matches, else one found here.

    Looks on PATH, in pyenv's versions and the usual system places, and checks
    each candidate really is that version (pyenv shims of inactive versions
    are not). With none found, uv may still fetch one; pip cannot.
    """
    own = getattr(sys, "_base_executable", None) or sys.executable
    if os.geteuid() == 0:
        # Runners will run as an unprivileged user: base their environment on an
        # interpreter that user can reach (not one under root's private home).
        mine = [own] if f"{sys.version_info.major}.{sys.version_info.minor}" == minor else []
        for candidate in [*mine, *_interpreter_candidates(minor)]:
            if _reachable_by_others(candidate) and (
                candidate == own or _python_minor_of(candidate) == minor
            ):
                return candidate
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return own
    for candidate in _interpreter_candidates(minor):
        if _python_minor_of(candidate) == minor:
            return candidate
    if installer == "uv":
        return minor  # uv finds, or downloads where it may, an interpreter of that version
    raise EnvironmentBuildError(
        f"no Python {minor} interpreter found (the bundle was built with Python {minor}); "
        f"install python{minor}, or bundle with this Python"
    )


def _reachable_by_others(executable: str) -> bool:
    """Whether any user may run `executable`: every folder above it (and above the
    installation it belongs to, where its standard library is) is enterable by others."""
    for target in (Path(executable), Path(executable).resolve()):
        for folder in target.parents:
            try:
                if not folder.stat().st_mode & 0o001:
                    return False
            except OSError:
                return False
    return True


def _interpreter_candidates(minor: str) -> list[str]:
    found: list[str] = []
    on_path = shutil.which(f"python{minor}")
    if on_path:
        found.append(on_path)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    versions = sorted((pyenv_root / "versions").glob(f"{minor}.*"), reverse=True)
    found += [str(v / "bin" / f"python{minor}") for v in versions]
    for prefix in ("/usr/local/bin", "/usr/bin", "/opt/homebrew/bin"):
        found.append(f"{prefix}/python{minor}")
    return [c for c in dict.fromkeys(found) if os.access(c, os.X_OK)]


def _python_minor_of(executable: str) -> str | None:
    from skyform.providers.processes import command_output

    out = command_output([executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.strip() if out is not None else None


def _build_with_uv(
    path: Path, interpreter: str, minor: str, reqs: list[str], report: Progress, log: object
) -> None:
    from skyform.providers.envconfig import uv_install_config

    uv = uv_binary()
    assert uv is not None
    config = uv_install_config()
    env = _installer_env({**tool_env(), **config.env})
    _run([uv, "venv", "--color", "never", "--python", interpreter, str(path)], env, report, log)
    wanted = runtime_requirements() + reqs
    req_file = path / REQUIREMENTS_FILE
    req_file.write_text("\n".join(wanted) + "\n")
    command = [uv, "pip", "install", "--color", "never", "--compile-bytecode"]
    command += ["--python", str(env_python(path))]
    _run([*command, *config.args, "-r", str(req_file)], env, report, log)


def _build_with_pip(
    path: Path, interpreter: str, reqs: list[str], report: Progress, log: object
) -> None:
    env = _installer_env({**tool_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    _run([interpreter, "-m", "venv", str(path)], env, report, log)
    req_file = path / REQUIREMENTS_FILE
    req_file.write_text("\n".join(runtime_requirements() + reqs) + "\n")
    python = str(env_python(path))
    _run(
        [python, "-m", "pip", "install", "--progress-bar", "off", "-r", str(req_file)],
        env,
        report,
        log,
    )


def _installer_env(env: dict[str, str]) -> dict[str, str]:
    """The installer's environment: not the deployer's venv, and bytecode always written.

    A runner imports torch and transformers at every start; without `.pyc`
    files each start recompiles them (13 s instead of 8.6 s for
    `import torch, sentence_transformers` on 2 cores). The deployer's
    `PYTHONDONTWRITEBYTECODE` is about their own checkout, never about a
    cached environment that many runners start from.
    """
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("UV_NO_COMPILE_BYTECODE", None)
    return env


def _compile_bytecode(path: Path, minor: str, report: Progress, log: object) -> None:
    """Compile everything in site-packages to bytecode (what pip or the copy step left out).

    uv already compiled what it installed (`--compile-bytecode`); compileall
    skips up-to-date files, so this costs little there and covers pip builds
    and skyform's own copied files. A file that does not compile (packages
    ship such test fixtures) is skipped, as pip does, not a failed build.
    """
    report("compiling bytecode")
    site = str(_site_packages(path, minor))
    script = f"import compileall; compileall.compile_dir({site!r}, quiet=2, workers=0)"
    _run([str(env_python(path)), "-c", script], _installer_env(dict(os.environ)), report, log)


def _run(command: list[str], env: dict[str, str], report: Progress, log: object) -> None:
    """Run one installer step, streaming its lines as progress; fail with its own words."""
    log.write(f"$ {shlex.join(command)}\n")  # type: ignore[attr-defined]
    lock_fd = getattr(_held, "fd", None)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _SUPERVISOR, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(envs_dir()),
            text=True,
            errors="replace",
            start_new_session=True,  # its whole group is killed on interrupt
            pass_fds=(lock_fd,) if lock_fd is not None else (),
            preexec_fn=_term_with_builder,
            umask=0o022,
        )
    except OSError as exc:
        raise EnvironmentBuildError(f"could not run {command[0]}: {exc}") from exc
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        with proc.stdout:
            for line in proc.stdout:
                text = ANSI_ESCAPE.sub("", line.rstrip())
                log.write(text + "\n")  # type: ignore[attr-defined]
                if text.strip() and not text.startswith("Activate with:"):
                    lines.append(text)
                    report(text.strip())
    except BaseException:
        # Interrupted (Ctrl-C, a failed log write): the installer must not
        # outlive the build, which is about to remove its directory.
        _kill_group(proc)
        raise
    code = proc.wait()
    if code != 0:
        output = "\n".join(lines)
        raise EnvironmentBuildError(_failure_message(lines), output=output)


# Runs each installer step: it leads the step's process group and holds the build
# lock's fd. SIGTERM (the kernel sends it when the builder dies, even by SIGKILL)
# kills the whole group, so no installer, nor a build backend it started, outlives
# the build.
_SUPERVISOR = (
    "import os, signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "sys.exit(subprocess.Popen(sys.argv[1:], close_fds=False).wait())\n"
)


def _term_with_builder() -> None:
    """preexec_fn: the kernel SIGTERMs the supervisor when the thread that started it dies."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the installer and everything it started (it leads its own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _share_tree(path: Path) -> None:
    """Make a built environment readable (and its programs runnable) by every user.

    Runners may run as an unprivileged user; whatever umask the builder had
    (the gateway's is 077), the environment must be usable by them.
    """
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            target = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                info = os.lstat(target)
                if stat.S_ISLNK(info.st_mode):
                    continue
                mode = stat.S_IMODE(info.st_mode) | 0o444
                if mode & 0o100:
                    mode |= 0o011
                os.chmod(target, mode)


# Terminal colour and cursor codes, stripped from installer and SkyPilot output.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _failure_message(lines: list[str]) -> str:
    """The installer's own message, plus a note when it involves skyform's runtime needs.

    From the installer's first error line on (uv's `error:` and its causes,
    pip's `ERROR:` lines), or its last lines when it printed no error line.
    """
    first_error = next(
        (i for i, line in enumerate(lines) if re.match(r"\s*(error|ERROR)\b", line)), None
    )
    if first_error is not None:
        tail = lines[first_error:]
    else:
        tail = [line for line in lines if not line.startswith(("Using ", "Creating "))]
    tail = tail[-_ERROR_TAIL_LINES:] or ["(the installer printed nothing)"]
    message = "environment build failed:\n" + "\n".join(tail)
    involved = [
        req
        for req in runtime_requirements()
        if re.search(rf"\b{re.escape(_parse(req).name)}\b", message, re.IGNORECASE)
    ]
    if involved:
        message += (
            "\nnote: skyform's runtime needs " + ", ".join(involved) + " in every app environment"
        )
    return message


def _req_name(req: str) -> str:
    """The canonical project name of a requirement (`Foo_Bar[x]>=1` -> `foo-bar`)."""
    return canonicalize_name(_parse(req).name)


def _site_packages(path: Path, minor: str) -> Path:
    return path / "lib" / f"python{minor}" / "site-packages"


def _copy_skyform(install: SkyformInstall, site_packages: Path) -> None:
    """Put the deployer's own skyform into the environment, without its dependencies.

    A wheel install's package files are copied; an editable install's hook
    (`.pth` + finder) is copied, so the environment imports the checkout.
    The metadata keeps only the runtime requirements, so the environment's
    `pip check` is truthful.
    """
    if install.dist_dir is None or not site_packages.is_dir():
        raise EnvironmentBuildError(f"no site-packages in the new environment ({site_packages})")
    written: list[tuple[str, bytes]] = []
    record_name = ""
    for rel in install.files:
        if rel.startswith(("..", "/")) or "__pycache__" in rel:
            continue  # console scripts, bytecode
        if rel.endswith(".dist-info/RECORD"):
            record_name = rel
            continue
        source = install.dist_dir / rel
        if not source.is_file():
            continue
        data = source.read_bytes()
        if rel.endswith(".dist-info/METADATA"):
            data = _runtime_only_metadata(data.decode("utf-8", "replace")).encode()
        elif rel.endswith(".dist-info/INSTALLER"):
            data = b"skyform\n"
        target = site_packages / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append((rel, data))
    if record_name:
        rows = [f"{rel},sha256={_record_hash(data)},{len(data)}" for rel, data in written]
        rows.append(f"{record_name},,")
        (site_packages / record_name).write_text("\n".join(rows) + "\n")


def _runtime_only_metadata(text: str) -> str:
    runtime = {_req_name(r) for r in runtime_requirements()}
    kept = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            if ";" in req or _req_name(req) not in runtime:
                continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_imports(path: Path, key: str) -> None:
    """A last look before the marker: skyform and its runtime import in the environment."""
    probe = "import skyform, cloudpickle, pydantic, uvicorn, fastapi, psutil"
    env = tool_env()
    result = subprocess.run(
        [str(env_python(path)), "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(path),
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise EnvironmentBuildError(
            f"environment {key[:12]} was built but skyform does not import in it: "
            + (lines[-1] if lines else f"exit code {result.returncode}"),
            key=key,
        )


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _file_url_path(url: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).path)


# --------------------------------------------------------------------------- remote


def remote_env_dir(key: str) -> str:
    """The environment's directory on a remote machine, as a double-quoted shell word."""
    return f'"${{SKYFORM_CACHE_DIR:-${{XDG_CACHE_HOME:-$HOME/.cache}}/skyform}}/envs/{key}"'


def remote_env_python(key: str) -> str:
    """The environment's Python on a remote machine, as a double-quoted shell word for `run:`."""
    return remote_env_dir(key)[:-1] + '/bin/python"'


def remote_setup_script(
    requirements: Sequence[str],
    python_version: str,
    skyform_requirement: str,
    skyform_version: str | None = None,
    *,
    kind: str = "runner",
) -> str:
    """The same recipe as `ensure_environment`, as a bash snippet for a remote `setup:`.

    - `skyform_requirement`: what installs the deployer's skyform there — a
      wheel shipped with the task (`skyform @ file://$HOME/.../x.whl`) or
      `skyform==X.Y.Z`. It is placed inside double quotes, so `$HOME` expands.
    - `skyform_version`: the skyform identity in the key (the one `plan`
      shows; default: this install's `skyform_version()`).
    - `kind="runner"` installs skyform without its dependencies, beside the
      runtime's needs and the app's requirements, exactly as locally;
      `kind="gateway"` installs skyform with its dependencies (and extras).

    Runs in a subshell (safe to concatenate with other setup steps),
    idempotent, serialised by `flock` when present, marker written last; a
    failed build removes what it made and exits non-zero with the installer's
    own output. Run the result with `remote_env_python(key)`.
    """
    if kind not in {"runner", "gateway"}:
        raise ValueError(f"kind must be 'runner' or 'gateway', not {kind!r}")
    reqs = normalize_requirements(requirements)
    minor = python_minor(python_version)
    version_id = skyform_version if skyform_version is not None else _version_or_unknown()
    key = environment_key(reqs, minor, version_id, kind=kind)
    runtime = runtime_requirements() if kind == "runner" else []
    wanted = "\n".join(runtime + reqs)
    marker_json = json.dumps(
        {
            "key": key,
            "recipe": RECIPE_VERSION,
            "kind": kind,
            "python_version": minor,
            "requirements": reqs,
            "runtime_requirements": runtime,
            "skyform_version": version_id,
            "installer": "uv",
        }
    )
    skyform_word = '"' + re.sub(r'(["\\`])', r"\\\1", skyform_requirement) + '"'
    no_deps = "--no-deps " if kind == "runner" else ""
    return f"""\
# skyform environment {key} ({kind}): Python {minor}; {", ".join(reqs) or "no requirements"}
(
set -euo pipefail
export PATH="$HOME/.local/bin:$PATH"
ENV_DIR={remote_env_dir(key)}
mkdir -p "$(dirname "$ENV_DIR")"
if command -v flock >/dev/null 2>&1; then exec 9>"$ENV_DIR{LOCK_SUFFIX}"; flock 9; fi
if [ -f "$ENV_DIR/{MARKER}" ] && [ -x "$ENV_DIR/bin/python" ]; then
  echo "skyform: environment {key[:12]} is cached"
  exit 0
fi
echo "skyform: building environment {key[:12]} for Python {minor}"
rm -rf "$ENV_DIR"
trap 'rm -rf "$ENV_DIR"' ERR
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --user --quiet uv || curl -LsSf https://astral.sh/uv/install.sh | sh
fi
uv venv --color never --python {shlex.quote(minor)} "$ENV_DIR"
cat > "$ENV_DIR/{REQUIREMENTS_FILE}" <<'SKYFORM_REQUIREMENTS'
{wanted}
SKYFORM_REQUIREMENTS
unset PYTHONDONTWRITEBYTECODE UV_NO_COMPILE_BYTECODE
uv pip install --color never --compile-bytecode --python "$ENV_DIR/bin/python" -r "$ENV_DIR/{REQUIREMENTS_FILE}"
uv pip install --color never --compile-bytecode --python "$ENV_DIR/bin/python" {no_deps}{skyform_word}
"$ENV_DIR/bin/python" -c "import skyform, cloudpickle, pydantic, uvicorn, fastapi"
"$ENV_DIR/bin/python" - <<'SKYFORM_MARKER'
import json, os, sys, time, uuid
marker = json.loads({marker_json!r})
marker.update(created=time.time(), build_id=uuid.uuid4().hex)
path = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), {MARKER!r})
with open(path + ".tmp", "w") as handle:
    json.dump(marker, handle, indent=2)
    handle.flush()
    os.fsync(handle.fileno())
os.replace(path + ".tmp", path)
SKYFORM_MARKER
echo "skyform: environment {key[:12]} ready"
)
"""


def _version_or_unknown() -> str:
    try:
        return skyform_version()
    except EnvironmentBuildError:
        from skyform import __version__

        return __version__
