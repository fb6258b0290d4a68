"""Reading camera RAW files with rawpy: Bayer checks, CFA phase, packing to RGGB, metadata."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rawpy
import tifffile

from .errors import RawReadError

# LibRaw colour indices in raw_colors_visible (colour description "RGBG").
_R, _G, _B, _G2 = 0, 1, 2, 3

# Where the red photosite sits in the visible 2x2 block -> (row, column) crop that makes it RGGB.
_CROP_FOR_PATTERN = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}

# sRGB (D65) -> XYZ, as LibRaw's xyz_rgb; used to turn a camera's XYZ->camera matrix into camera->sRGB.
_XYZ_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)


@dataclass(frozen=True)
class RawMeta:
    """What the file says about how to render it (used by the camera-aware input and the header)."""

    make: str
    model: str
    cfa: str  # pattern of the visible area before cropping, e.g. "GRBG"
    black: tuple[float, float, float, float]  # per packed channel R, G1, G2, B
    white: float
    wb: tuple[float, float, float, float]  # white-balance gains R, G1, G2, B, smallest = 1
    cam_to_srgb: tuple[tuple[float, ...], ...]  # 3x3, rows sum to 1
    orientation: int  # LibRaw flip code: bit0 mirror left-right, bit1 upside-down, bit2 transpose


@dataclass
class RawImage:
    """A Bayer RAW photo packed to RGGB planes, aligned with its reference rendering."""

    packed: np.ndarray  # (4, H/2, W/2) float32 in [0, 1], channels R, G1, G2, B
    crop: tuple[int, int]  # rows, columns removed at the top/left of the visible area to reach RGGB
    meta: RawMeta

    @property
    def size(self) -> tuple[int, int]:
        """Height and width of the sRGB image this RAW renders to (before orientation)."""
        return self.packed.shape[1] * 2, self.packed.shape[2] * 2


@contextlib.contextmanager
def _libraw_quiet() -> Iterator[None]:
    """Silence what LibRaw prints straight to the C stderr ("Unexpected end of file"): the error it
    raises is reported once, as one readable line, by whoever catches it."""
    import os
    import sys

    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured in tests)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def open_raw(path: str | Path) -> Iterator[rawpy.RawPy]:
    """rawpy.imread with LibRaw's errors translated to one readable message."""
    path = Path(path)
    if not path.is_file():
        raise RawReadError(f"{path}: no such file")
    try:
        with _libraw_quiet():
            raw = rawpy.imread(str(path))
            raw.unpack()  # now, so damage shows here and not halfway through
    except rawpy.LibRawFileUnsupportedError as e:
        raise RawReadError(f"{path}: not a RAW photo LibRaw can read") from e
    except (rawpy.LibRawError, OSError) as e:
        raise RawReadError(f"{path}: truncated, damaged, or not a RAW photo") from e
    try:
        with _libraw_quiet():
            yield raw
    except (rawpy.LibRawError, OSError) as e:
        raise RawReadError(f"{path}: damaged or truncated RAW data ({e})") from e
    finally:
        raw.close()


def bayer_crop(raw: rawpy.RawPy, path: str | Path) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """CFA pattern of the visible area, the (top, left) crop to RGGB, and the even (H, W) kept.

    Raises RawReadError for anything that is not a 2x2 Bayer mosaic.
    """
    if raw.raw_type != rawpy.RawType.Flat:
        raise RawReadError(
            f"{path}: holds full-colour (linear or demosaiced) data, not the sensor's Bayer mosaic "
            "that rawbit needs"
        )
    pattern = raw.raw_pattern
    if raw.num_colors < 3 or pattern is None:
        raise RawReadError(f"{path}: monochrome sensor; rawbit needs a colour Bayer mosaic")
    if pattern.shape != (2, 2):
        raise RawReadError(
            f"{path}: {pattern.shape[0]}x{pattern.shape[1]} colour filter (e.g. Fujifilm X-Trans); "
            "rawbit handles only 2x2 Bayer mosaics"
        )
    if abs(raw.sizes.pixel_aspect - 1.0) > 1e-6:
        raise RawReadError(f"{path}: non-square sensor pixels are not supported")
    colors = raw.raw_colors_visible
    block = colors[:2, :2]
    letters = {_R: "R", _G: "G", _G2: "G", _B: "B"}
    try:
        cfa = "".join(letters[int(c)] for c in block.reshape(-1))
    except KeyError as e:
        raise RawReadError(f"{path}: unexpected colour filter layout") from e
    if cfa not in _CROP_FOR_PATTERN:
        raise RawReadError(f"{path}: colour filter {cfa} is not a Bayer mosaic")
    top, left = _CROP_FOR_PATTERN[cfa]
    h, w = colors.shape
    h, w = (h - top) // 2 * 2, (w - left) // 2 * 2
    if h < 16 or w < 16:
        raise RawReadError(f"{path}: image is too small ({w}x{h})")
    return cfa, (top, left), (h, w)


def _cam_to_srgb(raw: rawpy.RawPy) -> np.ndarray:
    """Camera RGB -> linear sRGB as LibRaw uses it (its rgb_cam): from LibRaw's camera table
    (cam_xyz_coeff), else the file's own matrix (DNG ColorMatrix), else what LibRaw applies."""
    cam_xyz = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
    if np.any(cam_xyz):
        cam_rgb = cam_xyz @ _XYZ_RGB
        cam_rgb = cam_rgb / cam_rgb.sum(axis=1, keepdims=True)
        return np.linalg.pinv(cam_rgb)
    file_matrix = np.asarray(raw.color_matrix, dtype=np.float64)[:3, :3]
    return file_matrix if np.any(file_matrix) else _measured_rgb_cam(raw)


