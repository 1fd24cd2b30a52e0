"""The stack file (`skyform.yaml`): parsed, expanded and validated into a `Stack`.

Why a custom YAML walk: pydantic reports *where in the data* a value is wrong,
but a user needs *where in the file*. The document is composed into YAML nodes
first, every key's line is recorded by its path, and each validation error is
reported as `file:line: key: message`, with a nearest-name suggestion for
unknown keys. `${VAR}` is expanded from the environment while walking, so a
missing variable is reported at the line that uses it (`$${` writes a literal
`${`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skyform.errors import SkyformError
from skyform.machines import machine_type_names
from skyform.names import APP_NAME_RE, app_name_problem
from skyform.options import OPTION_NAMES, check_runner_bounds, override_field
from skyform.suggest import did_you_mean

DEFAULT_FILE = "skyform.yaml"
DEFAULT_PORT = 8765
# A stack's name is also the owner in fal-style app ids (`/{stack}/{app}/...`): the app-name rule.
NAME_PATTERN = f"^{APP_NAME_RE.pattern}$"
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")

Path_ = tuple[str | int, ...]


class StackFileError(SkyformError):
    """The stack file is missing, not YAML, or breaks the schema; names file:line:key."""


_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _is_host(name: str) -> bool:
    """True for a DNS name (letters, digits, '-', dots) or an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        pass
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)
_SIZE_LIMITS = {
    "max_header_bytes",
    "max_body_bytes",
    "max_inflight_body_bytes",
    "max_queued_bytes_per_app",
}


class GatewayLimitsConfig(BaseModel):
    """What the gateway may be made to hold; each unset key keeps its default.

    The keys are those of the gateway's `GatewayLimits` (skyform.runtime.limits),
    which holds the defaults; `apply` passes the keys set here to the gateway.
    Sizes take a number of bytes or a unit ("64MiB", "1GB").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_header_bytes: ByteSize | None = Field(
        None, gt=0, description="Request line + headers of one request (431 past it)."
    )
    header_timeout: float | None = Field(
        None, gt=0, description="Seconds to send a whole request head (slow ones are closed)."
    )
    body_timeout: float | None = Field(
        None, gt=0, description="Seconds a request body may stall while it is read (408)."
    )
    max_body_bytes: ByteSize | None = Field(
        None, gt=0, description="One request's body (413 past it)."
    )
    max_inflight_body_bytes: ByteSize | None = Field(
        None,
        gt=0,
        description="Body bytes in memory across concurrent requests (503 + Retry-After past it).",
    )
    max_queued_bytes_per_app: ByteSize | None = Field(
        None,
        gt=0,
        description="Body bytes of one app's unfinished queue requests (429 + Retry-After).",
    )
    result_ttl: float | None = Field(
        None, gt=0, description="Seconds a result (and its idempotency key) is kept."
    )
    poison_after_deaths: int | None = Field(
        None, ge=1, description="Gateway deaths a request may be in flight at before it fails."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _check_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value!r}")
        if info.field_name in _SIZE_LIMITS and value is not None:
            try:
                return int(_BYTE_SIZE.validate_python(value))
            except ValidationError:
                raise ValueError(
                    f"must be a size: a number of bytes, or a number with a unit "
                    f"(64KiB, 60MB, 1GiB); got {value!r}"
                ) from None
        return value

    def overrides(self) -> dict[str, int | float]:
        """The limits set here, as plain numbers (what the gateway reads)."""
        return {
            k: (int(v) if isinstance(v, int) else float(v))
            for k, v in self.model_dump(exclude_none=True).items()
        }


TLS_MODES = ("auto", "off")
TLS_FILE_KEYS = ("cert", "key", "ca")


class TLSFiles(BaseModel):
    """A user-provided gateway certificate: PEM files, relative to the stack file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: str = Field(..., description="PEM certificate (chain) the gateway serves.")
    key: str = Field(..., description="Its unencrypted PEM private key.")
    ca: str | None = Field(None, description="The CA that issued it, for clients (optional).")


