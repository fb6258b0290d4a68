"""Wall time and peak memory of one encode or decode, measured by the kernel (torch-safe)."""

from __future__ import annotations

import ctypes
import re
import resource
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")

_KIB = 1024
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    """Seconds of wall time and MiB of peak resident memory an operation added to its process."""

    seconds: float
    peak_mib: float


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _trim_heap() -> None:
    # Give freed malloc arenas back to the OS first, so memory a previous point freed but kept
    # resident does not hide this point's needs (glibc only; elsewhere a no-op).
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS that ru_maxrss reports) to the
    # current RSS, so the peak read afterwards belongs to this operation alone.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[[], T]) -> tuple[T, Measured]:
    """Run `fn` once; its result, wall time and peak RSS growth over the RSS just before it.

    RSS counts everything the process touches (torch's and the codec libraries' native buffers,
    which tracemalloc misses). Where the peak cannot be reset (not Linux), the ru_maxrss delta is
    used instead, which is 0 when the operation stays under an earlier peak: a lower bound.
    """
    _trim_heap()
    reset = _reset_peak()
    before = (_status_kib("VmRSS") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = (_status_kib("VmHWM") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, Measured(seconds, max(0, peak - before) * _KIB / _MIB)
