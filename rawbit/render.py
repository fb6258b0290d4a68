"""The reference rendering: LibRaw's own pipeline, the ground truth for training, tests and bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .raw import bayer_pattern, open_raw, orient

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


def reference_rendering(
    path: str | Path, oriented: bool = False, mosaic: np.ndarray | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 sRGB of the whole visible area (what decode gives back, whatever the CFA
    phase); with `oriented`, turned by the file's flip code as decode turns its output. `mosaic`
    replaces the file's visible sensor data (same shape, e.g. after lossy coding) before LibRaw
    renders it."""
    import rawpy

    settings = dict(RENDER_SETTINGS, demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD)
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