class GatewayConfig(BaseModel):
    """Where the stack's gateway listens, how it is reached, over TLS or not, within which limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="TCP port of the gateway.")
    host: str = Field(
        default="127.0.0.1", min_length=1, description="Address the gateway binds to."
    )
    limits: GatewayLimitsConfig = Field(
        default=GatewayLimitsConfig.model_validate({}),
        description="Resource bounds of the gateway.",
    )
    tls: Literal["auto", "off"] | TLSFiles | None = Field(
        default=None,
        description="auto (a per-stack CA; the default on skypilot) | off (the default on "
        "local) | {cert: PATH, key: PATH, ca: PATH}",
    )
    public_url: str | None = Field(
        default=None,
        description="The URL callers reach the gateway at; returned URLs start with it "
        "(default: scheme, host and port of the gateway).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="IPs/CIDRs of TLS terminators whose X-Forwarded-Proto/-Host are honoured.",
    )
    webhook_hosts: list[str] | None = Field(
        default=None,
        description="Hosts `?fal_webhook=` may call; unset: any host with public addresses only.",
    )

    @field_validator("tls", mode="before")
    @classmethod
    def _check_tls(cls, value: Any, info: ValidationInfo) -> Any:
        if value is False:  # YAML reads a bare `off` as false
            return "off"
        if value is True:
            raise ValueError('tls must be "auto", "off" or {cert: PATH, key: PATH}, not true')
        if isinstance(value, str) and value not in TLS_MODES:
            raise ValueError(
                f'unknown tls mode "{value}"{did_you_mean(value, TLS_MODES)}; '
                'use "auto", "off" or {cert: PATH, key: PATH}'
            )
        if isinstance(value, dict):
            return _check_tls_files(value, (info.context or {}).get("base_dir"))
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"public_url must be an http(s) URL with a host, got {value!r}")
        if parsed.query or parsed.fragment:
            raise ValueError(f"public_url must not carry a query or fragment, got {value!r}")
        return value.rstrip("/")

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("webhook_hosts")
    @classmethod
    def _check_webhook_hosts(cls, value: list[str] | None) -> list[str] | None:
        """Bare host names or IP addresses: a URL or a port here would never match a webhook."""
        if value is None:
            return None
        out = []
        for host in value:
            name = host.strip().lower()
            if not _is_host(name):
                raise ValueError(
                    f"{host!r} is not a host name or IP address (no scheme, port or path)"
                )
            out.append(name.strip("[]"))
        return sorted(set(out))


class _TLSKeyError(ValueError):
    """A problem with one key of `gateway.tls: {cert, key, ca}` (`key` None: the mapping)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(f"tls.{key}: {message}" if key else message)
        self.key = key
        self.message = message


def _check_tls_files(value: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """`{cert, key[, ca]}`: known keys, files that exist, and a key that fits the certificate.

    Runs twice: in `parse_stack`, where the failing key's own line is known,
    and as the field's validator for stacks built in code.
    """
    import ssl

    from skyform.tlscontext import TLSError, load_cert_chain

    for name in value:
        if name not in TLS_FILE_KEYS:
            raise _TLSKeyError(
                str(name),
                f'unknown key "{name}"{did_you_mean(str(name), TLS_FILE_KEYS)}; '
                f"valid keys: {', '.join(TLS_FILE_KEYS)}",
            )
    for name in ("cert", "key"):
        if not isinstance(value.get(name), str) or not value[name]:
            raise _TLSKeyError(
                None, f"{name} (a PEM file path) is required with tls: {{cert, key}}"
            )
    if base_dir is None:
        return value
    paths = {k: Path(base_dir) / str(v) for k, v in value.items() if v is not None}
    for name, path in paths.items():
        if not path.is_file():
            raise _TLSKeyError(name, f"no such file {value[name]} (relative to the stack file)")
    try:
        load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), paths["cert"], paths["key"])
    except TLSError as exc:
        raise _TLSKeyError("key", str(exc)) from None
    if "ca" in paths:
        try:
            ssl.create_default_context(cafile=str(paths["ca"]))
        except (OSError, ssl.SSLError):
            raise _TLSKeyError("ca", f"{value['ca']} is not a PEM certificate") from None
    return value


