"""Find and import an App from `path/to/file.py::Class`.

The user's module runs in this process (module top level and class body run
locally at plan time). Imports are isolated per load: the app's folder goes on
`sys.path` for the duration, and the project's own modules are dropped from
`sys.modules` afterwards, so two apps with a `helpers.py` each never see each
other's. The modules that belong to the project are reported, because the
bundle pickles them by value.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from skyform.app import App, app_endpoints
from skyform.errors import AppDefinitionError, AppLoadError, SkyformError
from skyform.suggest import did_you_mean

_SKYFORM_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LoadedApp:
    """An imported App class and the project modules it came with."""

    cls: type[App]
    ref: str
    file: Path
    app_dir: Path
    module: ModuleType
    # module name -> file, for every project module imported while loading
    project_modules: dict[str, Path] = field(default_factory=dict)

    def relative(self, path: Path) -> str:
        """`path` relative to the app's folder, in POSIX form (stable across checkouts)."""
        return Path(os.path.relpath(path, self.app_dir)).as_posix()


def parse_ref(ref: str) -> tuple[str, str]:
    """`"apps/hello.py::Hello"` -> `("apps/hello.py", "Hello")`."""
    file_part, sep, class_part = ref.rpartition("::")
    if not sep or not file_part or not class_part:
        raise AppLoadError(f'"{ref}" is not an app reference; expected FILE.py::Class')
    if not file_part.endswith(".py"):
        raise AppLoadError(f'"{ref}": the app file must be a .py file')
    if not class_part.isidentifier():
        raise AppLoadError(f'"{ref}": "{class_part}" is not a Python class name')
    return file_part, class_part


@contextlib.contextmanager
def loaded_app(ref: str, base_dir: Path | str = ".") -> Iterator[LoadedApp]:
    """Import the App named by `ref` (relative to `base_dir`) for the duration of the block."""
    file_part, class_name = parse_ref(ref)
    base = Path(base_dir).resolve()
    path = (base / file_part).resolve()
    if not path.is_file():
        raise AppLoadError(f"{file_part}: no such file (looked in {base})")
    app_dir = path.parent
    roots = _unique([app_dir, base])
    module_name = path.stem
    modules_before = dict(sys.modules)
    path_before = list(sys.path)
    displaced = sys.modules.pop(module_name, None)
    sys.path[:0] = [str(r) for r in roots]
    if not _batch_depth:
        importlib.invalidate_caches()
    try:
        module = _exec_user_module(module_name, path, roots)
        cls = _find_class(module, class_name, file_part)
        project = _project_modules(modules_before, roots)
        project[module_name] = path
        yield LoadedApp(cls, ref, path, app_dir, module, dict(sorted(project.items())))
    finally:
        sys.path[:] = path_before
        for name in [*(sys.modules.keys() - modules_before.keys()), module_name]:
            if name not in sys.modules:
                continue
            if name == module_name or _is_project_module(sys.modules[name], roots):
                del sys.modules[name]
        if displaced is not None:
            sys.modules[module_name] = displaced


_batch_depth = 0


@contextlib.contextmanager
def batch_loading() -> Iterator[None]:
    """Load many apps with one refresh of the import caches instead of one per app.

    `loaded_app` normally refreshes them so a file written a moment ago is
    importable; within one plan no file changes, and refreshing per app would
    re-list every app folder once per app (quadratic for large stacks).
    """
    global _batch_depth
    importlib.invalidate_caches()
    _batch_depth += 1
    try:
        yield
    finally:
        _batch_depth -= 1


def load_app_class(ref: str, base_dir: Path | str = ".") -> type[App]:
    """Import and return the App class named by `ref` (keeps no project modules loaded)."""
    with loaded_app(ref, base_dir) as loaded:
        return loaded.cls


def _exec_user_module(name: str, path: Path, roots: list[Path]) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"{path.name}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except AppDefinitionError as exc:
        raise AppDefinitionError(f"{_where(exc, roots, path)}: {exc}") from None
    except SkyformError:
        raise
    except ModuleNotFoundError as exc:
        raise AppLoadError(_missing_module_message(exc, roots, path)) from None
    except (Exception, SystemExit) as exc:
        raise AppLoadError(
            f"{_where(exc, roots, path)}: {type(exc).__name__}: {exc} "
            f"(while importing {_display(path)})"
        ) from None
    return module


def _missing_module_message(exc: ModuleNotFoundError, roots: list[Path], path: Path) -> str:
    """Why an import the runner would satisfy fails here, and the two ways out.

    An app's `requirements` are installed on its runners, not where `plan`
    runs; yet plan imports the app's module to find the class, so a package
    imported at module top level must be importable locally too.
    """
    name = exc.name or str(exc)
    top = name.split(".")[0]
    return (
        f"{_where(exc, roots, path)}: ModuleNotFoundError: No module named {name!r}: the app module's top level "
        f"runs locally at plan time, where {top!r} is not installed. Import {top} inside "
        f"setup() or the endpoint that uses it (the app's requirements are installed on its "
        f"runners), or install it locally (pip install {top})"
    )


def _where(exc: BaseException, roots: list[Path], path: Path) -> str:
    """`file:line` of the innermost frame in the user's own code."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_display(Path(exc.filename))}:{exc.lineno}"
    user_frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if any(_is_under(Path(f.filename), r) for r in roots) and not _is_ours(Path(f.filename))
    ]
    if not user_frames:
        return _display(path)
    frame = user_frames[-1]
    return f"{_display(Path(frame.filename))}:{frame.lineno}"


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _find_class(module: ModuleType, class_name: str, file_part: str) -> type[App]:
    obj = getattr(module, class_name, None)
    if obj is None:
        apps = [
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, App) and v is not App
        ]
        hint = did_you_mean(class_name, apps) or (
            f" (App classes there: {', '.join(apps)})" if apps else " (it defines no App class)"
        )
        raise AppLoadError(f"{file_part}: no class named {class_name}{hint}")
    if not isinstance(obj, type) or not issubclass(obj, App) or obj is App:
        raise AppLoadError(
            f"{file_part}::{class_name} is not an App subclass; "
            "declare it as `class {0}(skyform.App)`".format(class_name)
        )
    app_endpoints(obj, require=True)
    return obj


def _project_modules(before: dict[str, ModuleType], roots: list[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in sys.modules.keys() - before.keys():
        module = sys.modules.get(name)
        if module is None:
            continue
        if _is_project_module(module, roots):
            found[name] = Path(module.__file__).resolve()  # type: ignore[arg-type]
    return found


def _is_project_module(module: ModuleType | None, roots: list[Path]) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = _resolved(Path(file))
    if _is_ours(path) or any(p in {"site-packages", "dist-packages"} for p in path.parts):
        return False
    return any(_is_under(path, r) for r in roots)


_OUR_DIRS = tuple(_SKYFORM_ROOT / d for d in ("declare", "state", "providers", "runtime"))


def _is_ours(path: Path) -> bool:
    return any(_is_under(path, d) for d in _OUR_DIRS)


@functools.lru_cache(maxsize=16384)
def _resolved(path: Path) -> Path:
    """`path.resolve()`, memoised: a plan of many apps checks the same module files often."""
    return path.resolve()


def _is_under(path: Path, root: Path) -> bool:
    try:
        _resolved(path).relative_to(root)
    except ValueError:
        return False
    return True


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out
