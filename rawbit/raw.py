"""Reading camera RAW files with rawpy: Bayer checks, CFA phase, packing to RGGB, metadata."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import rawpy
import tifffile

from .errors import RawbitError, RawReadError

# LibRaw colour indices in raw_colors_visible (colour description "RGBG").
_R, _G, _B, _G2 = 0, 1, 2, 3

# Where the red photosite sits in the visible 2x2 block -> (rows, columns) added before the visible
# area so that the mosaic starts on red (RGGB).
_PAD_FOR_PATTERN = {"RGGB": (0, 0), "GRBG": (0, 1), "GBRG": (1, 0), "BGGR": (1, 1)}

# LibRaw's default output curve as rawpy passes it: gamma=(2.222, 4.5), a BT.709-like power 1/2.222
# with a linear toe of slope 4.5. LibRaw's gamma_curve finds where the toe ends by 48 bisection steps
# (the two segments meet with equal slope), so its constants are not the textbook 0.018 / 0.099.
GAMMA_POWER = 1 / 2.222
GAMMA_SLOPE = 4.5


def _solve_gamma(pwr: float, ts: float) -> tuple[float, float]:
    """(threshold, offset) of LibRaw's gamma_curve, found as LibRaw finds them."""
    lo, hi = 0.0, 1.0
    g2 = 0.0
    for _ in range(48):
        g2 = (lo + hi) / 2
        if ((g2 / ts) ** -pwr - 1) / pwr - 1 / g2 > -1:
            hi = g2
        else:
            lo = g2
    return g2 / ts, g2 * (1 / pwr - 1)


GAMMA_TOE, GAMMA_OFFSET = _solve_gamma(GAMMA_POWER, GAMMA_SLOPE)

