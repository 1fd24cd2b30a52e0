"""How the runner turns a failed endpoint call into a status, and the runner's fate.

The status is what the gateway acts on (DESIGN §6): 503 means this runner is
unhealthy and ends itself after answering; other 5xx keep it serving. A CUDA
failure leaves the GPU in an unknown state, so it maps to 503 and the runner is
replaced. torch is never imported here: if the user's code did not import it,
no exception can be one of its classes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyform.runtime.runner_context import current_request

if TYPE_CHECKING:
    from skyform.app import Endpoint

# Exit codes of the runner process.
EXIT_BAD_START = 1  # bad arguments, key or bundle: nothing was served
EXIT_SETUP_FAILED = 2  # setup() raised or exceeded startup_timeout
EXIT_UNHEALTHY = 3  # an endpoint answered 503 (or hit a CUDA error)
EXIT_REQUEST_TIMEOUT = 4  # a request ran past request_timeout

ERROR_TYPE_HEADER = "x-skyform-error-type"

log = logging.getLogger("skyform.runner")

# Substrings of RuntimeError messages raised by CUDA, its libraries and torch's wrappers.
_CUDA_MARKERS = ("CUDA", "CUBLAS", "CUDNN", "cuDNN", "NCCL error", "CUFFT", "CUSOLVER")

_RUNTIME_DIR = str(Path(__file__).resolve().parent)
_FUTURES_DIR = str(Path(concurrent.futures.__file__).resolve().parent)


def is_cuda_failure(exc: BaseException) -> bool:
    """True for torch's CUDA out-of-memory and accelerator errors, and CUDA RuntimeErrors."""
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = getattr(torch, "cuda", None)
        for cls in (
            getattr(cuda, "OutOfMemoryError", None),
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch, "AcceleratorError", None),
        ):
            if isinstance(cls, type) and isinstance(exc, cls):
                return True
    if isinstance(exc, RuntimeError):
        message = str(exc)
        return any(marker in message for marker in _CUDA_MARKERS)
    return False


def error_body(detail: str, error_type: str, request_id: str | None) -> dict[str, Any]:
    """The JSON body of every error the runner itself writes."""
    return {"detail": detail, "error_type": error_type, "request_id": request_id}


def user_traceback(exc: BaseException) -> str:
    """The traceback of `exc` from the first frame of user code on (runner frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and _is_internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)).rstrip()


def _is_internal(filename: str) -> bool:
    return filename.startswith((_RUNTIME_DIR, _FUTURES_DIR)) or "/asyncio/" in filename


def failure_of(ep: Endpoint, exc: BaseException) -> tuple[int, str, str]:
    """(status, detail, error_type) of an endpoint's exception; logs it, decides the fate.

    CUDA failures, `SystemExit` and `KeyboardInterrupt` make the runner
    unhealthy (503, then it ends itself); anything else is the app's error (500).
    """
    ctx = current_request()
    cuda = is_cuda_failure(exc)
    if cuda or isinstance(exc, (SystemExit, KeyboardInterrupt)):
        log.error(
            "%s failed; the runner is unhealthy, answering 503 and stopping\n%s",
            ep.name,
            user_traceback(exc),
        )
        if ctx is not None:
            ctx.end_runner(EXIT_UNHEALTHY, f"{ep.name} raised {type(exc).__name__}")
        error_type = "cuda_error" if cuda else "runner_exit"
        return 503, f"{type(exc).__name__}: {exc}", error_type
    log.error("%s raised an exception\n%s", ep.name, user_traceback(exc))
    detail = f"internal error in {ep.name} ({type(exc).__name__}); the runner log has the traceback"
    return 500, detail, "internal_error"
