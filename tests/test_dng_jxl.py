"""`dng-jxl`, the lossy-DNG anchor of the bench: the sensor planes through JPEG XL, rendered by LibRaw.

What must hold: quality buys fidelity all the way to near-lossless; bpp counts the JPEG XL bytes;
the decoded photo is LibRaw's reference rendering of the decoded mosaic, the reference's size.
"""

from __future__ import annotations

from pathlib import Path

from conftest import write_test_dng
from rawbit.api import reference
from rawbit.bench.codecs import make_codecs
from rawbit.metrics import psnr


def test_quality_buys_fidelity_up_to_near_lossless(tmp_path: Path) -> None:
    dng = write_test_dng(tmp_path / "a.dng", cfa="GRBG", seed=5)
    ref = reference(dng)
    (codec,) = make_codecs(["dng-jxl"], [])
    points = []
    for q in (15, 75, 100):
        data = codec.encode(dng, ref, q)
        out = codec.decode(data)
        assert out.shape == ref.shape
        points.append((len(data), psnr(out, ref)))
    sizes, psnrs = zip(*points)
    assert sizes[0] < sizes[1] < sizes[2] and psnrs[0] < psnrs[1] < psnrs[2]
    assert psnrs[2] > 50.0  # lossless planes: LibRaw renders the very same photo
