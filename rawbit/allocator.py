"""The rawbit command's one setting of the C allocator: keep the memory it frees.

A 12 MP photo passes through arrays of 50-300 MB (the latent's float64 probability path, the
synthesis tiles, the detail layer's float64 photo). glibc hands every block over 32 MiB to the
kernel on its own (mmap) and gives it back when freed, so each new array of that size is faulted in
again page by page, zeroed by the kernel: on a 12 MP photo, 2-3 s of a 6-7 s decode at quality 6
were the kernel's (`sys` time), 11 s of a 21 s encode at quality 7. Served from the heap, with up
to 1 GiB of freed memory kept at its top, a freed block is reused as it is. Measured
(benchmarks/speed.py, 2 threads, back to back, models/README.md): quality 6 encode 3.93-4.36 ->
3.22-3.64 s, decode 6.16-6.36 -> 5.09-5.22 s, whole-process peak 1.94 -> 2.64-2.75 GiB; quality 7
encode 21.17 -> 17.45 s, decode 11.89 -> 8.62 s, peak 3.37 -> 3.84 GiB. mmap off alone (the heap
trimmed as usual) gained less (quality 7: 19.8 s, 10.3 s, in a quick check). Freed memory stays
with the process until it ends: the commands that code photos (encode, decode, bench: what was
measured) own their process and make this trade; training keeps the C library's defaults, and the
library (rawbit.api) never changes its host's allocator."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters: free memory at the heap's top kept, not given back
_M_MMAP_MAX = -4  # how many blocks may be mmap'd (0: none; the heap serves all)
_KEEP = 1 << 30  # bytes: a photo's few largest arrays


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap (glibc), for the rest of the process. Whether it took: False
    where the C library is not glibc, or has no such setting (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
