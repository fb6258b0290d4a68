"""rawbit: a learned codec for camera RAW photos (RAWtoBit network, Jeong & Jung 2022).

    >>> import rawbit
    >>> data = rawbit.encode("photo.NEF", quality=6)   # bytes of a .rbit file
    >>> image = rawbit.decode(data)                     # (H, W, 3) uint8 sRGB, oriented

The codec functions load torch on first use, so `import rawbit` and `rawbit --help` stay instant.
"""

import warnings

from .errors import RawbitError

# compressai calls torch.jit.script at import, which torch >= 2.10 flags; nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

__all__ = ["encode", "decode", "info", "reference", "RawbitError"]
__version__ = "0.1.0"
# The rate point encode uses when none is asked for (the shipped model's at lambda 0.0067); here,
# not in api, so that the CLI's --help shows it without importing torch.
DEFAULT_QUALITY = 6
# How hard the encoder looks for the best way to code a quality (rawbit/ladder.py says what each weighs).
EFFORTS = ("fast", "normal", "best")
DEFAULT_EFFORT = "normal"

_API = ("encode", "decode", "info", "reference")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rawbit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
