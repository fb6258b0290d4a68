"""`rawbit encode` and `rawbit decode` reuse the large blocks they free instead of having the kernel
fault them in again (rawbit/allocator.py); other commands and the library leave the C allocator as
it is."""

import subprocess
import sys

import pytest

from click.testing import CliRunner

from rawbit import allocator
from rawbit.cli import main

# A child process: allocate 200 MB, free it, allocate it again; print the page faults of the second.
_REUSE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from rawbit.allocator import keep_freed_memory
    assert keep_freed_memory()
np.ones(25_000_000)  # 200 MB, touched, then freed at once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
again = np.ones(25_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_a_freed_block_is_reused_without_the_kernel_faulting_it_in_again():
    kept, fresh = _faults("keep"), _faults("default")
    assert kept * 10 < fresh, (kept, fresh)


def test_rawbit_encode_and_decode_keep_freed_memory_and_other_commands_and_the_library_do_not(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    import rawbit.api  # noqa: F401  (the library: no call)

    assert calls == []
    absent = str(tmp_path / "absent.rbit")
    assert CliRunner().invoke(main, ["info", absent]).exit_code == 1
    assert calls == []
    assert CliRunner().invoke(main, ["encode", str(tmp_path / "absent.dng"), "-o", absent]).exit_code == 1
    assert calls == [1]
    assert CliRunner().invoke(main, ["decode", absent, "-o", str(tmp_path / "x.png")]).exit_code == 1
    assert calls == [1, 1]
