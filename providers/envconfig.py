"""The user's package index configuration, as pip sees it, turned into uv arguments.

Why: environments are built with uv when it is available, but uv does not read
pip's configuration. On many machines that configuration is the only way a
package resolves at all (a private index, a `find-links` folder of local
wheels, a constraints file that pins `torch` to the build on disk). So we read
pip's settings the way pip does — its config files in pip's order, then the
`[install]` section over `[global]`, then `PIP_*` variables — and hand uv the
same indexes, links and constraints.

`UV_*` variables are uv's own, explicit settings: where one is set, uv reads it
itself and the pip setting it corresponds to is not passed (a command-line
flag would override it).
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# pip option -> the UV_* variables that, when set, take over that setting.
_UV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "index-url": ("UV_INDEX_URL", "UV_DEFAULT_INDEX"),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", "UV_INDEX"),
    "find-links": ("UV_FIND_LINKS",),
    "no-index": ("UV_NO_INDEX",),
    "constraint": ("UV_CONSTRAINT",),
    "trusted-host": ("UV_INSECURE_HOST",),
    "pre": ("UV_PRERELEASE",),
    "only-binary": ("UV_ONLY_BINARY",),
    "no-binary": ("UV_NO_BINARY",),
}
_MULTI = {"extra-index-url", "find-links", "constraint", "trusted-host", "only-binary", "no-binary"}
_ALIASES = {"default-timeout": "timeout", "constraints": "constraint"}
_TRUE = {"1", "yes", "true", "on", "y"}


@dataclass
class InstallerConfig:
    """Extra arguments and environment for one `uv pip install`."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def pip_config_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """pip's configuration files in the order pip reads them (later ones win).

    Mirrors pip: global files (XDG config dirs, then /etc), the user's files,
    the running interpreter's `sys.prefix/pip.conf`, then `$PIP_CONFIG_FILE`.
    `PIP_CONFIG_FILE=/dev/null` turns every file off, as in pip.
    """
    environ = os.environ if environ is None else environ
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = Path(environ.get("HOME") or Path.home())
    files: list[Path] = []
    if sys.platform == "darwin":
        files.append(Path("/Library/Application Support/pip/pip.conf"))
    else:
        xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
        files += [Path(d) / "pip" / "pip.conf" for d in xdg_dirs.split(os.pathsep) if d]
        files.append(Path("/etc/pip.conf"))
    if not (env_file and Path(env_file).exists()):  # pip skips user files then
        files.append(home / ".pip" / "pip.conf")
        if sys.platform == "darwin":
            files.append(home / "Library" / "Application Support" / "pip" / "pip.conf")
        files.append(Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf")
    files.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def pip_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """pip's effective install settings: option name (long form) -> raw value."""
    environ = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    for path in pip_config_files(environ):
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue  # pip would refuse it too; the installer reports it
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    settings[_ALIASES.get(key, key)] = value
    for name, value in environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            key = name[4:].lower().replace("_", "-")
            settings[_ALIASES.get(key, key)] = value
    return settings


def uv_install_config(environ: Mapping[str, str] | None = None) -> InstallerConfig:
    """Arguments for `uv pip install` that give uv the same sources pip would use."""
    environ = os.environ if environ is None else environ
    settings = pip_settings(environ)
    config = InstallerConfig()

    def wanted(option: str) -> str | None:
        if any(environ.get(var) for var in _UV_OVERRIDES.get(option, ())):
            return None
        value = settings.get(option)
        return value.strip() if value is not None and value.strip() else None

    def values(option: str) -> list[str]:
        value = wanted(option)
        return value.split() if value else []

    if (index := wanted("index-url")) is not None:
        config.args += ["--index-url", index]
    extra = values("extra-index-url")
    for url in extra:
        config.args += ["--extra-index-url", url]
    links = values("find-links")
    for link in links:
        config.args += ["--find-links", _local_path_or_url(link)]
    if (no_index := wanted("no-index")) is not None and no_index.lower() in _TRUE:
        config.args.append("--no-index")
    for constraint in values("constraint"):
        config.args += ["--constraint", _local_path_or_url(constraint)]
    for host in values("trusted-host"):
        config.args += ["--allow-insecure-host", host]
    if (pre := wanted("pre")) is not None and pre.lower() in _TRUE:
        config.args += ["--prerelease", "allow"]
    for option in ("only-binary", "no-binary"):
        for value in values(option):
            config.args += [f"--{option}", value]
    # pip picks the best version across every index and link; uv by default
    # stops at the first index that has the package. Keep pip's meaning when
    # the sources came from pip's configuration.
    if (extra or links) and not environ.get("UV_INDEX_STRATEGY"):
        config.args += ["--index-strategy", "unsafe-best-match"]

    if settings.get("cert") and not environ.get("SSL_CERT_FILE"):
        config.env["SSL_CERT_FILE"] = settings["cert"]
    if settings.get("timeout") and not environ.get("UV_HTTP_TIMEOUT"):
        config.env["UV_HTTP_TIMEOUT"] = settings["timeout"].split(".")[0]
    if settings.get("proxy"):
        for var in ("HTTPS_PROXY", "HTTP_PROXY"):
            if not environ.get(var) and not environ.get(var.lower()):
                config.env[var] = settings["proxy"]
    return config


def _local_path_or_url(value: str) -> str:
    """Relative paths in pip settings mean "from the current directory": make them absolute."""
    if "://" in value or os.path.isabs(value):
        return value
    return os.path.abspath(value)
