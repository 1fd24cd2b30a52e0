"""Mapping endpoint failures to statuses: which exceptions count as CUDA failures."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from skyform.runtime.runner_errors import is_cuda_failure, user_traceback


@pytest.mark.parametrize(
    ("exc", "cuda"),
    [
        (RuntimeError("CUDA error: an illegal memory access was encountered"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
        (RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), True),
        (RuntimeError("NCCL error in: ProcessGroupNCCL.cpp"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("CUDA is mentioned but this is a ValueError"), False),
        (MemoryError(), False),
    ],
)
def test_cuda_runtime_errors_by_message(exc: BaseException, cuda: bool) -> None:
    assert is_cuda_failure(exc) is cuda


def test_classifying_never_imports_torch() -> None:
    # In a fresh process: this one may have imported torch for other tests.
    probe = (
        "import sys; from skyform.runtime.runner_errors import is_cuda_failure; "
        "is_cuda_failure(RuntimeError('CUDA error: anything')); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_torch_classes_count_once_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The class check catches errors whose message names no CUDA library.

    A stand-in module with torch's layout (torch itself is an optional extra);
    `test_real_torch_out_of_memory_class` checks the real class where installed.
    """
    oom = type("OutOfMemoryError", (RuntimeError,), {})
    accelerator = type("AcceleratorError", (RuntimeError,), {})
    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(OutOfMemoryError=oom)  # type: ignore[attr-defined]
    fake.AcceleratorError = accelerator  # type: ignore[attr-defined]
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert not is_cuda_failure(oom("out of memory"))
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert is_cuda_failure(oom("out of memory"))
    assert is_cuda_failure(accelerator("device-side assert triggered"))
    assert not is_cuda_failure(RuntimeError("device-side assert triggered"))


def test_real_torch_out_of_memory_class() -> None:
    torch = pytest.importorskip("torch")
    assert is_cuda_failure(torch.cuda.OutOfMemoryError("Tried to allocate 2.00 GiB"))


def test_user_traceback_starts_at_user_code() -> None:
    def user_code() -> None:
        raise KeyError("missing")

    try:
        user_code()
    except KeyError as exc:
        text = user_traceback(exc)
    assert text.startswith("Traceback (most recent call last):")
    assert "in user_code" in text
    assert text.endswith("KeyError: 'missing'")
