"""Where and how tensor work runs: the device (one rule for coding and training alike) and the
thread policy that keeps float results independent of the machine's thread count."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import RawbitError


def pick_device(device: str = "auto") -> torch.device:
    """'auto' takes CUDA when present; asking for CUDA without it is a readable error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RawbitError(f"device {device!r} asked for, but no CUDA GPU is available")
    return torch.device(device)


@contextlib.contextmanager
def one_thread_per_op() -> Iterator[int]:
    """Make every tensor op single-threaded (yields the thread count there was).

    A convolution's float result can depend on how its work is split across threads; one flipped
    scale index in the probability path would corrupt the rest of the stream, and one flipped
    rounding in the decoder changes a pixel. Ops run single-threaded and parallelism comes from
    independent tiles instead, so results do not depend on the machine's thread count.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield n
    finally:
        torch.set_num_threads(n)
