"""Shared fixtures: tiny models, DNGs the project writes itself, and ../shared/data when present."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE_DNG = ROOT / "examples" / "sample.dng"


def shared_files(sub: str) -> list[Path]:
    d = SHARED / sub
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix != ".tsv") if d.is_dir() else []


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")

# A training config small enough for a test: the tiny network, 64² patches, two rate points.
TINY_TRAIN = {
    "model": "rbn-tiny", "batch_size": 2, "patch": 64, "val_every": 1000, "checkpoint_every": 5,
    "val_images": 1, "val_crop": 128, "warmup": 2, "lambdas": [0.0067, 0.18],
}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """An untrained tiny RBN exported like a shipped model: enough for format and error tests."""
    from rawbit.nets import create_model
    from rawbit.nets.weights import export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    export(create_model("rbn-tiny"), path)
    return path


@pytest.fixture(scope="session")
def quality_weights(tmp_path_factory) -> Path:
    """The shipped default model if present, else a tiny model trained a few hundred steps here.

    Tests that judge pixels (PSNR windows) use this; no output is hard-coded either way.
    """
    from rawbit.nets.registry import DEFAULT_MODEL, list_models

    shipped = list_models().get(DEFAULT_MODEL)
    if shipped is not None:
        return shipped
    from rawbit.train.config import load_config
    from rawbit.train.loop import train

    cfg = load_config("cpu", {
        "model": "rbn-tiny", "steps": 300, "lr": 2e-3, "lr_final": 2e-4, "warmup": 20,
        "batch_size": 4, "patch": 64, "val_every": 1000, "checkpoint_every": 1000,
        "lambdas": [0.0067, 0.18],
    })  # fmt: skip
    out = tmp_path_factory.mktemp("trained")
    return train(cfg, [SAMPLE_DNG], out / "run", device="cpu", progress=False)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Six small synthetic DNGs to train on."""
    d = tmp_path_factory.mktemp("photos")
    for i in range(6):
        write_test_dng(d / f"p{i}.dng", height=160, width=192, seed=i)
    return d


def write_test_dng(path: Path, height: int = 256, width: int = 384, cfa: str = "RGGB",
                   orientation: int = 1, seed: int = 0, blocks: int = 0) -> Path:  # fmt: skip
    """A small synthetic DNG (the project's own writer): colour gradients with fine noise, or
    flat blocks (of `blocks` pixels) of random colours whose edges reveal any misalignment."""
    from rawbit.data.synth import synthesize_dng

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    if blocks:
        colours = rng.uniform(0.1, 0.9, size=(height // blocks + 1, width // blocks + 1, 3))
        img = colours[np.arange(height)[:, None] // blocks, np.arange(width)[None, :] // blocks]
    else:
        img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.6 - 0.4 * xx * yy], -1)
        img = img + 0.05 * rng.standard_normal(img.shape)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    synthesize_dng(img, path, seed=seed, noise=False, blur=False, cfa=cfa)
    if orientation != 1:
        _set_orientation(path, orientation)
    return path


def _set_orientation(path: Path, orientation: int) -> None:
    import tifffile

    with tifffile.TiffFile(str(path), mode="r+b") as tif:
        tif.pages[0].tags["Orientation"].overwrite(orientation)


def write_linear_dng(path: Path) -> Path:
    """A LinearRaw (already demosaiced) DNG, which the codec must refuse."""
    import tifffile

    data = (np.random.default_rng(0).random((64, 96, 3)) * 4000).astype(np.uint16)
    extratags = [
        (50706, "B", 4, (1, 4, 0, 0)),  # DNGVersion
        (50708, "s", 0, "rawbit linear test"),  # UniqueCameraModel
        (50721, "2i", 9, (10000, 10000, 0, 10000, 0, 10000, 0, 10000, 0, 10000, 0, 10000,
                          0, 10000, 0, 10000, 10000, 10000)),  # ColorMatrix1  # fmt: skip
    ]
    tifffile.imwrite(str(path), data, photometric=34892, extratags=extratags)
    return path
