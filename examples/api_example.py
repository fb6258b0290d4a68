"""The Python API: encode a RAW photo to .rbit bytes, decode them, compare with LibRaw's rendering.

    python examples/api_example.py [photo.dng]
"""

import sys
from pathlib import Path

import numpy as np

import rawbit

photo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample.dng")
for quality in (1, 6, 11):
    data = rawbit.encode(photo, quality=quality)  # bytes of a complete .rbit file
    image = rawbit.decode(data)  # (H, W, 3) uint8 sRGB, orientation applied
    reference = rawbit.reference(photo)  # LibRaw's rendering, cropped/oriented the same way
    mse = np.mean((image.astype(float) - reference) ** 2)
    info = rawbit.info(data)
    print(f"quality {quality}: {len(data)} bytes, {info['bpp']:.3f} bpp, "
          f"PSNR {10 * np.log10(255**2 / mse):.2f} dB, {image.shape[1]}x{image.shape[0]}")
