"""Bundles: an App class pickled with cloudpickle, described, fingerprinted and signed.

File layout (one file, readable without unpickling anything):

    SKYFORM-BUNDLE/1\\n
    {"meta": {...}, "signature": "<hex hmac-sha256>"}\\n
    <cloudpickle payload>

The signature covers the canonical JSON of `meta`, which holds the payload's
SHA-256, so neither can change unnoticed. A loader checks format, signature,
payload hash and Python minor version before it unpickles a single byte.

Two hashes identify an app:
- `revision`: code (every project module it imports), requirements, machine
  types and Python minor. A change here needs new runners.
- `fingerprint`: the revision plus every option. Any change of the app shows here.
Both are built from file contents and paths relative to the app's folder, so
they are identical across processes, hash seeds and checkout directories.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from skyform.app import App, AppOptions, app_endpoints, app_options
from skyform.errors import BundleError
from skyform.files import write_atomic
from skyform.loader import LoadedApp, loaded_app
from skyform.signing import canonical_json, sign

MAGIC = b"SKYFORM-BUNDLE/1\n"
FORMAT_VERSION = 1
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Bundle:
    """A signed bundle: its metadata and its file bytes."""

    meta: dict[str, Any]
    data: bytes

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def revision(self) -> str:
        return self.meta["revision"]

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, path: Path | str) -> Path:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, self.data)
        except OSError as exc:
            raise BundleError(f"cannot write bundle {path}: {exc.strerror or exc}") from None
        return path


def build_bundle(
    ref: str,
    base_dir: Path | str,
    key: str,
    overrides: dict[str, Any] | None = None,
) -> Bundle:
    """Import the App named by `ref`, pickle it and sign the result with `key`.

    `overrides` are App options from the stack file; they win over the class's.
    """
    with loaded_app(ref, base_dir) as loaded:
        return bundle_loaded_app(loaded, key, overrides)


def bundle_loaded_app(
    loaded: LoadedApp, key: str, overrides: dict[str, Any] | None = None
) -> Bundle:
    """Bundle an App that `skyform.loader.loaded_app` has imported."""
    from skyform import __version__
    from skyform.openapi import openapi_schema

    cls = loaded.cls
    identity = app_identity(loaded, overrides)
    options, revision, fingerprint = identity.options, identity.revision, identity.fingerprint
    endpoints = app_endpoints(cls)
    modules = identity.modules
    options_json = options.model_dump(mode="json")
    payload = _pickle(cls, [loaded.module, *_modules(modules)])
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "app": cls.__qualname__,
        "module": cls.__module__,
        "python": PYTHON_VERSION,
        "skyform_version": __version__,
        "requirements": list(options.requirements),
        "options": options_json,
        "endpoints": [
            {"name": e.name, "path": e.path, "method": e.spec.method, "kind": e.kind}
            for e in endpoints
        ],
        "openapi": openapi_schema(cls),
        "by_value": modules,
        "by_reference": _by_reference(set(modules)),
        "revision": revision,
        "fingerprint": fingerprint,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_size": len(payload),
    }
    return Bundle(meta, _assemble(meta, payload, key))


@dataclass(frozen=True)
class AppIdentity:
    """What identifies an app without pickling it: enough for `plan` to see "no change"."""

    options: AppOptions
    revision: str
    fingerprint: str
    modules: dict[str, str]  # project module name -> path relative to the app's folder


def app_identity(loaded: LoadedApp, overrides: dict[str, Any] | None = None) -> AppIdentity:
    """The revision and fingerprint `bundle_loaded_app` would give, at a fraction of the cost.

    A plan compares these against what is live; only apps that changed need a
    full bundle (pickle + OpenAPI schema), which is what keeps a no-change plan
    of a large stack fast.
    """
    cls = loaded.cls
    options = app_options(cls, overrides)
    modules = {name: loaded.relative(path) for name, path in loaded.project_modules.items()}
    sources = {rel: _source_hash(loaded.project_modules[name]) for name, rel in modules.items()}
    revision = _hash(
        {
            "python": PYTHON_VERSION,
            "app": f"{cls.__module__}:{cls.__qualname__}",
            "sources": sources,
            "requirements": options.requirements,
            "machine_types": options.machine_types,
        }
    )
    fingerprint = _hash({"revision": revision, "options": options.model_dump(mode="json")})
    return AppIdentity(options, revision, fingerprint, modules)


def read_bundle_meta(data: bytes, key: str, *, check_python: bool = True) -> dict[str, Any]:
    """Verify a bundle's bytes and return its metadata. Nothing is unpickled.

    `check_python=False` skips the Python-version check, for callers that only
    route a bundle (the gateway) to runners built for the bundle's own Python.
    """
    meta, _payload = _verify(data, key, check_python=check_python)
    return meta


def open_bundle(data: bytes, key: str) -> tuple[dict[str, Any], type[App]]:
    """Verify a bundle, then unpickle its App class. Refuses anything not signed with `key`."""
    meta, payload = _verify(data, key)
    try:
        cls = cloudpickle.loads(payload)
    except ModuleNotFoundError as exc:
        raise BundleError(
            f"bundle needs module {exc.name!r}, which is not installed here "
            "(add its package to the app's requirements)"
        ) from None
    except Exception as exc:
        raise BundleError(f"bundle could not be unpickled: {type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise BundleError("bundle does not contain an App class")
    return meta, cls


def read_bundle_file(path: Path | str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror or exc}") from None


def unverified_meta(data: bytes) -> dict[str, Any]:
    """A bundle's metadata without checking its signature.

    Only for bundles this process verified before and stored itself (the
    gateway reloading its own copies); anything else goes through
    `read_bundle_meta`.
    """
    meta, _signature, _payload = _split(data)
    return meta


def _split(data: bytes) -> tuple[dict[str, Any], Any, bytes]:
    """(meta, signature, payload) of a bundle's bytes; nothing is checked but the layout."""
    if not data.startswith(MAGIC):
        raise BundleError("not a skyform bundle (bad magic header)")
    header_end = data.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise BundleError("bundle is truncated (no header line)")
    try:
        header = json.loads(data[len(MAGIC) : header_end])
        meta = header["meta"]
        signature = header.get("signature")
    except (ValueError, KeyError, TypeError):
        raise BundleError("bundle header is corrupt") from None
    if not isinstance(meta, dict):
        raise BundleError("bundle header is corrupt")
    return meta, signature, data[header_end + 1 :]


