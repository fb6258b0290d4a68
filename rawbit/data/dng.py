"""Writing a minimal, valid Bayer DNG (DNG 1.4) with tifffile: synthetic training data, and the
sensor planes an archive-layer decoder hands to LibRaw (rawbit.render.render_planes)."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from ..files import atomic_writer

# DNG CFAPattern colour codes.
_CODES = {"R": 0, "G": 1, "B": 2}
CFA_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")

# TIFF tag types.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10


def _rationals(values: Sequence[float], denominator: int = 1_000_000) -> tuple[int, ...]:
    """Flatten floats to (numerator, denominator) pairs; a fixed denominator keeps them exact enough."""
    out: list[int] = []
    for v in values:
        f = Fraction(float(v)).limit_denominator(denominator)
        out += [f.numerator, f.denominator]
    return tuple(out)


def write_dng(path: str | Path, mosaic: np.ndarray, **fields) -> None:
    """Write an (H, W) uint16 Bayer mosaic as an uncompressed DNG, atomically; `fields` are
    `dng_bytes`'s keyword arguments (cfa, black_level, white_level, as_shot_neutral, ...)."""
    data = dng_bytes(mosaic, **fields)
    # All or nothing, even if the process dies mid-write: a half DNG would poison a training set.
    with atomic_writer(Path(path), force=True) as f:
        f.write(data)


def dng_bytes(
    mosaic: np.ndarray,
    *,
    cfa: str = "RGGB",
    black_level: int,
    white_level: int,
    as_shot_neutral: Sequence[float],
    color_matrix: Sequence[Sequence[float]] | np.ndarray,
    orientation: int = 1,
    make: str = "rawbit",
    model: str = "synthetic",
    matrix_denominator: int = 10_000,
) -> bytes:
    """An (H, W) uint16 Bayer mosaic as the bytes of an uncompressed DNG. The colour matrix is
    stored as rationals over `matrix_denominator` (entries must stay below 2**31 / it)."""
    mosaic = np.asarray(mosaic)
    cfa = cfa.upper()
    if cfa not in CFA_PATTERNS:
        raise ValueError(f"cfa must be one of {CFA_PATTERNS}, not {cfa!r}")
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16:
        raise ValueError(f"mosaic must be a 2-D uint16 array, not {mosaic.dtype} {mosaic.shape}")
    if not 0 <= black_level < white_level <= 65535:
        raise ValueError(f"need 0 <= black_level < white_level <= 65535 ({black_level}, {white_level})")
    neutral = [float(v) for v in as_shot_neutral]
    if len(neutral) != 3 or min(neutral) <= 0:
        raise ValueError(f"as_shot_neutral must be 3 positive numbers, not {as_shot_neutral}")
    matrix = np.asarray(color_matrix, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f"color_matrix must be 3x3, not {matrix.shape}")
    if orientation not in range(1, 9):
        raise ValueError(f"orientation must be a TIFF orientation 1..8, not {orientation}")
    camera = f"{make} {model}".strip()
    extratags = [
        (271, _ASCII, 0, make, True),  # Make
        (272, _ASCII, 0, model, True),  # Model
        (274, _SHORT, 1, orientation, True),  # Orientation
        (33421, _SHORT, 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, _BYTE, 4, bytes(_CODES[c] for c in cfa), True),  # CFAPattern
        (50706, _BYTE, 4, bytes((1, 4, 0, 0)), True),  # DNGVersion
        (50707, _BYTE, 4, bytes((1, 1, 0, 0)), True),  # DNGBackwardVersion
        (50708, _ASCII, 0, camera, True),  # UniqueCameraModel
        (50710, _BYTE, 3, bytes((0, 1, 2)), True),  # CFAPlaneColor
        (50711, _SHORT, 1, 1, True),  # CFALayout: rectangular
        (50714, _LONG, 1, int(black_level), True),  # BlackLevel
        (50717, _LONG, 1, int(white_level), True),  # WhiteLevel
        (50721, _SRATIONAL, 9, _rationals(matrix.reshape(-1), matrix_denominator), True),  # ColorMatrix1
        (50728, _RATIONAL, 3, _rationals(neutral), True),  # AsShotNeutral
        (50778, _SHORT, 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        np.ascontiguousarray(mosaic),
        photometric=32803,  # CFA
        planarconfig="contig",
        subfiletype=0,  # full-resolution image
        metadata=None,  # no JSON ImageDescription
        software="rawbit",
        extratags=extratags,
    )
    return buf.getvalue()
