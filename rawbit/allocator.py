"""`rawbit encode`'s and `rawbit decode`'s one setting of the C allocator: keep the memory it frees.

A 12 MP photo passes through arrays of 50-300 MB (the latent's float64 probability path, the
synthesis tiles, the detail layer's float64 photo). glibc hands every block over 32 MiB to the
kernel on its own (mmap) and gives it back when freed, so each new array of that size is faulted in
again page by page, zeroed by the kernel: on a 12 MP photo, 2-3 s of a 6-7 s decode at quality 6
were the kernel's (`sys` time). Served from the heap, with up to 256 MiB of freed memory kept at
its top, a freed block is reused as it is. Measured (a process decoding the same 12 MP file three
times, 2 threads, stop 27): quality 6 6.7-7.3 -> 5.2-5.7 s, peak 1.92 -> 2.45 GiB; quality 7
12.4-13.3 -> 8.8-9.4 s, peak 3.07 -> 3.38 GiB; the peak settles after the first photo. The
encoder took it from stop 32, once its analysis ran in tiles (benchmarks/speed.py, 12 MP, quality
6: 3.82-4.11 -> 3.34-3.36 s, process peak 2.09-2.19 -> 2.17-2.21 GiB; before the tiles it lifted the
encoder's peak over the 3 GiB the default must stay within). Bench and training keep the C
library's defaults, and the library (rawbit.api) never changes its host's allocator."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters: free memory at the heap's top kept, not given back
_M_MMAP_MAX = -4  # how many blocks may be mmap'd (0: none; the heap serves all)
_KEEP = 1 << 28  # bytes: the largest of a photo's arrays


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
