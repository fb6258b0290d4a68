"""rawbit: a learned codec for camera RAW photos (RAWtoBit network, Jeong & Jung 2022).

    >>> import rawbit
    >>> data = rawbit.encode("photo.NEF", quality=6)   # bytes of a .rbit file
    >>> image = rawbit.decode(data)                     # (H, W, 3) uint8 sRGB, oriented
"""

import warnings

# compressai calls torch.jit.script at import, which torch >= 2.10 flags; nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")

from .api import decode, encode, info, reference
from .errors import RawbitError

__all__ = ["encode", "decode", "info", "reference", "RawbitError"]
__version__ = "0.1.0"
