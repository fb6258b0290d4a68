"""Synthetic Bayer DNGs from sRGB photos: unprocessing (Brooks et al. 2019) inverted against LibRaw.

Each step inverts what the reference rendering (LibRaw: camera WB, no auto-brightness, BT.709 gamma,
8-bit) does, so `reference_rendering(dng)` comes back close to the source photo; what remains is the
demosaicking loss, clipping of colours outside the camera's gamut, and the added sensor noise.
LibRaw's adjust_maximum_thr (0.75 by default) rescales images whose brightest raw value lies between
75% and 100% of the white level; no choice of raw data can undo that, so such images render brighter
unless the reference rendering sets adjust_maximum_thr=0.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import OutputError, RawbitError
from ..raw import GAMMA_OFFSET, GAMMA_POWER, GAMMA_SLOPE, GAMMA_TOE, XYZ_RGB
from .dng import CFA_PATTERNS, write_dng

# XYZ (D65) -> camera matrices (DNG ColorMatrix1). The first four are the table of Brooks et al. 2019
# (github.com/timothybrooks/unprocessing); the last two are Adobe's, as in dcraw/LibRaw's adobe_coeff.
CAMERAS: dict[str, tuple[tuple[float, ...], ...]] = {
    "brooks2019-a": ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    "brooks2019-b": ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    "brooks2019-c": ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    "brooks2019-d": ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
    "Canon EOS 5D Mark II": (
        (0.4716, 0.0603, -0.0830), (-0.7798, 1.5474, 0.2480), (-0.1496, 0.1937, 0.6651)
    ),
    "Canon EOS 5D Mark III": (
        (0.6722, -0.0635, -0.0963), (-0.4287, 1.2460, 0.2028), (-0.0908, 0.2162, 0.5668)
    ),
}

WHITE_LEVELS = (4095, 15000, 16383)
_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


_KNEE, _OFFSET, _POWER, _SLOPE = GAMMA_TOE, GAMMA_OFFSET, GAMMA_POWER, GAMMA_SLOPE


def inverse_gamma(encoded: np.ndarray) -> np.ndarray:
    """Linear light from LibRaw-gamma-encoded values in [0, 1] (BT.709-like curve, not sRGB's)."""
    knee_out = _KNEE * _SLOPE
    power = ((encoded + _OFFSET) / (1 + _OFFSET)) ** (1 / _POWER)
    return np.where(encoded < knee_out, encoded / _SLOPE, power)


def inverse_smoothstep(image: np.ndarray) -> np.ndarray:
    """Brooks et al.'s inverse of the global tone curve 3x^2 - 2x^3."""
    image = np.clip(image, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * image) / 3.0)