# sRGB (D65) -> XYZ, as LibRaw's xyz_rgb; used to turn a camera's XYZ->camera matrix into camera->sRGB
# (here, and in the synthetic DNGs, whose matrices must invert to LibRaw's).
XYZ_RGB = np.array(
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
    """A Bayer RAW photo packed to RGGB planes.

    The visible mosaic is padded, never cropped: `pad` rows/columns before it put a red photosite
    first, and one more row/column after it where needed makes both sides even; each added
    photosite mirrors the nearest one of its own colour. Decoders crop back (`crop_to_photo`), so
    a decoded photo has exactly the reference rendering's size, whatever the sensor's phase."""

    packed: np.ndarray  # (4, Hc/2, Wc/2) float32 in [0, 1], channels R, G1, G2, B
    pad: tuple[int, int]  # rows, columns added before the visible area to reach RGGB
    size: tuple[int, int]  # (H, W) of the visible area: the photo, before orientation
    meta: RawMeta

    @property
    def coded_size(self) -> tuple[int, int]:
        """(Hc, Wc) of the padded mosaic, the image the network codes."""
        return self.packed.shape[1] * 2, self.packed.shape[2] * 2


def pad_mosaic(a: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """Pad (H, W, ...) by `pad` before and to even sizes after, mirroring across the edge (`reflect`:
    the added row copies the row two away, a photosite of the same CFA colour)."""
    top, left = pad
    bottom, right = (a.shape[0] + top) % 2, (a.shape[1] + left) % 2
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, widths, mode="reflect") if top or bottom or left or right else a


def pattern_for_pad(pad: tuple[int, int]) -> str:
    """The visible area's CFA pattern, from the padding that made it start on red."""
    return {v: k for k, v in _PAD_FOR_PATTERN.items()}[tuple(pad)]


def crop_to_photo(image, pad: tuple[int, int], size: tuple[int, int]):
    """The photo inside a coded-size image (array or tensor, the last two axes are rows, columns)."""
    (top, left), (h, w) = pad, size
    return image[..., top : top + h, left : left + w]


@contextlib.contextmanager
def _logger_off(name: str) -> Iterator[None]:
    log = logging.getLogger(name)
    before, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = before


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


def bayer_pattern(raw: rawpy.RawPy, path: str | Path) -> tuple[str, tuple[int, int]]:
    """CFA pattern of the visible area and the (top, left) padding that makes it start on red.

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
    if cfa not in _PAD_FOR_PATTERN:
        raise RawReadError(f"{path}: colour filter {cfa} is not a Bayer mosaic")
    h, w = colors.shape
    if h < 16 or w < 16:
        raise RawReadError(f"{path}: image is too small ({w}x{h})")
    return cfa, _PAD_FOR_PATTERN[cfa]


def _cam_to_srgb(raw: rawpy.RawPy) -> np.ndarray:
    """Camera RGB -> linear sRGB as LibRaw uses it (its rgb_cam): from LibRaw's camera table
    (cam_xyz_coeff), else the file's own matrix (DNG ColorMatrix), else what LibRaw applies."""
    cam_xyz = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3]
    if np.any(cam_xyz):
        cam_rgb = cam_xyz @ XYZ_RGB
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
    """Read a Bayer RAW file and pack its (padded) visible area to RGGB planes in [0, 1]."""
    make, model = camera_name(path)
    with open_raw(path) as raw:
        cfa, pad = bayer_pattern(raw, path)
        size = tuple(raw.raw_image_visible.shape)
        planes = pack(pad_mosaic(raw.raw_image_visible.astype(np.float32), pad))
        # LibRaw's colour index of each packed plane (R, G1, G2, B after the padding)
        colors = pack(pad_mosaic(raw.raw_colors_visible, pad)[:2, :2])[:, 0, 0]
        black = np.asarray(raw.black_level_per_channel, dtype=np.float32)[colors]
        white = float(raw.white_level)
        scale = np.maximum(white - black, np.float32(1.0))
        packed = np.clip((planes - black[:, None, None]) / scale[:, None, None], 0.0, 1.0)
        mul = _white_balance(raw, raw.raw_image_visible, raw.raw_colors_visible)
        meta = RawMeta(
            make=make,
            model=model,
            cfa=cfa,
            black=tuple(float(b) for b in black),
            white=white,
            wb=tuple(float(mul[c]) for c in colors),
            cam_to_srgb=tuple(tuple(float(v) for v in row) for row in _cam_to_srgb(raw)),
            orientation=int(raw.sizes.flip),
        )
    return RawImage(packed=packed.astype(np.float32), pad=pad, size=size, meta=meta)


def camera_name(path: str | Path) -> tuple[str, str]:
    """Make and model from the file's TIFF/EXIF tags (rawpy does not expose them); '' if absent."""
    try:
        # tifffile logs a damaged tag to stderr on its own: the name is a nicety, never a message
        with _logger_off("tifffile"), tifffile.TiffFile(str(path)) as tif:
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


# --- files and packing ---------------------------------------------------------------------------

RAW_EXTENSIONS = {
    ".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".kdc", ".dcr",
    ".orf", ".rw2", ".raf", ".pef", ".srw", ".raw", ".3fr", ".erf", ".mef", ".mos", ".x3f", ".iiq",
}  # fmt: skip


def find_raw_files(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Files as given plus the RAW files found (recursively, sorted) in folders; each once."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in RAW_EXTENSIONS)
        elif p.is_file():
            found.append(p)
        else:
            raise RawbitError(f"{p}: no such file or folder")
    return list(dict.fromkeys(found))


def unpack(packed: np.ndarray) -> np.ndarray:
    """(4, h, w) RGGB planes -> (2h, 2w) mosaic."""
    _, h, w = packed.shape
    mosaic = np.empty((2 * h, 2 * w), dtype=packed.dtype)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = packed[0], packed[1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = packed[2], packed[3]
    return mosaic


def pack(mosaic: np.ndarray) -> np.ndarray:
    """(2h, 2w) mosaic whose top-left photosite is red -> (4, h, w) planes by tile position.

    Planes follow position in the 2x2 tile (R, top-right G, bottom-left G, B), not which green it
    was before a transpose: geometry is what the network learns demosaicking from.
    """
    return np.stack([mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2]])