def _measured_rgb_cam(raw: rawpy.RawPy) -> np.ndarray:
    """LibRaw's rgb_cam where rawpy does not expose it (e.g. Kodak DC50: a matrix set inside
    LibRaw's loader, neither table nor file matrix): the exact linear map between its camera-RGB
    and sRGB renderings, fitted on unclipped pixels of a half-size pass (no demosaic, ~0.1 s)."""
    kw = dict(use_camera_wb=True, no_auto_bright=True, adjust_maximum_thr=0.0, user_flip=0,
              half_size=True, gamma=(1, 1), output_bps=16)  # fmt: skip
    cam = raw.postprocess(output_color=rawpy.ColorSpace.raw, **kw).reshape(-1, 3).astype(np.float64)
    srgb = raw.postprocess(**kw).reshape(-1, 3).astype(np.float64)
    ok = (cam < 60000).all(1) & (srgb < 65000).all(1) & (srgb > 200).all(1)
    if ok.sum() < 100:
        return np.eye(3)
    # LibRaw truncates to integers: +0.5 centres the target so the fit is not biased low.
    m = np.linalg.lstsq(cam[ok], srgb[ok] + 0.5, rcond=None)[0].T
    return m if np.all(np.isfinite(m)) else np.eye(3)


def _white_balance(raw: rawpy.RawPy, mosaic: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Gains per LibRaw colour (R, G, B, G2) as the reference rendering applies them, smallest = 1.

    LibRaw's use_camera_wb takes the as-shot multipliers (a missing G2 = G); where a file has none
    (cam_mul[0] = -1) it balances automatically, mirrored here exactly: per-colour means over 8x8
    blocks of the visible mosaic, skipping any block with a pixel within 25 of the white level.
    mosaic: raw_image_visible (not black-subtracted); colors: raw_colors_visible.
    """
    cam = np.asarray(raw.camera_whitebalance, dtype=np.float64)
    if cam[0] == -1:
        mul = _auto_white_balance(raw, mosaic, colors)
    elif np.all(cam[:3] > 0):
        mul = cam.copy()
    else:
        mul = np.asarray(raw.daylight_whitebalance, dtype=np.float64)
        if not np.all(mul[:3] > 0):
            mul = np.ones(4)
    if mul[3] <= 0:
        mul[3] = mul[1]
    return mul / mul.min()


def _auto_white_balance(raw: rawpy.RawPy, mosaic: np.ndarray, colors: np.ndarray) -> np.ndarray:
    h, w = mosaic.shape[0] // 8 * 8, mosaic.shape[1] // 8 * 8
    blacks = np.asarray(raw.black_level_per_channel, dtype=np.float64)
    vals, cols = mosaic.astype(np.float64), colors
    # LibRaw also sums the ragged last row/column of blocks; whole blocks differ by < 0.1 %.
    hot = (vals[:h, :w] > raw.white_level - 25).reshape(h // 8, 8, w // 8, 8).any(axis=(1, 3))
    keep = np.repeat(np.repeat(~hot, 8, 0), 8, 1)
    sums, counts = np.zeros(4), np.zeros(4)
    for c in range(4):
        sel = keep & (cols[:h, :w] == c)
        sums[c] = np.clip(vals[:h, :w][sel] - blacks[c], 0, None).sum()
        counts[c] = sel.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        mul = np.where(sums > 0, counts / np.maximum(sums, 1e-12), 0.0)
    return mul if np.all(mul[:3] > 0) else np.ones(4)


def read_raw(path: str | Path) -> RawImage:
    """Read a Bayer RAW file and pack its visible area to (4, H/2, W/2) RGGB planes in [0, 1]."""
    make, model = camera_name(path)
    with open_raw(path) as raw:
        cfa, (top, left), (h, w) = bayer_crop(raw, path)
        mosaic = raw.raw_image_visible[top : top + h, left : left + w].astype(np.float32)
        colors = raw.raw_colors_visible[top : top + 2, left : left + 2]
        black_by_color = np.asarray(raw.black_level_per_channel, dtype=np.float32)
        white = float(raw.white_level)
        planes, blacks = [], []
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):  # R, G1, G2, B after the crop
            black = black_by_color[colors[dy, dx]]
            plane = (mosaic[dy::2, dx::2] - black) / max(white - black, 1.0)
            planes.append(np.clip(plane, 0.0, 1.0))
            blacks.append(float(black))
        mul = _white_balance(raw, raw.raw_image_visible, raw.raw_colors_visible)
        wb = [float(mul[colors[dy, dx]]) for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]
        meta = RawMeta(
            make=make,
            model=model,
            cfa=cfa,
            black=tuple(blacks),
            white=white,
            wb=tuple(wb),
            cam_to_srgb=tuple(tuple(float(v) for v in row) for row in _cam_to_srgb(raw)),
            orientation=int(raw.sizes.flip),
        )
    return RawImage(packed=np.stack(planes).astype(np.float32), crop=(top, left), meta=meta)


def camera_name(path: str | Path) -> tuple[str, str]:
    """Make and model from the file's TIFF/EXIF tags (rawpy does not expose them); '' if absent."""
    try:
        with tifffile.TiffFile(str(path)) as tif:
            tags = tif.pages[0].tags
            return tuple(str(tags[t].value).strip("\x00 ") if t in tags else "" for t in (271, 272))
    except Exception:  # not TIFF-based (CRW, KDC...): the name is a nicety, never a reason to fail
        return "", ""


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply a LibRaw flip code to an (H, W, ...) image, as LibRaw would when rendering."""
    if orientation & 1:
        image = image[:, ::-1]
    if orientation & 2:
        image = image[::-1]
    if orientation & 4:
        image = image.swapaxes(0, 1)
    return np.ascontiguousarray(image)
