"""What a photographer does at the command line, and what must hold."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import ROOT, SAMPLE_DNG, needs_shared, shared_files, write_linear_dng, write_test_dng
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


def test_effort_changes_how_hard_the_encoder_looks_never_how_the_file_decodes(tmp_path, tiny_weights, encoded):
    fast = tmp_path / "fast.rbit"
    assert run("encode", SAMPLE_DNG, "-o", fast, "--model", tiny_weights, "--effort", "fast").exit_code == 0
    assert fast.read_bytes() == encoded.read_bytes()  # the default quality has no other way to weigh
    assert run("decode", fast, "-o", tmp_path / "fast.png", "--model", tiny_weights).exit_code == 0
    bad = run("encode", SAMPLE_DNG, "-o", tmp_path / "x.rbit", "--model", tiny_weights, "--effort", "max")
    assert bad.exit_code == 2 and "'max' is not one of 'fast', 'normal', 'best'" in bad.output
    assert not (tmp_path / "x.rbit").exists()


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


def test_max_pixels_refuses_a_photo_over_the_limit_and_allows_it_at_the_limit(tmp_path, tiny_weights, encoded):
    """A photographer decoding a 512x512 photo under a 100,000-pixel limit gets one line saying so."""
    result = run("decode", encoded, "-o", tmp_path / "x.png", "--model", tiny_weights, "--max-pixels", 100_000)
    assert_one_line_error(result)
    assert "over the decoder's limit of 100000 pixels" in result.stderr
    assert not (tmp_path / "x.png").exists()
    result = run("decode", encoded, "-o", tmp_path / "x.png", "--model", tiny_weights, "--max-pixels", 512 * 512)
    assert result.exit_code == 0, result.output


def test_a_huge_file_is_refused_from_its_header_without_being_read(tmp_path, tiny_weights, encoded):
    """info and decode read the header first: 1 GB of junk after a valid file costs no memory."""
    import subprocess
    import sys

    big = tmp_path / "big.rbit"
    with open(big, "wb") as f:
        f.write(encoded.read_bytes())
        f.truncate(2**30)  # sparse: no disk used
    code = ("import resource, sys; from rawbit.cli import main\n"
            "try: main(sys.argv[1:])\n"
            "except SystemExit as e: print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, e.code)")  # fmt: skip

    def peak_kib(*args: str) -> tuple[int, int, str]:
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        peak, exit_code = map(int, p.stdout.split()[-2:])
        return peak, exit_code, p.stderr

    baseline, exit_code, _ = peak_kib("info", str(encoded))  # the process itself: torch and all
    assert exit_code == 0
    for args in (["info", str(big)], ["decode", str(big), "-o", str(tmp_path / "x.png"), "--model", str(tiny_weights)]):
        peak, exit_code, stderr = peak_kib(*args)
        assert exit_code == 1 and "longer than its header says" in stderr, stderr
        assert peak < baseline + 200 * 1024, (peak, baseline)  # reading the file would add 1 GiB


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
    from rawbit.nets.registry import list_presets as architectures
    from rawbit.train.config import list_presets

    help_text = " ".join(run("train", "--help").output.split()).replace("- ", "-")  # wrapped at hyphens
    for name in list_presets() + architectures():
        assert name in help_text, name


# --- fast start: help is printed before torch or compressai is imported ------------------------------


def test_help_of_every_command_imports_neither_torch_nor_compressai():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from rawbit.cli import main\n"
        "for args in ([], ['encode'], ['decode'], ['info'], ['train'], ['synth'], ['bench']):\n"
        "    assert CliRunner().invoke(main, args + ['--help']).exit_code == 0, args\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'compressai'}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_rawbit_help_in_a_real_process_imports_no_torch():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "rawbit", "--help"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert p.returncode == 0 and p.stdout.startswith("Usage: rawbit"), p.stdout + p.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")]
    assert "click" in imported  # the measurement works
    assert [m for m in imported if m.split(".")[0] in ("torch", "compressai")] == []


# --- batches: no output replaces another output or an input; a bad input is one failure --------------


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _unreadable(path: Path) -> Path:
    """A photo this process cannot read: mode 000; or, for root (who reads it anyway), a folder."""
    path.write_bytes(b"not for you")
    path.chmod(0)
    try:
        path.read_bytes()
    except PermissionError:
        return path
    path.unlink()
    path.mkdir()
    return path


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Name -> (inode, mtime): a rewrite with the same bytes still shows."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_two_inputs_with_one_output_name_are_refused_before_anything_is_written(tmp_path, tiny_weights, force):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLE_DNG, tmp_path / folder / "IMG_0001.dng")  # every camera restarts at 0001
    out = tmp_path / "out"
    out.mkdir()
    args = ["encode", tmp_path / "a" / "IMG_0001.dng", tmp_path / "b" / "IMG_0001.dng", "-o", out,
            "--model", tiny_weights] + (["--force"] if force else [])  # fmt: skip
    result = run(*args)
    assert_one_line_error(result)
    assert "a/IMG_0001.dng" in result.stderr and "b/IMG_0001.dng" in result.stderr
    assert list(out.iterdir()) == []


def test_an_unreadable_input_is_one_failure_of_a_batch_of_five(tmp_path, tiny_weights):
    photos = [write_test_dng(tmp_path / f"p{i}.dng", height=160, width=192, seed=i) for i in range(4)]
    locked = _unreadable(tmp_path / "locked.dng")
    out = tmp_path / "out"  # not there yet: a batch creates its folder
    args = ["encode", *photos[:2], locked, *photos[2:], "-o", out, "--model", tiny_weights]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert sorted(_files(out)) == ["p0.rbit", "p1.rbit", "p2.rbit", "p3.rbit"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "locked.dng" in errors[0], result.stderr
    assert "encode: 4 done, 1 failed" in result.stderr and "Traceback" not in result.output

    before = _files(out)
    again = run(*args)  # the same batch once more, without --force: nothing is overwritten
    assert again.exit_code == 1 and "encode: 0 done, 5 failed" in again.stderr
    assert _files(out) == before


def test_a_vanished_input_is_one_failure_not_a_usage_error(tmp_path, tiny_weights, encoded):
    out = tmp_path / "png"
    result = run("decode", tmp_path / "gone.rbit", encoded, "-o", out, "--model", tiny_weights)
    assert result.exit_code == 1, result.output
    assert sorted(_files(out)) == ["photo.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {tmp_path / 'gone.rbit'}: no such file"]
    assert "decode: 1 done, 1 failed" in result.stderr


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_force_never_lets_an_output_replace_its_input(tmp_path, tiny_weights, encoded, command):
    src = shutil.copy(SAMPLE_DNG, tmp_path / "photo.dng") if command == "encode" else encoded
    before = Path(src).read_bytes()
    result = run(command, src, "-o", src, "--force", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "input" in result.stderr and Path(src).read_bytes() == before


def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path, tiny_weights, encoded):
    os.link(encoded, tmp_path / "photo.png")  # the default output, a hard link to the input
    before = encoded.read_bytes()
    result = run("decode", encoded, "--force", "--model", tiny_weights)
    assert_one_line_error(result)
    assert encoded.read_bytes() == before


# --- writing: one line for any write error, and nothing partial, ever ---------------------------------


def _mount_tmpfs(folder: Path, options: str) -> None:
    if not _is_root() or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small file system")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"mount not permitted here: {p.stderr.decode().strip()}")


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder no file can be written into: mode 555, or, for root, a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if _is_root():
        _mount_tmpfs(folder, "ro,size=64k")
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
        return
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture()
def full_disk(tmp_path):
    """A 64 KiB file system: a 512x512 PNG does not fit."""
    folder = tmp_path / "small"
    folder.mkdir()
    _mount_tmpfs(folder, "size=64k")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_read_only_output_folder_is_one_line(read_only_folder, tiny_weights):
    result = run("encode", SAMPLE_DNG, "-o", read_only_folder / "x.rbit", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "read-only file system" in result.stderr or "permission denied" in result.stderr
    assert list(read_only_folder.iterdir()) == []


def test_full_disk_is_one_line_and_leaves_nothing(full_disk, tiny_weights, encoded):
    result = run("decode", encoded, "-o", full_disk / "photo.png", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "disk is full" in result.stderr
    assert list(full_disk.iterdir()) == []


@pytest.mark.parametrize("temp", ["unnamed", "named"])
def test_a_write_failing_at_the_end_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, temp, encoded,
                                                                   tiny_weights):  # fmt: skip
    if temp == "named":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)  # as on a system without unnamed temp files

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    out = tmp_path / "out"
    out.mkdir()
    result = run("decode", encoded, "-o", out / "photo.png", "--model", tiny_weights)
    assert_one_line_error(result)
    assert "disk is full" in result.stderr and list(out.iterdir()) == []


@pytest.mark.parametrize("temp", ["unnamed", "named"])
def test_ctrl_c_mid_write_is_one_line_exit_130_and_leaves_nothing(tmp_path, monkeypatch, temp, tiny_weights):
    if temp == "named":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    result = run("encode", SAMPLE_DNG, "-o", out / "x.rbit", "--model", tiny_weights)
    assert result.exit_code == 130 and result.stderr.strip() == "Interrupted."
    assert list(out.iterdir()) == []


KILLED_WRITER = """
import os, sys, time
if sys.argv[2] == "named":
    del os.O_TMPFILE  # as on a system without unnamed temp files