def _verify(data: bytes, key: str, *, check_python: bool = True) -> tuple[dict[str, Any], bytes]:
    meta, signature, payload = _split(data)
    if not signature:
        raise BundleError("bundle is unsigned; refusing to load it")
    if not key:
        raise BundleError("no bundle key configured (set SKYFORM_BUNDLE_KEY); refusing to load")
    expected = sign(meta, key)
    if not hmac.compare_digest(str(signature), expected):
        raise BundleError(
            "bundle signature does not match (tampered, or signed with another stack's key)"
        )
    if hashlib.sha256(payload).hexdigest() != meta.get("payload_sha256"):
        raise BundleError("bundle payload does not match its signed hash (tampered or truncated)")
    if meta.get("format") != FORMAT_VERSION:
        raise BundleError(f"bundle format {meta.get('format')!r} is not supported")
    if check_python and meta.get("python") != PYTHON_VERSION:
        raise BundleError(
            f"bundle was built with Python {meta.get('python')}, this is Python {PYTHON_VERSION}; "
            "the runner must run the same Python minor version"
        )
    return meta, payload


def _assemble(meta: dict[str, Any], payload: bytes, key: str) -> bytes:
    header = json.dumps({"meta": meta, "signature": sign(meta, key)}, sort_keys=True)
    return MAGIC + header.encode() + b"\n" + payload


def _hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _modules(names: dict[str, str]) -> list[types.ModuleType]:
    return [sys.modules[n] for n in names if n in sys.modules]


def _pickle(cls: type[App], by_value: list[types.ModuleType]) -> bytes:
    registered = []
    for module in by_value:
        if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
    try:
        buffer = io.BytesIO()
        cloudpickle.CloudPickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(cls)
        return buffer.getvalue()
    except Exception as exc:
        from skyform.picklecheck import explain_unpicklable

        raise BundleError(explain_unpicklable(cls, exc)) from None
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


def _by_reference(by_value: set[str]) -> list[str]:
    """Top-level packages the project's modules use that travel by reference (must be installed)."""
    found: set[str] = set()
    for name in by_value:
        module = sys.modules.get(name)
        if module is None:
            continue
        for value in vars(module).values():
            origin = _origin_module(value)
            if not origin:
                continue
            top = origin.split(".")[0]
            if origin not in by_value and top not in by_value and top != "builtins":
                found.add(top)
    return sorted(found)


def _origin_module(value: Any) -> str | None:
    if isinstance(value, types.ModuleType):
        return value.__name__
    module = getattr(value, "__module__", None)
    if isinstance(module, str) and (isinstance(value, type) or callable(value)):
        return module
    return None
