"""The README's commands, as written: the everyday ones run, and whatever any of them writes inside
the repository is ignored by git."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE_DNG

README = (ROOT / "README.md").read_text()
RAWBIT = Path(sys.executable).with_name("rawbit")  # the installed entry point, as a user runs it

needs_rawbit = pytest.mark.skipif(not RAWBIT.is_file(), reason="the rawbit command is not installed")
needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="not a git checkout")  # fmt: skip

# Options whose value is a path the command writes.
_OUTPUT_OPTIONS = ("-o", "--out", "--output", "-w")


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def command_lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip()]


def main_command_rawbit_parts() -> list[str]:
    """The rawbit commands of the README's first command line (the main job)."""
    parts = [p.strip() for p in sh_blocks(README)[0].split("&&")]
    return [p for p in parts if p.startswith("rawbit ")]


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{RAWBIT.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@needs_rawbit
def test_using_it_commands_run_as_written(tmp_path):
    # The photos they name, made from the sample (LibRaw reads a file by its content, not its name).
    shutil.copy(SAMPLE_DNG, tmp_path / "photo.NEF")
    (tmp_path / "shoot").mkdir()
    for name in ("IMG_0001.CR2", "IMG_0002.CR2"):
        shutil.copy(SAMPLE_DNG, tmp_path / "shoot" / name)
    outputs = {}
    for line in command_lines(sh_blocks(section("Using it"))[0]):
        p = _run(line, tmp_path)
        assert p.returncode == 0, f"{line}\n{p.stderr}"
        outputs[line.split("#")[0].strip()] = p.stdout
    # What the comments beside the commands promise.
    assert (tmp_path / "photo.rbit").is_file() and (tmp_path / "photo.png").is_file()
    assert sorted(os.listdir(tmp_path / "out")) == ["IMG_0001.rbit", "IMG_0002.rbit"]
    header = json.loads(outputs["rawbit info photo.rbit --json"])
    assert (header["width"], header["height"]) == (512, 512)


@needs_rawbit
def test_main_command_runs_as_written(tmp_path):
    (tmp_path / "examples").mkdir()
    shutil.copy(SAMPLE_DNG, tmp_path / "examples" / "sample.dng")
    for line in main_command_rawbit_parts():
        p = _run(line, tmp_path)
        assert p.returncode == 0, f"{line}\n{p.stderr}"
    assert (tmp_path / "sample.rbit").is_file() and (tmp_path / "sample.png").is_file()


@needs_git
def test_everything_the_readme_commands_write_in_the_repository_is_ignored():
    from rawbit.train.cli import train

    # "Using it" works on the user's own photos, wherever they are; every other command runs here.
    written = _written_paths(README.replace(section("Using it"), ""))
    assert {"sample.rbit", "sample.png", "dist", "runs/lite"} <= written  # the parse sees them
    written.add(next(p.default for p in train.params if p.name == "cache"))  # train --cache
    written |= {".venv", "rawbit.egg-info", "build"}  # python3 -m venv .venv; pip install -e .; pip wheel
    inside = sorted(str(p) for p in written if not Path(p).is_absolute() and not str(p).startswith(".."))
    not_ignored = [p for p in inside if not _ignored(p)]
    assert not_ignored == [], f"git would see these README outputs: {not_ignored}"


@needs_git
def test_files_the_tests_keep_are_not_ignored():
    assert not _ignored("tests/regressions/crash-0001.rbit")


def _written_paths(text: str) -> set[str]:
    """Values of output options in every sh block, relative to where the command runs."""
    paths: set[str] = set()
    for block in sh_blocks(text):
        for line in command_lines(block):
            tokens = shlex.split(line, comments=True)
            paths |= {tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in _OUTPUT_OPTIONS}
    return paths


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
