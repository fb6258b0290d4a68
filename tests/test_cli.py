"""What a photographer does at the command line, and what must hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import SAMPLE_DNG, needs_shared, shared_files, write_linear_dng, write_test_dng
from rawbit.cli import main


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output


@pytest.fixture()
def encoded(tmp_path, tiny_weights) -> Path:
    out = tmp_path / "photo.rbit"
    result = run("encode", SAMPLE_DNG, "-o", out, "--model", tiny_weights)
    assert result.exit_code == 0, result.output
    return out


def test_encode_then_decode_gives_png_of_reference_size(tmp_path, tiny_weights, encoded):
    png = tmp_path / "photo.png"
    result = run("decode", encoded, "-o", png, "--model", tiny_weights)
    assert result.exit_code == 0, result.output
    from rawbit.api import reference

    ref = reference(SAMPLE_DNG)
    assert np.asarray(Image.open(png)).shape == ref.shape
    assert Image.open(png).getexif().get(0x010F) == "rawbit"  # the camera's make travels along
    assert not list(tmp_path.glob("*.part"))


def test_default_output_names_sit_beside_the_input(tmp_path, tiny_weights):
    dng = write_test_dng(tmp_path / "shot.dng")
    assert run("encode", dng, "--model", tiny_weights).exit_code == 0
    assert (tmp_path / "shot.rbit").is_file()
    assert run("decode", tmp_path / "shot.rbit", "--model", tiny_weights).exit_code == 0
    assert (tmp_path / "shot.png").is_file()


def test_sixteen_bit_png(tmp_path, tiny_weights, encoded):
    png = tmp_path / "p16.png"
    assert run("decode", encoded, "-o", png, "--bits", "16", "--model", tiny_weights).exit_code == 0
    import png as pypng

    w, h, _, info = pypng.Reader(filename=str(png)).read()
    assert info["bitdepth"] == 16 and (h, w) == (512, 512)


def test_orientation_is_applied_at_decode(tmp_path, tiny_weights):
    dng = write_test_dng(tmp_path / "portrait.dng", height=128, width=256, orientation=6)
    out = tmp_path / "portrait.png"
    assert run("encode", dng, "--model", tiny_weights).exit_code == 0
    assert run("decode", tmp_path / "portrait.rbit", "-o", out, "--model", tiny_weights).exit_code == 0
    assert np.asarray(Image.open(out)).shape == (256, 128, 3)
    from rawbit.api import reference

    assert reference(dng).shape == (256, 128, 3)  # the reference is turned the same way


def test_info_prints_header_as_json(encoded):
    import json

    result = run("info", encoded, "--json")
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    from rawbit.api import DEFAULT_QUALITY

    assert (d["width"], d["height"], d["quality"]) == (512, 512, DEFAULT_QUALITY)
    assert d["bytes"] == encoded.stat().st_size


def test_batch_goes_on_past_bad_files_and_fails_at_the_end(tmp_path, tiny_weights):
    good = write_test_dng(tmp_path / "good.dng")
    bad = tmp_path / "bad.NEF"
    bad.write_text("not a raw file")
    out = tmp_path / "out"
    out.mkdir()
    result = run("encode", bad, good, "-o", out, "--model", tiny_weights)
    assert result.exit_code == 1
    assert (out / "good.rbit").is_file() and not (out / "bad.rbit").exists()
    assert "bad.NEF" in result.stderr and "1 done, 1 failed" in result.stderr


# --- bad input: non-zero exit, one line on stderr, no traceback, no output file -----------------------


def test_text_file_named_nef_is_refused(tmp_path, tiny_weights):
    bad = tmp_path / "photo.NEF"
    bad.write_text("hello, I am not a photo\n")
    result = run("encode", bad, "-o", tmp_path / "x.rbit", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "photo.NEF" in result.stderr
    assert not (tmp_path / "x.rbit").exists()


def test_truncated_dng_is_refused(tmp_path, tiny_weights):
    cut = tmp_path / "cut.dng"
    cut.write_bytes(SAMPLE_DNG.read_bytes()[: SAMPLE_DNG.stat().st_size // 2])
    result = run("encode", cut, "-o", tmp_path / "x.rbit", "--model", tiny_weights)
    assert_one_line_error(result)
    assert not (tmp_path / "x.rbit").exists()


def test_linear_dng_is_refused(tmp_path, tiny_weights):
    lin = write_linear_dng(tmp_path / "linear.dng")
    result = run("encode", lin, "-o", tmp_path / "x.rbit", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "Bayer" in result.stderr
    assert not (tmp_path / "x.rbit").exists()


def test_truncated_rbit_is_refused(tmp_path, tiny_weights, encoded):
    cut = tmp_path / "cut.rbit"
    cut.write_bytes(encoded.read_bytes()[:-10])
    result = run("decode", cut, "-o", tmp_path / "x.png", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "truncated" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_rbit_with_one_flipped_byte_is_refused(tmp_path, tiny_weights, encoded):
    data = bytearray(encoded.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "flipped.rbit"
    bad.write_bytes(bytes(data))
    result = run("decode", bad, "-o", tmp_path / "x.png", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "damaged" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_rbit_for_unknown_model_is_refused(tmp_path, encoded):
    from rawbit import bitstream

    f = bitstream.parse(encoded.read_bytes())
    other = bitstream.build(f.__class__(**{**f.__dict__, "model_id": "ab" * 16}))
    bad = tmp_path / "other.rbit"
    bad.write_bytes(other)
    result = run("decode", bad, "-o", tmp_path / "x.png")
    assert_one_line_error(result)
    assert "not installed" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_output_in_missing_directory_is_refused(tmp_path, tiny_weights):
    target = tmp_path / "no" / "such" / "dir" / "x.rbit"
    result = run("encode", SAMPLE_DNG, "-o", target, "--model", tiny_weights)
    assert_one_line_error(result)
    assert not target.exists()


def test_existing_output_is_kept_without_force(tmp_path, tiny_weights, encoded):
    before = encoded.read_bytes()
    result = run("encode", SAMPLE_DNG, "-o", encoded, "--model", tiny_weights, "--quality", "1")
    assert_one_line_error(result)
    assert "--force" in result.stderr and encoded.read_bytes() == before
    assert run("encode", SAMPLE_DNG, "-o", encoded, "--model", tiny_weights, "--quality", "1",
               "--force").exit_code == 0  # fmt: skip
    assert encoded.read_bytes() != before


def test_real_process_prints_one_line_for_a_truncated_raw(tmp_path, tiny_weights):
    """LibRaw writes to the C stderr itself; the user must still see exactly one line."""
    cut = tmp_path / "cut.dng"
    cut.write_bytes(SAMPLE_DNG.read_bytes()[:3000])
    p = subprocess.run([sys.executable, "-m", "rawbit", "encode", str(cut), "--model", str(tiny_weights)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"Error: {cut}: truncated, damaged, or not a RAW photo"]
    assert not cut.with_suffix(".rbit").exists()


@needs_shared
@pytest.mark.parametrize("path", shared_files("unsupported"), ids=lambda p: p.name)
def test_shared_unsupported_raws_are_refused(tmp_path, tiny_weights, path):
    result = run("encode", path, "-o", tmp_path / "x.rbit", "--model", tiny_weights)
    assert_one_line_error(result)
    assert path.name in result.stderr


def test_help_shows_examples():
    for cmd in ("encode", "decode", "info", "train", "synth", "bench"):
        result = run(cmd, "--help")
        assert result.exit_code == 0 and "Example" in result.output, cmd


def test_train_help_names_every_preset():
    from rawbit.train.loop import list_presets

    help_text = " ".join(run("train", "--help").output.split()).replace("- ", "-")  # wrapped at hyphens
    for name in list_presets():
        assert name in help_text, name
