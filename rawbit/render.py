"""The reference rendering: LibRaw's own pipeline, the ground truth for training, tests and bench."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from .raw import XYZ_RGB, bayer_pattern, crop_to_photo, open_raw, orient, pattern_for_pad, unpack

# Camera white balance, no auto-brightness, 8-bit sRGB, AHD, no flip (DESIGN.md). Part of every
# cache key, so changing one of these never reuses stale renderings. adjust_maximum_thr=0: by
# default LibRaw treats the brightest pixel as white when it lies within 75-100% of the white level,
# brightening the whole photo by an amount no patch of it can predict; off, the rendering is a
# function of the local data only, which a network (and a photographer) can rely on.
RENDER_SETTINGS = dict(
    use_camera_wb=True,
    no_auto_bright=True,
    adjust_maximum_thr=0.0,
    output_bps=8,
    user_flip=0,
    demosaic_algorithm="AHD",
)


def _libraw_settings(bits: int = 8) -> dict:
    """RENDER_SETTINGS as rawpy's postprocess takes them, at 8 or 16 bits."""
    import rawpy

    return dict(RENDER_SETTINGS, demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD, output_bps=bits)


def reference_rendering(
    path: str | Path, oriented: bool = False, mosaic: np.ndarray | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 sRGB of the whole visible area (what decode gives back, whatever the CFA
    phase); with `oriented`, turned by the file's flip code as decode turns its output. `mosaic`
    replaces the file's visible sensor data (same shape, e.g. after lossy coding) before LibRaw
    renders it."""
    settings = _libraw_settings()
    with open_raw(path) as raw:
        bayer_pattern(raw, path)  # refuses what rawbit cannot code, as read_raw does
        h, w = raw.raw_image_visible.shape
        flip = int(raw.sizes.flip)  # before postprocess: user_flip=0 resets it
        if mosaic is not None:
            raw.raw_image_visible[...] = mosaic  # a view of LibRaw's own buffer
        rgb = raw.postprocess(**settings)
    if rgb.shape[0] < h or rgb.shape[1] < w:
        raise AssertionError(f"LibRaw rendered {rgb.shape[:2]} for a {h}x{w} visible area")
    rgb = rgb[:h, :w]
    return orient(rgb, flip) if oriented else np.ascontiguousarray(rgb)


class RenderError(RuntimeError):
    """LibRaw refused the sensor data handed to it (render_planes)."""


def render_planes(
    balanced: np.ndarray, pad: tuple[int, int], size: tuple[int, int], cam_to_srgb: np.ndarray, bits: int = 8
) -> np.ndarray:
    """LibRaw's reference pipeline on sensor data without its file: (4, h, w) RGGB planes of the
    padded mosaic, white-balanced and clipped to [0, 1] (what LibRaw holds after scale_colors),
    -> (H, W, 3) uint8 (uint16 for bits=16) of the visible area, not oriented.

    LibRaw renders files, so the planes travel as a DNG in memory that makes LibRaw hold exactly
    these values: black 0, white 65535 and neutral white balance (so scale_colors multiplies by 1),
    and a ColorMatrix1 from which LibRaw's cam_xyz_coeff gives back `cam_to_srgb` as its rgb_cam
    (cam_rgb = cam_xyz @ xyz_rgb, rows normalised, inverted). AHD then sees what it would have seen
    in the original file, and its output matches the reference up to 16-bit rounding (60-99 dB on
    the exact planes of the real files, tests/test_archive.py)."""
    import rawpy

    from .data.dng import dng_bytes

    mosaic = crop_to_photo(unpack(np.asarray(balanced, dtype=np.float64)), pad, size)
    u16 = np.clip(np.floor(mosaic * 65535.0 + 1e-6), 0, 65535).astype(np.uint16)
    cam_xyz = np.linalg.inv(np.asarray(cam_to_srgb, dtype=np.float64)) @ np.linalg.inv(XYZ_RGB)
    settings = _libraw_settings(bits)
    try:
        data = dng_bytes(u16, cfa=pattern_for_pad(pad), black_level=0, white_level=65535, as_shot_neutral=(1, 1, 1),
                         color_matrix=cam_xyz, matrix_denominator=1_000_000)  # fmt: skip
        with rawpy.imread(io.BytesIO(data)) as raw:
            rgb = raw.postprocess(**settings)
    except (rawpy.LibRawError, struct.error) as e:  # e.g. a matrix whose rationals overflow
        raise RenderError(str(e)) from e
    h, w = size
    return np.ascontiguousarray(rgb[:h, :w])