def rgb_to_camera(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Linear sRGB -> white-balanced camera RGB, rows summing to 1 (LibRaw's cam_xyz_coeff)."""
    cam_rgb = np.asarray(xyz_to_cam, dtype=np.float64) @ XYZ_RGB
    return cam_rgb / cam_rgb.sum(axis=1, keepdims=True)


def mosaic(image: np.ndarray, cfa: str = "RGGB") -> np.ndarray:
    """(H, W, 3) -> (H, W) Bayer mosaic with the given 2x2 pattern."""
    out = np.empty(image.shape[:2], dtype=image.dtype)
    for i, letter in enumerate(cfa):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = image[dy::2, dx::2, "RGB".index(letter)]
    return out


def _load(src: str | Path | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a path or an array, cropped to even dimensions."""
    if isinstance(src, np.ndarray):
        image = src
    else:
        try:
            with Image.open(src) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise RawbitError(f"{src}: cannot read image ({e})") from e
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need an (H, W, 3) uint8 image, not {image.dtype} {image.shape}")
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if h < 16 or w < 16:
        raise RawbitError(f"image is too small ({image.shape[1]}x{image.shape[0]})")
    return image[:h, :w]


def unprocess(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: bool = True,
    cfa: str = "RGGB",
    tone_curve: bool = False,
    blur: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W, 3) uint8 sRGB -> (H, W) uint16 Bayer mosaic and the parameters chosen."""
    # Decode to the centre of each 8-bit bin of LibRaw's output (it truncates: curve[v] >> 8).
    encoded = (image.astype(np.float64) + 0.5) / 256.0
    if tone_curve:
        encoded = inverse_smoothstep(encoded)
    linear = inverse_gamma(encoded)
    camera = str(rng.choice(sorted(CAMERAS)))
    xyz_to_cam = np.array(CAMERAS[camera])
    cam = linear @ rgb_to_camera(xyz_to_cam).T
    # Saturated sRGB colours can fall outside the camera's gamut; LibRaw clips them the same way.
    clipped = float(np.mean(np.any((cam < 0.0) | (cam > 1.0), axis=-1)))
    cam = np.clip(cam, 0.0, 1.0)
    sigma = 0.0
    if blur:
        # The sources are photographs downscaled to 768 px: sharper per pixel than any sensor
        # behind a lens and an anti-aliasing filter (bilinear demosaic scores ~22 dB against AHD on
        # them, 39 dB on a real 12 MP camera). A Gaussian point spread of 0.5-1.1 px, in linear
        # light before mosaicking, gives them a real sensor's softness.
        from scipy.ndimage import gaussian_filter

        sigma = float(rng.uniform(0.5, 1.1))
        cam = gaussian_filter(cam, sigma=(sigma, sigma, 0), mode="reflect")
    # Brooks et al.'s white-balance ranges. Their extra brightness gain is left out: LibRaw renders
    # without auto-brightness, so it would only darken the reference rendering.
    gains = np.array([rng.uniform(1.9, 2.4), 1.0, rng.uniform(1.5, 1.9)])
    raw = mosaic(cam / gains, cfa)
    shot = read = 0.0
    if noise:
        # Brooks et al.'s log-linear shot/read model, upper end trimmed from 0.012 to keep it modest.
        log_shot = rng.uniform(np.log(1e-4), np.log(4e-3))
        shot = float(np.exp(log_shot))
        read = float(np.exp(2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)))
        raw = raw + rng.normal(size=raw.shape) * np.sqrt(np.maximum(raw, 0.0) * shot + read)
    white = int(rng.choice(WHITE_LEVELS))
    black = int(rng.integers(256, min(2048, white // 8) + 1))  # keep >= 7/8 of the range for signal
    # Noise may go below black (as on real sensors); only the ADC's range bounds the values.
    counts = np.clip(np.rint(black + raw * (white - black)), 0, white).astype(np.uint16)
    params = dict(
        camera=camera,
        color_matrix=xyz_to_cam.tolist(),
        wb_gains=gains.tolist(),
        as_shot_neutral=(1.0 / gains).tolist(),
        black_level=black,
        white_level=white,
        cfa=cfa,
        shot_noise=shot,
        read_noise=read,
        tone_curve=tone_curve,
        blur_sigma=sigma,
        clipped_fraction=clipped,
        size=(int(image.shape[1]), int(image.shape[0])),
    )
    return counts, params


def synthesize_dng(
    src: str | Path | np.ndarray,
    out_path: str | Path,
    *,
    seed: int,
    noise: bool = True,
    cfa: str = "RGGB",
    tone_curve: bool = False,
    blur: bool = True,
) -> dict[str, Any]:
    """Unprocess an sRGB photo to a Bayer DNG that LibRaw renders close to it; returns the choices."""
    rng = np.random.default_rng(seed)
    cfa = cfa.upper()
    if cfa == "RANDOM":
        cfa = str(rng.choice(CFA_PATTERNS))
    if cfa not in CFA_PATTERNS:
        raise ValueError(f"cfa must be one of {CFA_PATTERNS} or 'random', not {cfa!r}")
    counts, params = unprocess(_load(src), rng, noise=noise, cfa=cfa, tone_curve=tone_curve, blur=blur)
    write_dng(
        out_path,
        counts,
        cfa=cfa,
        black_level=params["black_level"],
        white_level=params["white_level"],
        as_shot_neutral=params["as_shot_neutral"],
        color_matrix=params["color_matrix"],
        model=f"synthetic ({params['camera']})",
    )
    return params


def file_seed(seed: int, name: str) -> int:
    """A per-file seed that depends only on the run's seed and the file name (not on the order)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def synthesize_folder(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    force: bool = False,
    blur: bool = True,
) -> list[Path]:
    """Unprocess every photo in src_dir to out_dir/<stem>.dng; existing ones are kept unless force."""
    from tqdm import tqdm

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise RawbitError(f"{src_dir}: no such directory")
    sources = sorted(p for p in src_dir.iterdir() if p.suffix.lower() in _EXTENSIONS and p.is_file())
    if not sources:
        raise RawbitError(f"{src_dir}: no images ({', '.join(sorted(_EXTENSIONS))})")
    if limit is not None:
        sources = sources[:limit]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot create directory ({e})") from e
    outputs = []
    for src in tqdm(sources, desc="synth", unit="img", file=sys.stderr, disable=not progress):
        out = out_dir / f"{src.stem}.dng"
        if force or not out.exists():
            synthesize_dng(src, out, seed=file_seed(seed, src.name), blur=blur)
        outputs.append(out)
    return outputs
