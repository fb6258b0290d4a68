"""The classical ISP (rawbit.isp) is LibRaw's bilinear pipeline, differentiable.

What must hold: on any Bayer RAW, rendering the packed planes with the file's white balance and
colour matrix gives LibRaw's own `LINEAR` rendering (reference settings otherwise) to within
rounding, >= 45 dB; gradients reach the planes; the "isp" decoder head renders through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rawpy
import torch

from rawbit import isp
from rawbit.metrics import psnr
from rawbit.raw import open_raw, read_raw
from rawbit.render import RENDER_SETTINGS

from conftest import needs_shared, shared_files, write_test_dng


def libraw_linear(path: Path) -> np.ndarray:
    """LibRaw's bilinear rendering of the whole visible area (what decode gives back)."""
    settings = dict(RENDER_SETTINGS, demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR)
    with open_raw(path) as raw:
        h, w = raw.raw_image_visible.shape
        return raw.postprocess(**settings)[:h, :w]


def _psnr_against_libraw(path: Path) -> float:
    return psnr(isp.render_raw(read_raw(path)), libraw_linear(path))


@pytest.mark.parametrize("cfa", ["RGGB", "GRBG", "GBRG", "BGGR"])
def test_renders_the_projects_dngs_as_libraw_linear_does(tmp_path, cfa):
    dng = write_test_dng(tmp_path / f"{cfa}.dng", cfa=cfa, seed=3, blocks=7)
    assert _psnr_against_libraw(dng) >= 45.0


def test_blown_highlights_stay_white_as_in_libraw(tmp_path):
    # A frame pushed past full scale: LibRaw clips each channel after white balance, so the
    # saturated area renders white; clipping after the matrix instead would tint it.
    dng = write_test_dng(tmp_path / "bright.dng", seed=4)
    raw = read_raw(dng)
    raw.packed = np.clip(raw.packed * 4.0, 0, 1)
    out = isp.render_raw(raw)
    assert (out[raw.packed.min(0).repeat(2, 0).repeat(2, 1) >= 1.0] == 255).all()


@needs_shared
@pytest.mark.parametrize("path", shared_files("raw") + shared_files("raw-more"), ids=lambda p: p.name)
def test_renders_every_real_raw_as_libraw_linear_does(path):
    assert _psnr_against_libraw(path) >= 45.0


def test_gradients_reach_the_sensor_planes():
    planes = torch.rand(1, 4, 8, 8, dtype=torch.float64) * 0.5
    planes.requires_grad_(True)
    out = isp.render(planes, torch.tensor([[2.0, 1.0, 1.0, 1.5]], dtype=torch.float64),
                     torch.eye(3, dtype=torch.float64)[None])  # fmt: skip
    out.mean().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_the_curve_is_libraws_bt709_with_its_solved_toe():
    x = torch.tensor([0.0, 0.01, 0.5, 1.0], dtype=torch.float64)
    y = isp.gamma_curve(x)
    assert y[0] == 0 and abs(float(y[1]) - 0.045) < 1e-9  # linear toe, slope 4.5
    assert abs(float(y[3]) - 1.0) < 1e-6 and 0.7 < float(y[2]) < 0.75


def test_isp_decoder_needs_the_colour_matrix_and_renders_through_it():
    from rawbit.nets import create_model

    model = create_model("rbn-tiny", output="isp").eval()
    assert model.needs_colour
    y = torch.zeros(1, model.config.latent_channels, 2, 2)
    with pytest.raises(ValueError):
        model.synthesize(y)
    with torch.no_grad():
        a = model.synthesize(y, cam_to_srgb=torch.eye(3)[None])
        b = model.synthesize(y, cam_to_srgb=(torch.eye(3) * 0.5)[None])
    assert a.shape == (1, 3, 2 * model.config.latent_stride, 2 * model.config.latent_stride)
    assert not torch.allclose(a, b)  # colour comes from the matrix given, not from the weights
