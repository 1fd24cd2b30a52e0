"""The package's rooms and the arrows between them (DESIGN §1, docs/architecture.md), read from the code.

Why a test: an import that points the wrong way (the state layer importing the
stack engine, a runner pulling in a provider) works at first and costs later —
a runner that imports the CLI, a cycle that breaks when someone reorders two
lines. So the imports of the four code folders are parsed (ast, nothing is
imported) and checked against the allowed arrows, for cycles, and for
`_private` names taken from another module.

What counts: every `import` and `from ... import` anywhere in a module, at
module level or inside a function (a lazy import is still an arrow). Imports
under `if TYPE_CHECKING:` never run; they count for the room rules (a
type-only import of the engine from the state layer is still the wrong way)
but not for cycles.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# folder -> import package (pyproject.toml's package-dir mapping)
FOLDERS = {
    "declare": "skyform",
    "state": "skyform.state",
    "providers": "skyform.providers",
    "runtime": "skyform.runtime",
}

# The rooms, by import-package prefix (the longest prefix wins).
ROOMS = {
    "skyform": "skyform",  # the SDK, bundles and the helpers every room shares
    "skyform.engine": "engine",
    "skyform.cli": "cli",
    "skyform.state": "state",
    "skyform.providers": "providers",
    "skyform.runtime": "runtime",
}
# Which rooms each room may import. Everything points down to the top of
# `skyform`, which points nowhere else; providers never import the runtime
# (they start it as processes); nothing but the CLI imports the CLI.
ALLOWED = {
    "skyform": {"skyform"},
    "state": {"skyform", "state"},
    "providers": {"skyform", "providers"},
    "runtime": {"skyform", "providers", "runtime"},
    "engine": {"skyform", "state", "providers", "engine"},
    "cli": {"skyform", "engine", "state", "providers", "cli"},
}
# The top of `skyform` (declare/*.py), in three parts (docs/architecture.md).
SDK_MODULES = {"app", "options", "names", "machines", "errors"}
BUNDLE_MODULES = {"loader", "bundle", "openapi", "picklecheck", "signing"}
SHARED_MODULES = {"files", "suggest", "logformat", "tlscontext", "credentials", "workdir"}
# `import skyform` (module-level imports of skyform/__init__, followed) loads only these.
SDK = {"skyform", "skyform.suggest", *(f"skyform.{m}" for m in SDK_MODULES)}
# What `python -m skyform.runtime.runner` may load: the top of skyform and the runtime.
RUNNER_ROOMS = {"skyform", "runtime"}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`
    lazy: bool  # inside a function body (runs when called, not at import)
    names: tuple[str, ...] = ()  # for `from X import a, b`: the names taken from X itself


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package under `root` (the repository root), by its import name."""
    out: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """(import node, type_only, lazy) for every import in `tree`."""

    def visit(
        nodes: Iterable[ast.AST], type_only: bool, lazy: bool
    ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, type_only, lazy
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.body, True, lazy)
                yield from visit(node.orelse, type_only, lazy)
            else:  # a function body runs later; a class body runs at import, like the module
                inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                yield from visit(ast.iter_child_nodes(node), type_only, inner)

    yield from visit(tree.body, False, False)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module `name` is (or is inside); None outside the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path) -> list[Edge]:
    """Every import between the package's own modules under `root`."""
    files = module_files(root)
    modules = set(files)
    edges: list[Edge] = []
    for source, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, type_only, lazy in _imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    if target is not None:
                        edges.append(Edge(source, target, node.lineno, type_only, lazy))
                continue
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                anchor = source.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            own: list[str] = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:  # `from pkg import module`: an arrow to that module
                    edges.append(Edge(source, submodule, node.lineno, type_only, lazy))
                else:
                    own.append(alias.name)
            target = _resolve(base, modules)
            if own and target is not None:
                edges.append(Edge(source, target, node.lineno, type_only, lazy, tuple(own)))
    return edges


def room(module: str) -> str:
    prefix = max((p for p in ROOMS if module == p or module.startswith(p + ".")), key=len)
    return ROOMS[prefix]


def where(edge: Edge, files: dict[str, Path], root: Path) -> str:
    path = files[edge.source].relative_to(root)
    return f"{path}:{edge.line}: {edge.source} imports {edge.target}"


def wrong_arrows(root: Path) -> list[str]:
    """Imports from one room into a room it may not import."""
    files = module_files(root)
    return [
        f"{where(e, files, root)} ({room(e.source)} -> {room(e.target)} is not an allowed arrow)"
        for e in import_graph(root)
        if room(e.target) not in ALLOWED[room(e.source)]
    ]


def private_imports(root: Path) -> list[str]:
    """`from X import _name` where X is another module: a helper that should be public."""
    files = module_files(root)
    return [
        f"{where(e, files, root)} ({name} is private to {e.target})"
        for e in import_graph(root)
        if e.target != e.source
        for name in e.names
        if name.startswith("_") and not name.startswith("__")
    ]


def stale_imports(root: Path, folders: Iterable[str] = ()) -> list[str]:
    """Imports of a `skyform.` module that does not exist (a path from before a move).

    Checked in the package and in `folders` (tests, benches, examples), whose
    imports of skyform follow the same paths.
    """
    modules = set(module_files(root))
    paths = [*module_files(root).values()]
    for folder in folders:
        paths += sorted((root / folder).rglob("*.py"))
    out: list[str] = []
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, _type_only, _lazy in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if not node.level else []
            else:
                names = [alias.name for alias in node.names]
            for name in names:
                if (name == "skyform" or name.startswith("skyform.")) and name not in modules:
                    out.append(f"{path.relative_to(root)}:{node.lineno}: no module {name}")
    return out


