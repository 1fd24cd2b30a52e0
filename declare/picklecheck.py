"""Explain why an App cannot be pickled: which object, and how the app reaches it.

cloudpickle's own error ("cannot pickle '_thread.lock' object") names a type,
not the culprit. We walk what the class references the way cloudpickle does
(class attributes, the globals and closures its functions use, modules pickled
by value) and report the first path that ends at an unpicklable object.
"""

from __future__ import annotations

import types
from typing import Any

import cloudpickle

_MAX_DEPTH = 8


def explain_unpicklable(cls: type, error: Exception) -> str:
    found = _search(cls, [cls.__qualname__], 0, set())
    if found is None:
        return f"{cls.__qualname__} cannot be pickled: {type(error).__name__}: {error}"
    path, obj = found
    what = type(obj)
    name = path[-1].removeprefix("global ").removeprefix("closure ")
    return (
        f"{cls.__qualname__} cannot be pickled: {name} is a "
        f"{what.__module__}.{what.__qualname__}, which cannot be pickled "
        f"(reached via {' -> '.join(path)}). Create it in setup() instead of at module level"
    )


def _picklable(obj: Any) -> bool:
    try:
        cloudpickle.dumps(obj)
    except Exception:
        return False
    return True


def _search(obj: Any, path: list[str], depth: int, seen: set[int]) -> tuple[list[str], Any] | None:
    """The deepest path from `obj` to an object that alone fails to pickle."""
    if id(obj) in seen or depth > _MAX_DEPTH:
        return None
    seen.add(id(obj))
    for name, child in _children(obj):
        if _picklable(child):
            continue
        deeper = _search(child, [*path, name], depth + 1, seen)
        return deeper or ([*path, name], child)
    return None


def _children(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, type):
        return [
            (name, value)
            for name, value in vars(obj).items()
            if not (name.startswith("__") and name.endswith("__"))
        ]
    if isinstance(obj, (staticmethod, classmethod)):
        return [("__func__", obj.__func__)]
    if isinstance(obj, property):
        return [(n, f) for n, f in (("fget", obj.fget), ("fset", obj.fset)) if f is not None]
    if isinstance(obj, types.FunctionType):
        out: list[tuple[str, Any]] = []
        for name in sorted(_global_names(obj.__code__)):
            if name in obj.__globals__:
                out.append((f"global {name}", obj.__globals__[name]))
        if obj.__closure__:
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__, strict=False):
                try:
                    out.append((f"closure {name}", cell.cell_contents))
                except ValueError:
                    continue
        for i, default in enumerate(obj.__defaults__ or ()):
            out.append((f"default #{i}", default))
        return out
    if isinstance(obj, types.ModuleType):
        return [(f"{obj.__name__}.{n}", v) for n, v in vars(obj).items() if not n.startswith("__")]
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return [(f".{n}", v) for n, v in vars(obj).items()]
    return []


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
