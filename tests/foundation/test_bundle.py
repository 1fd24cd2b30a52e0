"""Bundles: what goes by value, metadata, signatures, refusals and fingerprints."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from support.projects import run_python, write_project

from skyform.bundle import (
    MAGIC,
    PYTHON_VERSION,
    _assemble,
    build_bundle,
    open_bundle,
    read_bundle_meta,
)
from skyform.errors import BundleError

KEY = "test-bundle-key"


def test_bundle_metadata(hello_project: Path) -> None:
    bundle = build_bundle("app.py::Hello", hello_project, KEY)
    meta = bundle.meta
    assert meta["python"] == PYTHON_VERSION
    assert meta["requirements"] == ["six==1.16.0"]
    assert meta["options"]["max_runners"] == 2
    assert meta["by_value"] == {"app": "app.py", "greeting": "greeting.py"}
    assert "pydantic" in meta["by_reference"] and "skyform" in meta["by_reference"]
    assert meta["endpoints"] == [{"name": "hello", "path": "/", "method": "POST", "kind": "call"}]
    schema = meta["openapi"]
    assert "/" in schema["paths"] and "HelloIn" in json.dumps(schema)
    assert len(bundle.fingerprint) == 64 and bundle.fingerprint != bundle.revision


def test_round_trip_runs_helper_code_by_value(hello_project: Path, tmp_path: Path) -> None:
    path = build_bundle("app.py::Hello", hello_project, KEY).write(tmp_path / "b.skyb")
    # A fresh process in another directory, where neither app.py nor greeting.py can be imported.
    result = run_python(
        f"""
        from pathlib import Path
        from skyform.bundle import open_bundle
        meta, cls = open_bundle(Path({str(path)!r}).read_bytes(), {KEY!r})
        app = object.__new__(cls)
        print(cls.hello(app, cls.hello.__annotations__["req"](name="Ada")).message)
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Hello, Ada!"


def _tamper(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def test_refuses_wrong_key(hello_project: Path) -> None:
    data = build_bundle("app.py::Hello", hello_project, KEY).data
    with pytest.raises(BundleError, match="signature does not match"):
        open_bundle(data, "another-key")


def test_refuses_unsigned(hello_project: Path) -> None:
    bundle = build_bundle("app.py::Hello", hello_project, KEY)
    header_end = bundle.data.index(b"\n", len(MAGIC))
    payload = bundle.data[header_end + 1 :]
    unsigned = MAGIC + json.dumps({"meta": bundle.meta}).encode() + b"\n" + payload
    with pytest.raises(BundleError, match="unsigned"):
        open_bundle(unsigned, KEY)


def test_refuses_tampered_metadata(hello_project: Path) -> None:
    data = build_bundle("app.py::Hello", hello_project, KEY).data
    with pytest.raises(BundleError, match="signature does not match"):
        open_bundle(_tamper(data, b'"max_runners": 2', b'"max_runners": 9'), KEY)


def test_refuses_other_python_minor_even_when_signed(hello_project: Path) -> None:
    bundle = build_bundle("app.py::Hello", hello_project, KEY)
    header_end = bundle.data.index(b"\n", len(MAGIC))
    payload = bundle.data[header_end + 1 :]
    other = {**bundle.meta, "python": "3.10"}
    with pytest.raises(BundleError, match=r"built with Python 3.10"):
        open_bundle(_assemble(other, payload, KEY), KEY)


class _Boom:
    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))

    def __init__(self, marker: str) -> None:
        self.marker = marker