class AppEntry(BaseModel):
    """One app of the stack: which App class, and any App option overridden here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app: str = Field(..., description="FILE.py::Class, relative to the stack file.")
    machine_type: str | list[str] | None = Field(
        default=None, description="CPU, GPU-H100, GPU-B200 ... or an ordered fallback list."
    )
    # Overrides of App options: unset unless written, bounded by the option's own rule.
    requirements: list[str] | None = override_field("requirements")
    min_runners: int | None = override_field("min_runners")
    max_runners: int | None = override_field("max_runners")
    keep_alive: float | None = override_field("keep_alive")
    max_multiplexing: int | None = override_field("max_multiplexing")
    request_timeout: float | None = override_field("request_timeout")
    startup_timeout: float | None = override_field("startup_timeout")
    auth: Literal["private", "public"] | None = override_field("auth")
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables.")
    secrets: list[str] = Field(
        default_factory=list,
        description=(
            "Names of variables read from the deployer's environment at apply and handed to "
            "this app's runners only (on a pipe, sealed at rest); never stored in state, plans "
            "or logs. Nothing else of the deployer's environment reaches a runner."
        ),
    )

    @field_validator("app")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        from skyform.loader import parse_ref

        try:
            parse_ref(value)
        except SkyformError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("machine_type")
    @classmethod
    def _check_machine_type(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None:
            try:
                machine_type_names(value)
            except SkyformError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        _check_env_names(value)
        return value

    @field_validator("secrets")
    @classmethod
    def _check_secrets(cls, value: list[str]) -> list[str]:
        _check_env_names(value)
        if len(set(value)) != len(value):
            raise ValueError("a secret is listed twice")
        return value

    @model_validator(mode="after")
    def _check_overlap(self) -> AppEntry:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{both[0]} is both in env and in secrets; keep secrets out of env")
        check_runner_bounds(self.min_runners, self.max_runners)
        return self

    def overrides(self) -> dict[str, Any]:
        """The App options this entry sets (they win over the class's)."""
        return {
            name: getattr(self, name)
            for name in OPTION_NAMES
            if name in self.model_fields_set and getattr(self, name) is not None
        }


# Set by skyform itself on every runner, or the stack's own keys (which never reach one).
RESERVED_ENV = ("SKYFORM_", "PYTHONUNBUFFERED", "VIRTUAL_ENV")


def _check_env_names(names: Iterable[str]) -> None:
    for name in names:
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if name.startswith(RESERVED_ENV):
            raise ValueError(
                f"{name} is reserved: skyform sets it on runners, and the stack's keys "
                "(SKYFORM_*) never reach app code"
            )


class StackModel(BaseModel):
    """The whole `skyform.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="skyform stack file")

    stack: str = Field(..., pattern=NAME_PATTERN, description="The stack's name.")
    provider: str | dict[str, dict[str, Any] | None] = Field(
        default="local",
        description='"local", or {skypilot: {clouds: [...], use_spot, autostop_minutes}}',
    )
    state: str | dict[str, Any] = Field(
        default="local", description='"local", or {postgres: {url: ...}}'
    )
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    apps: dict[str, AppEntry] = Field(default_factory=dict)

    @field_validator("provider", mode="before")
    @classmethod
    def _check_provider(cls, value: Any) -> Any:
        from skyform.providers import provider_name

        if isinstance(value, dict) and len(value) != 1:
            raise ValueError("provider must name exactly one provider")
        if not isinstance(value, str | dict):
            raise ValueError('provider must be "local" or {skypilot: {...}}')
        try:
            provider_name(value)
        except SkyformError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("state", mode="before")
    @classmethod
    def _check_state(cls, value: Any) -> Any:
        from skyform.state.config import BACKENDS, parse_config

        if not isinstance(value, str | dict):
            return value  # the type check reports it
        name = value if isinstance(value, str) else str(next(iter(value), ""))
        if name not in BACKENDS:
            raise ValueError(f'unknown state backend "{name}"{did_you_mean(name, BACKENDS)}')
        try:  # the backend's own rules: options, a postgres url
            parse_config(value)
        except SkyformError as exc:
            raise ValueError(str(exc).removeprefix("state: ")) from None
        return value

    @field_validator("apps")
    @classmethod
    def _check_app_names(cls, value: dict[str, AppEntry]) -> dict[str, AppEntry]:
        for name in value:
            problem = app_name_problem(name)
            if problem:
                raise ValueError(problem)
        return value


@dataclass
class Stack:
    """A validated stack file and where it came from."""

    model: StackModel
    path: Path  # the stack file, absolute
    lines: dict[Path_, int] = field(default_factory=dict)  # key path -> 1-based line

    @property
    def name(self) -> str:
        return self.model.stack

    @property
    def base_dir(self) -> Path:
        """Where app references are resolved, and where `.skyform/` lives."""
        return self.path.parent

    @property
    def apps(self) -> dict[str, AppEntry]:
        return self.model.apps

    @property
    def tls_mode(self) -> str:
        """The TLS mode, "auto", "off" or "files": the stack file's, else the provider's default."""
        from skyform.providers import provider_class

        tls = self.model.gateway.tls
        if tls is None:
            return "off" if provider_class(self.model.provider).runs_on_this_host else "auto"
        return tls if isinstance(tls, str) else "files"

    def tls_files(self) -> TLSFiles | None:
        """The user-provided certificate files, resolved against the stack file's folder."""
        tls = self.model.gateway.tls
        if not isinstance(tls, TLSFiles):
            return None
        return TLSFiles(
            cert=str(self.base_dir / tls.cert),
            key=str(self.base_dir / tls.key),
            ca=str(self.base_dir / tls.ca) if tls.ca else None,
        )

    def where(self, *key: str | int) -> str:
        """`file:line` of the deepest known part of `key`, for error messages."""
        return f"{_display(self.path)}:{_line_of(self.lines, tuple(key))}"


def load_stack(path: Path | str) -> Stack:
    """Read, expand and validate a stack file. Errors name the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StackFileError(
            f"{_display(path)}: no such stack file (create one, or pass -f FILE)"
        ) from None
    except OSError as exc:
        raise StackFileError(f"{_display(path)}: cannot read: {exc.strerror or exc}") from None
    return parse_stack(text, path.resolve(), display=_display(path))


def parse_stack(
    text: str, path: Path, *, display: str | None = None, environ: dict[str, str] | None = None
) -> Stack:
    """Validate stack-file `text` as if read from `path`."""
    shown = display or _display(path)
    env = os.environ if environ is None else environ
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackFileError(f"{shown}{line}: not valid YAML: {problem}") from None
    if node is None:
        raise StackFileError(f"{shown}: the stack file is empty (it needs at least `stack: NAME`)")
    lines: dict[Path_, int] = {}
    data = _to_python(node, (), lines, shown, env)
    if not isinstance(data, dict):
        raise StackFileError(
            f"{shown}:{node.start_mark.line + 1}: the stack file must be a mapping"
        )
    _precheck_tls_files(data, path.parent, shown, lines)
    try:
        model = StackModel.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise StackFileError(_describe(exc, shown, lines)) from None
    except SkyformError as exc:  # raised inside a validator
        raise StackFileError(f"{shown}: {exc}") from None
    _check_plaintext_off_host(model, shown, lines)
    return Stack(model=model, path=path, lines=lines)


def _precheck_tls_files(
    data: dict[str, Any], base_dir: Path, shown: str, lines: dict[Path_, int]
) -> None:
    """`gateway.tls: {cert, key, ca}` checked where each key's line is known."""
    gateway = data.get("gateway")
    tls = gateway.get("tls") if isinstance(gateway, dict) else None
    if not isinstance(tls, dict):
        return
    try:
        _check_tls_files(tls, base_dir)
    except _TLSKeyError as exc:
        where: Path_ = ("gateway", "tls", exc.key) if exc.key else ("gateway", "tls")
        raise StackFileError(
            f"{shown}:{_line_of(lines, where)}: {_dotted(where)}: {exc.message}"
        ) from None


def _check_plaintext_off_host(model: StackModel, shown: str, lines: dict[Path_, int]) -> None:
    """`tls: off` is refused where the gateway and runners are reached over a network."""
    from skyform.providers import provider_class, provider_name

    if not provider_class(model.provider).runs_on_this_host and model.gateway.tls == "off":
        raise StackFileError(
            f"{shown}:{_line_of(lines, ('gateway', 'tls'))}: gateway.tls: off is refused on the "
            f"{provider_name(model.provider)} provider: API keys and tokens would cross the "
            "network in clear; use auto (the default there) or {cert: PATH, key: PATH}"
        )


def stack_json_schema() -> dict[str, Any]:
    """The JSON Schema of `skyform.yaml`, for editors."""
    schema = StackModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _to_python(node: yaml.Node, where: Path_, lines: dict[Path_, int], shown: str, env: Any) -> Any:
    lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StackFileError(
                    f"{shown}:{key_node.start_mark.line + 1}: merge keys (<<) are not supported"
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise StackFileError(
                    f"{shown}:{key_node.start_mark.line + 1}: keys must be plain names"
                )
            key = key_node.value
            child = (*where, str(key))
            if str(key) in out:
                raise StackFileError(
                    f"{shown}:{key_node.start_mark.line + 1}: {_dotted(child)}: duplicate key"
                )
            lines[child] = key_node.start_mark.line + 1
            out[str(key)] = _to_python(value_node, child, lines, shown, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(item, (*where, i), lines, shown, env) for i, item in enumerate(node.value)
        ]
    value = _scalar(node)
    if isinstance(value, str) and "$" in value:
        value = _expand(value, where, node.start_mark.line + 1, shown, env)
    return value


_SCALAR_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    return _SCALAR_LOADER.construct_object(node, deep=True)


def _expand(value: str, where: Path_, line: int, shown: str, env: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise StackFileError(
                f"{shown}:{line}: {_dotted(where)}: ${{{name}}} is not a variable name"
            )
        if name not in env:
            raise StackFileError(
                f"{shown}:{line}: {_dotted(where)}: environment variable {name} is not set"
            )
        return env[name]

    return _VAR.sub(replace, value)


def _describe(exc: ValidationError, shown: str, lines: dict[Path_, int]) -> str:
    messages = []
    for err in exc.errors():
        loc = _data_loc(err["loc"])
        line = _line_of(lines, loc)
        key = _dotted(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            name = str(loc[-1])
            hint = did_you_mean(name, known)
            message = f'unknown key "{name}"{hint}; valid keys: {", ".join(known)}'
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "literal_error" and "input" in err:
                message += f" (got {err['input']!r})"
        messages.append(f"{shown}:{line}: {key}: {message}")
    # One line per problem; the first is usually the one to fix.
    seen: list[str] = []
    for m in messages:
        if m not in seen:
            seen.append(m)
    return (
        seen[0]
        if len(seen) == 1
        else seen[0] + f" (and {len(seen) - 1} more: " + "; ".join(seen[1:]) + ")"
    )


def _data_loc(loc: tuple[Any, ...]) -> Path_:
    """Drop pydantic's union-branch labels ('str', 'dict[...]', 'literal[...]') from a loc."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (
            part.startswith(("literal[", "dict[", "list[", "function-")) or part in {"str", "int"}
        ):
            continue
        out.append(part)
    return tuple(out)


def _known_keys(parent: Path_) -> list[str]:
    if parent == ():
        return list(StackModel.model_fields)
    if parent == ("gateway",):
        return list(GatewayConfig.model_fields)
    if parent == ("gateway", "limits"):
        return list(GatewayLimitsConfig.model_fields)
    if parent == ("gateway", "tls"):
        return list(TLS_FILE_KEYS)
    if len(parent) == 2 and parent[0] == "apps":
        return list(AppEntry.model_fields)
    return []


def _line_of(lines: dict[Path_, int], key: Path_) -> int:
    for end in range(len(key), -1, -1):
        if key[:end] in lines:
            return lines[key[:end]]
    return 1


def _dotted(key: Path_) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("../..") else str(path)
