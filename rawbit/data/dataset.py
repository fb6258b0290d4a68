"""RAW-folder datasets: cached (packed RAW, reference rendering) pairs, a fixed split, aligned patches."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RawbitError
from ..files import atomic_writer, file_sha256
from ..raw import find_raw_files, orient, pack, pad_mosaic, read_raw, unpack
from ..render import RENDER_SETTINGS, reference_rendering

# Bump when packing changes: part of the cache key, as are the render settings.
_PACKING_VERSION = 3  # 3: mosaics padded to RGGB, not cropped
SPLITS = {"train": (0, 80), "val": (80, 85), "test": (85, 100)}


@dataclass
class Sample:
    """One RAW photo ready for training: packed planes, its reference rendering, its metadata."""

    name: str
    packed: np.ndarray  # (4, h, w) float32
    srgb: np.ndarray  # (2h, 2w, 3) uint8
    wb: np.ndarray  # (4,) float32
    cam_to_srgb: np.ndarray  # (3, 3) float32


def split_of(path: Path) -> str:
    """Deterministic 80:5:15 train/val/test split by file name, stable as a folder grows."""
    bucket = int(hashlib.sha1(path.name.encode()).hexdigest(), 16) % 100
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= bucket < hi)


def cache_key(path: Path) -> str:
    """Content hash + render settings + packing version: a changed setting never reuses a stale cache."""
    settings = json.dumps([RENDER_SETTINGS, _PACKING_VERSION], sort_keys=True, default=str)
    return hashlib.sha256((file_sha256(path) + settings).encode()).hexdigest()[:24]


def load_sample(path: Path, cache_dir: Path | None) -> Sample:
    """Read (or fetch from the cache) one photo's packed RAW and reference rendering."""
    cached = cache_dir / f"{cache_key(path)}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        z = np.load(cached)
        packed = z["packed"].astype(np.float32) / 65535.0
        return Sample(path.name, packed, z["srgb"], z["wb"], z["cam_to_srgb"])
    raw = read_raw(path)
    # The target covers the padded mosaic as the packed planes do; the few added rows/columns
    # mirror the photo's edge, as the padded photosites mirror the sensor's.
    srgb = pad_mosaic(reference_rendering(path), raw.pad)
    wb = np.asarray(raw.meta.wb, dtype=np.float32)
    ccm = np.asarray(raw.meta.cam_to_srgb, dtype=np.float32)
    # 16-bit storage: finer than any sensor's ADC, a quarter of float32 on disk.
    packed16 = np.round(raw.packed * 65535.0).astype(np.uint16)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(cached, force=True) as f:  # DDP ranks may race here: the last one wins
            np.savez(f, packed=packed16, srgb=srgb, wb=wb, cam_to_srgb=ccm)
    return Sample(path.name, packed16.astype(np.float32) / 65535.0, srgb, wb, ccm)


def load_split(
    paths, split: str | None, cache_dir: Path | None, progress: bool = True
) -> list[Sample]:
    """All readable samples of one split ('train', 'val', 'test' or None for all)."""
    from tqdm import tqdm

    files = [f for f in find_raw_files(paths) if split is None or split_of(f) == split]
    samples = []
    for f in tqdm(files, desc=f"loading {split or 'all'}", file=sys.stderr, disable=not progress):
        try:
            samples.append(load_sample(f, cache_dir))
        except RawbitError as e:
            print(f"skipped: {e}", file=sys.stderr)
    return samples


# --- aligned patches with Bayer-preserving augmentation ------------------------------------------

# Colour label of each photosite in an RGGB tile: R=0, G1=1, G2=2, B=3.
_RGGB_LABELS = np.array([[0, 1], [2, 3]])


def random_patch(
    sample: Sample, patch: int, rng: np.random.Generator, augment: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """A (4, patch, patch) RAW patch and its aligned (3, 2*patch, 2*patch) uint8 sRGB patch.

    Flips and rotations change which colour sits top-left; cutting a 2-pixel-larger window and
    dropping one row/column where needed restores RGGB without resampling (Liu et al., 2019).
    """
    _, h, w = sample.packed.shape
    margin = 1 if augment else 0
    if h < patch + margin or w < patch + margin:
        raise ValueError(f"{sample.name}: smaller than a {patch}px patch")
    i = int(rng.integers(0, h - patch - margin + 1))
    j = int(rng.integers(0, w - patch - margin + 1))
    size = 2 * (patch + margin)
    mosaic = unpack(sample.packed[:, i : i + patch + margin, j : j + patch + margin])
    srgb = sample.srgb[2 * i : 2 * i + size, 2 * j : 2 * j + size]
    if not augment:
        return pack(mosaic), srgb.transpose(2, 0, 1).copy()
    k = int(rng.integers(0, 8))
    labels = orient(np.tile(_RGGB_LABELS, (patch + 1, patch + 1)), k)
    mosaic, srgb = orient(mosaic, k), orient(srgb, k)
    dy, dx = map(int, np.argwhere(labels[:2, :2] == 0)[0])
    n = 2 * patch
    mosaic = mosaic[dy : dy + n, dx : dx + n]
    srgb = srgb[dy : dy + n, dx : dx + n]
    return pack(np.ascontiguousarray(mosaic)), srgb.transpose(2, 0, 1).copy()


def batch(
    samples: list[Sample], size: int, patch: int, rng: np.random.Generator, augment: bool = True
) -> dict[str, np.ndarray]:
    """A training batch: raw (B,4,p,p) float32, srgb (B,3,2p,2p) float32 in [0,1], wb, cam_to_srgb."""
    picks = rng.integers(0, len(samples), size=size)
    raws, srgbs = zip(*(random_patch(samples[k], patch, rng, augment) for k in picks))
    return {
        "raw": np.stack(raws).astype(np.float32),
        "srgb": np.stack(srgbs).astype(np.float32) / 255.0,
        "wb": np.stack([samples[k].wb for k in picks]),
        "cam_to_srgb": np.stack([samples[k].cam_to_srgb for k in picks]),
    }