def test_tampered_payload_is_never_unpickled(hello_project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    bundle = build_bundle("app.py::Hello", hello_project, KEY)
    header_end = bundle.data.index(b"\n", len(MAGIC))
    evil = bundle.data[: header_end + 1] + pickle.dumps(_Boom(str(marker)))
    with pytest.raises(BundleError, match="payload does not match"):
        open_bundle(evil, KEY)
    with pytest.raises(BundleError):
        read_bundle_meta(evil, KEY)
    assert not marker.exists()


def test_refuses_garbage() -> None:
    with pytest.raises(BundleError, match="not a skyform bundle"):
        open_bundle(b"hello", KEY)
    with pytest.raises(BundleError, match="corrupt"):
        open_bundle(MAGIC + b"{not json\n", KEY)


FINGERPRINT = """
import json, sys
from skyform.bundle import build_bundle
b = build_bundle("app.py::Hello", ".", "k1")
print(json.dumps([b.fingerprint, b.revision]))
"""


def _fingerprint_in_fresh_process(project: Path, seed: str) -> list[str]:
    result = run_python(FINGERPRINT, cwd=project, env={"PYTHONHASHSEED": seed})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_fingerprint_stable_across_processes_seeds_and_directories(
    hello_project: Path, tmp_path: Path
) -> None:
    first = _fingerprint_in_fresh_process(hello_project, "1")
    second = _fingerprint_in_fresh_process(hello_project, "4242")
    copy = shutil.copytree(hello_project, tmp_path / "elsewhere" / "checkout")
    third = _fingerprint_in_fresh_process(copy, "random")
    assert first == second == third
    # and the same in-process, with another key (the key signs, it does not identify)
    assert build_bundle("app.py::Hello", hello_project, "other-key").fingerprint == first[0]


def _fp(project: Path) -> tuple[str, str]:
    b = build_bundle("app.py::Hello", project, KEY)
    return b.fingerprint, b.revision


def test_fingerprint_changes_with_code_helpers_requirements_and_options(
    hello_project: Path,
) -> None:
    base_fp, base_rev = _fp(hello_project)
    app_file = hello_project / "app.py"
    helper = hello_project / "greeting.py"
    original_app, original_helper = app_file.read_text(), helper.read_text()

    app_file.write_text(original_app + "\n# a comment line\n")
    assert _fp(hello_project)[1] != base_rev
    app_file.write_text(original_app)
    assert _fp(hello_project) == (base_fp, base_rev)

    helper.write_text(original_helper.replace("Hello,", "Hi,"))
    assert _fp(hello_project)[1] != base_rev
    helper.write_text(original_helper)

    app_file.write_text(original_app.replace("six==1.16.0", "six==1.17.0"))
    assert _fp(hello_project)[1] != base_rev
    app_file.write_text(original_app)

    # An option: fingerprint changes; a scaling knob keeps the revision.
    changed = build_bundle("app.py::Hello", hello_project, KEY, {"max_runners": 3})
    assert changed.fingerprint != base_fp and changed.revision == base_rev
    machine = build_bundle("app.py::Hello", hello_project, KEY, {"machine_type": "GPU-H100"})
    assert machine.revision != base_rev


def test_unused_project_files_do_not_change_fingerprint(hello_project: Path) -> None:
    before = _fp(hello_project)
    (hello_project / "notes.py").write_text("print('not imported')\n")
    assert _fp(hello_project) == before


@pytest.mark.parametrize(
    ("setup_line", "use", "kind"),
    [
        (
            "import threading\n_LOCK = threading.Lock()\n",
            "with _LOCK:\n            pass",
            "_thread.lock",
        ),
        ("_LOG = open(__file__ + '.log', 'a')\n", "_LOG.write('x')", "TextIOWrapper"),
    ],
)
def test_unpicklable_module_object_is_named(
    tmp_path: Path, setup_line: str, use: str, kind: str
) -> None:
    write_project(
        tmp_path,
        {
            "app.py": setup_line
            + "from skyform import App, endpoint\n\n\nclass Bad(App):\n    @endpoint('/')\n"
            + f"    def go(self) -> int:\n        {use}\n        return 1\n"
        },
    )
    with pytest.raises(BundleError) as info:
        build_bundle("app.py::Bad", tmp_path, KEY)
    message = str(info.value)
    assert kind in message
    assert "Bad -> go -> global" in message
    assert "setup()" in message


def test_unpicklable_object_in_helper_module_names_the_path(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {
            "app.py": """
            from skyform import App, endpoint
            import store

            class Uses(App):
                @endpoint("/")
                def go(self) -> int:
                    return store.count()
            """,
            "store.py": """
            import threading
            LOCK = threading.RLock()

            def count() -> int:
                with LOCK:
                    return 1
            """,
        },
    )
    with pytest.raises(BundleError, match=r"LOCK is a _thread.RLock.*Uses -> go -> global store"):
        build_bundle("app.py::Uses", tmp_path, KEY)


def test_write_is_atomic_and_readable(hello_project: Path, tmp_path: Path) -> None:
    bundle = build_bundle("app.py::Hello", hello_project, KEY)
    path = bundle.write(tmp_path / "out" / "hello.skyb")
    assert path.read_bytes() == bundle.data
    assert read_bundle_meta(path.read_bytes(), KEY)["fingerprint"] == bundle.fingerprint
    assert not list(path.parent.glob("*.tmp"))


def test_postponed_annotations_survive_the_trip(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "proj",
        {
            "fut.py": """
            from __future__ import annotations
            from pydantic import BaseModel
            from skyform import App, endpoint

            class Item(BaseModel):
                name: str

            class In(BaseModel):
                item: Item
                n: int | None = None

            class Out(BaseModel):
                message: str

            class Fut(App):
                @endpoint("/")
                def go(self, req: In) -> Out:
                    return Out(message=f"{req.item.name} x{req.n}")
            """
        },
    )
    path = build_bundle("fut.py::Fut", project, KEY).write(tmp_path / "fut.skyb")
    result = run_python(
        f"""
        from pathlib import Path
        from skyform.app import app_endpoints
        from skyform.bundle import open_bundle
        meta, cls = open_bundle(Path({str(path)!r}).read_bytes(), {KEY!r})
        (ep,) = app_endpoints(cls)
        req = ep.input_model(item={{"name": "ada"}}, n=2)
        print(cls.go(object.__new__(cls), req).message)
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ada x2"
