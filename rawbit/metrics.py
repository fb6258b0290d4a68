"""Rate and quality metrics, the one definition used by training, bench, API and tests.

bpp is a whole file's bytes x 8 over sRGB pixels (header included), or, in training, the bits the
entropy model's likelihoods promise over the same pixels; PSNR and MS-SSIM are on 8-bit sRGB
against the reference rendering (DESIGN.md)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

# pytorch-msssim's default per-scale weights (Wang et al. 2003): five scales.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN = 11  # Gaussian window of MS-SSIM
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
# The exchange rate of the encoder's choices (whether a correction filter pays for its bytes, which
# learned layer a detail layer goes over): each doubling of a file must buy this many dB. Along
# the shipped models' ladder the bitrate doubles for ~1.5-3 dB (docs/bench.md).
DB_PER_DOUBLING = 3.0


def bpp(nbytes: int, height: int, width: int) -> float:
    """Bits per sRGB pixel of a whole file of `nbytes` bytes (header and container included)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return nbytes * 8 / (height * width)


def rd_score(psnr_db: float, bits: float) -> float:
    """Higher is better: PSNR less DB_PER_DOUBLING for each doubling of the bits."""
    return psnr_db - DB_PER_DOUBLING * math.log2(bits)


def likelihood_bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """(B,) bits the entropy model spends on each sample: -log2 of every latent's likelihood
    (a zero that broadcasts, for a network without an entropy model such as an ISP-Net)."""
    if not likelihoods:
        return torch.zeros(())
    return sum(l.clamp_min(1e-9).log2().neg().flatten(1).sum(1) for l in likelihoods.values())


def psnr_from_mse(mse: Tensor) -> Tensor:
    """PSNR in dB of an MSE on the [0, 1] scale (training's images are floats in [0, 1])."""
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"need two (H, W, 3) images of one shape, got {a.shape} and {b.shape}")


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB of an 8-bit (H, W, 3) image over all pixels and channels; inf when identical."""
    _check_pair(reference, image)
    # float64 sum: float32 loses precision over the ~36 M values of a 12 MP photo.
    mse = np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian_window() -> np.ndarray:
    coords = np.arange(_WIN, dtype=np.float64) - _WIN // 2
    g = np.exp(-(coords**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _filter_valid(a: np.ndarray, window: np.ndarray) -> np.ndarray:
    # Separable Gaussian, "valid" part only (as conv2d without padding): crop the centred result.
    half = _WIN // 2
    out = ndimage.correlate1d(a, window, axis=0, output=np.float32, mode="constant")[half:-half]
    return ndimage.correlate1d(out, window, axis=1, output=np.float32, mode="constant")[:, half:-half]


def _ssim_cs(x: np.ndarray, y: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    c1, c2 = (_K1 * 255) ** 2, (_K2 * 255) ** 2
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx = _filter_valid(x * x, window) - mu_xx
    s_yy = _filter_valid(y * y, window) - mu_yy
    s_xy = _filter_valid(x * y, window) - mu_xy
    cs = (2 * s_xy + c2) / (s_xx + s_yy + c2)
    ssim = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs
    return float(ssim.mean(dtype=np.float64)), float(cs.mean(dtype=np.float64))


def _pool(a: np.ndarray) -> np.ndarray:
    # torch avg_pool2d(kernel 2, padding = size % 2, count_include_pad=True), as pytorch-msssim
    # downsamples: an odd side gets a zero on both ends and the last one is never used.
    a = np.pad(a, [(a.shape[0] % 2,) * 2, (a.shape[1] % 2,) * 2])
    h, w = a.shape[0] // 2, a.shape[1] // 2
    return a[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3), dtype=np.float32)


def ms_ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """MS-SSIM of two 8-bit (H, W, 3) images, in [0, 1]: pytorch-msssim's definition, via scipy.

    Same window (11 px, sigma 1.5), constants, weights and downsampling as pytorch_msssim.ms_ssim
    (tests check they agree to 1e-5), computed one channel at a time with separable scipy filters:
    about twice as fast as pytorch-msssim on one CPU thread, far faster than its OpenMP pool when the
    cores are shared (measured 1.3 s vs 0.014 s there), and a third of the memory on 12 MP photos. Five scales need a short side over 160 px; smaller images get NaN rather than a
    number computed with fewer scales that would not compare with anyone else's.
    """
    _check_pair(reference, image)
    if min(reference.shape[:2]) <= (_WIN - 1) * 2 ** (len(_MS_SSIM_WEIGHTS) - 1):
        return math.nan
    window = _gaussian_window()
    per_channel = []
    for c in range(3):
        x = reference[..., c].astype(np.float32)
        y = image[..., c].astype(np.float32)
        value = 1.0
        for level, weight in enumerate(_MS_SSIM_WEIGHTS):
            ssim, cs = _ssim_cs(x, y, window)
            if level < len(_MS_SSIM_WEIGHTS) - 1:
                value *= max(cs, 0.0) ** weight
                x, y = _pool(x), _pool(y)
            else:
                value *= max(ssim, 0.0) ** weight
        per_channel.append(value)
    return float(np.mean(per_channel))
