"""rawbit as a user installs it: a wheel that carries the default model and runs with no checkout."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE_DNG


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of what the build reads (a checkout's build/ could leak stale files)."""
    pytest.importorskip("setuptools", minversion="61")
    src = tmp_path_factory.mktemp("src")
    for name in ("rawbit", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                        "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)  # fmt: skip
    log = p.stdout + p.stderr
    assert p.returncode == 0, log
    # Setuptools' warnings for data folders that are not packages, and for deprecated settings.
    assert "would be ignored" not in log and "SetuptoolsDeprecationWarning" not in log, log
    (whl,) = dist.glob("rawbit-*.whl")
    return whl


def test_wheel_ships_every_module_every_preset_and_the_default_model_with_its_card(wheel):
    from rawbit.nets.registry import DEFAULT_MODEL

    shipped = set(zipfile.ZipFile(wheel).namelist())
    tree = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "rawbit").rglob("*")
        if p.suffix in (".py", ".json") and "__pycache__" not in p.parts
    }
    assert tree - shipped == set()
    assert {f"rawbit/models/{DEFAULT_MODEL}.safetensors", "rawbit/models/README.md"} <= shipped


def test_wheel_declares_every_third_party_module_rawbit_imports(wheel):
    z = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(z.read(metadata).decode())
    required = {_normal(re.split(r"[ ;<>=~!\[]", r)[0]) for r in meta.get_all("Requires-Dist")
                if "extra ==" not in r}  # fmt: skip
    providers = importlib.metadata.packages_distributions()
    for module in sorted(_imported_modules(ROOT / "rawbit")):
        dists = {_normal(d) for d in providers.get(module, [])}
        assert dists & required, f"rawbit imports {module} ({', '.join(dists) or '?'}), not in install_requires"


def test_installed_wheel_encodes_and_decodes_with_its_own_model_outside_the_checkout(wheel, tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    zipfile.ZipFile(wheel).extractall(site)  # what pip would put in site-packages
    work.mkdir()
    shutil.copy(SAMPLE_DNG, work / "sample.dng")
    env = {k: v for k, v in os.environ.items() if k != "RAWBIT_MODELS"}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install of this checkout
    script = (
        "import rawbit, rawbit.nets.registry as registry\n"
        "from rawbit.cli import main\n"
        "print(rawbit.__file__)\n"
        "print(registry.models_dir())\n"
        "for args in (['encode', 'sample.dng', '-o', 'sample.rbit'], ['decode', 'sample.rbit', '-o', 'sample.png']):\n"
        "    try:\n"
        "        main(args, prog_name='rawbit')\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
    )
    p = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    package, models = p.stdout.split()
    assert Path(package).is_relative_to(site) and Path(models) == site / "rawbit" / "models"
    assert (work / "sample.rbit").stat().st_size > 0 and (work / "sample.png").stat().st_size > 0


def _imported_modules(package: Path) -> set[str]:
    """Top-level third-party modules imported anywhere under `package`."""
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"rawbit", "__future__"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