from rawbit.files import atomic_writer
with atomic_writer(sys.argv[1]) as f:
    f.write(b"x" * 100_000)
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("temp", ["unnamed", "named"])
def test_kill_9_mid_write_leaves_nothing_once_the_next_write_has_run(tmp_path, temp):
    from rawbit.files import DEAD_WRITER_GRACE_S, write_atomic

    target = tmp_path / "photo.rbit"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), temp], cwd=ROOT,
                              stdout=subprocess.PIPE)  # fmt: skip
    assert writer.stdout.readline().strip() == b"writing"
    writer.kill()
    writer.wait()
    left = list(tmp_path.iterdir())
    assert not target.exists()
    if temp == "unnamed":
        assert left == []  # it never had a name
        return
    assert len(left) == 1 and left[0].name.startswith(".photo.rbit.") and left[0].name.endswith(".part")
    idle = os.stat(left[0]).st_mtime - DEAD_WRITER_GRACE_S - 1
    os.utime(left[0], (idle, idle))
    write_atomic(tmp_path / "next.rbit", b"the next run")  # sweeps the dead writer's file
    assert [p.name for p in tmp_path.iterdir()] == ["next.rbit"]


def test_the_sweep_removes_only_stale_temp_files_of_rawbit(tmp_path):
    import time

    from rawbit.files import STALE_AFTER_S, write_atomic

    dead, alive = _dead_pid(), os.getpid()
    now = time.time()
    files = {  # name -> (seconds idle, removed?)
        f".a.rbit.{dead}.0123abcd.part": (120, True),  # a crashed writer's
        f".b.rbit.{dead}.0123abcd.part": (5, False),  # just touched: a writer on another machine?
        f".c.rbit.{alive}.0123abcd.part": (120, False),  # a live writer's
        f".d.rbit.{alive}.0123abcd.part": (STALE_AFTER_S + 60, True),  # untouched for over an hour
        ".notes.part": (STALE_AFTER_S + 60, False),  # not rawbit's
    }
    for name, (idle, _) in files.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - idle, now - idle))
    write_atomic(tmp_path / "new.rbit", b"data")
    expected = {n for n, (_, removed) in files.items() if not removed} | {"new.rbit"}
    assert {p.name for p in tmp_path.iterdir()} == expected


def _dead_pid() -> int:
    """The PID of a process that has finished (and been reaped): it names no process now."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_interrupted_batch_is_one_line_and_exit_130(tmp_path, monkeypatch):
    import rawbit.api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rawbit.api, "encode", interrupted)
    result = run("encode", SAMPLE_DNG, "-o", tmp_path / "x.rbit")
    assert result.exit_code == 130 and result.stderr.strip() == "Interrupted."
    assert list(tmp_path.iterdir()) == []