def cycles(root: Path) -> list[list[str]]:
    """Groups of modules that import each other at run time (strongly connected components)."""
    graph: dict[str, set[str]] = {m: set() for m in module_files(root)}
    for e in import_graph(root):
        if not e.type_only and e.target != e.source:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def loaded_by(root: Path, start: str, *, module_level_only: bool) -> set[str]:
    """The package's modules that importing `start` runs (type-only imports never run)."""
    edges = [e for e in import_graph(root) if not e.type_only]
    if module_level_only:
        edges = [e for e in edges if not e.lazy]
    modules = set(module_files(root))
    out: dict[str, set[str]] = {}
    for e in edges:
        out.setdefault(e.source, set()).add(e.target)
    seen = {start}
    todo = [start]
    while todo:
        for nxt in out.get(todo.pop(), ()):
            parents = [".".join(nxt.split(".")[:i]) for i in range(1, nxt.count(".") + 1)]
            for mod in [*parents, nxt]:  # importing a submodule runs its packages' __init__
                if mod not in seen and mod in modules:
                    seen.add(mod)
                    todo.append(mod)
    return seen


# -- the package as it is ------------------------------------------------------------------


def test_every_import_follows_an_allowed_arrow() -> None:
    assert wrong_arrows(REPO) == []


def test_no_import_cycles() -> None:
    assert cycles(REPO) == []


def test_every_import_of_skyform_names_a_module_that_exists() -> None:
    assert stale_imports(REPO, ["tests", "bench", "examples", "scripts"]) == []


def test_no_module_takes_another_modules_private_names() -> None:
    assert private_imports(REPO) == []


def test_import_skyform_loads_only_the_sdk() -> None:
    assert loaded_by(REPO, "skyform", module_level_only=True) <= SDK


def test_the_runner_loads_only_skyform_and_the_runtime() -> None:
    """`python -m skyform.runtime.runner` (DESIGN §1: runner -> skyform (app, bundle))."""
    loaded = loaded_by(REPO, "skyform.runtime.runner", module_level_only=False)
    assert {room(m) for m in loaded} <= RUNNER_ROOMS, sorted(
        m for m in loaded if room(m) not in RUNNER_ROOMS
    )


def test_the_top_of_skyform_holds_only_the_sdk_bundles_and_shared_helpers() -> None:
    """The stack engine and the CLI are subpackages; nothing of theirs sits beside the SDK."""
    files = module_files(REPO)
    assert {"skyform.engine", "skyform.cli"} <= set(files)
    top = {m.removeprefix("skyform.") for m in files if room(m) == "skyform" and m != "skyform"}
    assert top == SDK_MODULES | BUNDLE_MODULES | SHARED_MODULES


# -- the checks catch what they are for ----------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package's sources, to break on purpose."""
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return tmp_path


def _append(tree: Path, relative: str, line: str) -> None:
    path = tree / relative
    path.write_text(path.read_text() + f"\n{line}\n")


def _last_line(tree: Path, relative: str) -> str:
    """The number of the last line of `relative`, as a string."""
    return str(len((tree / relative).read_text().splitlines()))


@pytest.mark.parametrize(
    ("module", "line", "arrow"),
    [
        ("state/local.py", "from skyform.engine.keys import stack_secret", "state -> engine"),
        ("providers/local.py", "import skyform.cli", "providers -> cli"),
        ("providers/gpus.py", "from skyform.runtime import scaling", "providers -> runtime"),
        ("runtime/gateway.py", "from skyform.engine.plan import GATEWAY", "runtime -> engine"),
        ("declare/app.py", "from skyform.engine import stackfile", "skyform -> engine"),
        ("declare/bundle.py", "from skyform.state import open_backend", "skyform -> state"),
        ("declare/engine/keys.py", "from skyform.cli.output import console", "engine -> cli"),
    ],
)
def test_a_forbidden_arrow_is_reported(tree: Path, module: str, line: str, arrow: str) -> None:
    assert wrong_arrows(tree) == []
    _append(tree, module, "if TYPE_CHECKING:\n    " + line)  # type-only still counts
    (problem,) = wrong_arrows(tree)
    assert problem.startswith(f"{module}:") and f"({arrow} is not an allowed arrow)" in problem


def test_a_cycle_is_reported_also_through_a_lazy_import(tree: Path) -> None:
    assert cycles(tree) == []
    _append(tree, "declare/files.py", "def f():\n    from skyform.engine import keys")
    assert ["skyform.engine.keys", "skyform.files"] in cycles(tree)
    assert any("declare/files.py" in p for p in wrong_arrows(tree))


def test_a_type_only_import_makes_no_cycle(tree: Path) -> None:
    _append(tree, "declare/suggest.py", "if TYPE_CHECKING:\n    from skyform.errors import X")
    _append(tree, "declare/errors.py", "from skyform.suggest import did_you_mean")
    assert cycles(tree) == []


def test_an_import_from_before_a_move_is_reported(tree: Path) -> None:
    _append(tree, "declare/cli/stack.py", "def f():\n    from skyform.plan import Plan")
    line = _last_line(tree, "declare/cli/stack.py")
    assert stale_imports(tree) == [f"declare/cli/stack.py:{line}: no module skyform.plan"]


def test_a_private_import_is_reported(tree: Path) -> None:
    _append(tree, "declare/cli/devrun.py", "from skyform.cli.stack import _secret_helper")
    (problem,) = private_imports(tree)
    assert problem.startswith("declare/cli/devrun.py:") and "_secret_helper" in problem


def test_a_heavy_import_of_skyform_is_reported(tree: Path) -> None:
    _append(tree, "declare/machines.py", "from skyform import bundle")
    assert "skyform.bundle" in loaded_by(tree, "skyform", module_level_only=True) - SDK
