"""Reading inputs and writing outputs safely: every write is all or nothing, never clobbers a file
unless asked, and leaves no temp file behind, whatever happens to the process.

How a write works (`atomic_writer`, used by every writer in rawbit):

- The data goes to an unnamed temp file in the target's folder (Linux `O_TMPFILE`): until it is
  complete and synced it has no name, so a crash, even `kill -9`, leaves nothing behind. It gets its
  name in one step at the end: a hard link, which fails rather than replace a file that appeared in
  the meantime, or, with `force`, a rename over the old file.
- Where the OS or file system has no unnamed temp files, the temp file is a hidden
  `.NAME.PID.XXXXXXXX.part` beside the target. A process killed at the wrong moment can leave one;
  the next write into that folder removes it once it is stale: untouched for an hour, or untouched
  for a minute and its PID no longer a running process on this machine (a writer on another machine
  of a network share keeps touching its file while it writes).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import OutputError, OutputExistsError, input_error

# The hidden temp file of the fallback path: .NAME.PID.8-hex-digits.part
_PART = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.part$")
STALE_AFTER_S = 3600  # any .part file untouched this long belongs to no live writer
DEAD_WRITER_GRACE_S = 60  # a .part file of a dead PID, untouched this long, is stale

# O_TMPFILE unsupported by this kernel or file system (the answers differ between versions).
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL, errno.ENOENT}
# os.link on a file system without hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
_cleaned: set[Path] = set()  # folders already swept by this process


def check_writable(path: Path, force: bool) -> None:
    """Refuse before any work is done: an existing output unless `force`, or a missing folder."""
    path = Path(path)
    if path.exists() and not force:
        raise _exists(path)
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: no such directory")


@contextlib.contextmanager
def atomic_writer(path: str | Path, force: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s content into: on a clean exit it becomes `path` whole; on an
    error, or a crash, `path` is left as it was. Write errors (permissions, read-only or full file
    system) become one OutputError."""
    path = Path(path)
    check_writable(path, force)
    _sweep_stale_parts(path.parent)
    try:
        f, temp_name = _open_temp(path)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            temp_name = _publish(f, temp_name, path, force)
    except OSError as e:
        raise _write_error(path, e) from e
    finally:
        if temp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)


def write_atomic(path: str | Path, data: bytes, force: bool = False) -> None:
    """Write all of `data` to `path` or nothing (see atomic_writer)."""
    with atomic_writer(path, force) as f:
        f.write(data)


def _open_temp(path: Path) -> tuple[BinaryIO, Path | None]:
    """An unnamed temp file in path's folder (name None), else a hidden .part file beside path.
    Mode 0o666 less the umask, like any file the user creates."""
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.open(path.parent, os.O_TMPFILE | os.O_RDWR, 0o666)
            return _file(fd, f"/proc/self/fd/{fd}"), None
        except OSError as e:
            if e.errno not in _NO_TMPFILE:
                raise
    name = _part_name(path)
    return _file(os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), str(name)), name


def _file(fd: int, name: str) -> BinaryIO:
    f = os.fdopen(fd, "w+b")
    f.raw.name = name  # writers such as tifffile want a path-like name, not the fd number
    return f


def _part_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _publish(f: BinaryIO, temp_name: Path | None, path: Path, force: bool) -> Path | None:
    """Give the complete temp file its name; returns the temp name still to remove, if any."""
    if temp_name is None:  # unnamed: it is linked in through /proc
        source = f"/proc/self/fd/{f.fileno()}"
        if not force:
            _link_new(source, path)
            return None
        temp_name = _part_name(path)  # the data is complete: a crash now leaves a stale .part at most
        _link(source, temp_name)
    try:
        if force:
            os.replace(temp_name, path)
        else:
            _link_new(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    return None if force else temp_name


def _link_new(source: str | Path, path: Path) -> None:
    """Create `path` as a link to source, refusing to replace a file that appeared meanwhile."""
    try:
        _link(source, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS or not isinstance(source, Path):  # /proc links can't move
            raise
        # FAT and some network shares (camera cards, NAS) have no hard links: check, then rename.
        if path.exists():
            raise _exists(path) from None
        os.replace(source, path)


def _link(source: str | Path, path: Path) -> None:
    """os.link that follows a /proc/self/fd link to its file. Plain link(2) would link the magic
    symlink itself (EXDEV); given a directory fd, os.link calls linkat with AT_SYMLINK_FOLLOW."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(source, path.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def _exists(path: Path) -> OutputExistsError:
    return OutputExistsError(f"{path}: already exists, left as it is")


def _write_error(path: Path, e: OSError) -> OutputError:
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }.get(e.errno, (e.strerror or str(e)).lower())
    return OutputError(f"{path}: cannot write ({reason}); nothing was written")


def _sweep_stale_parts(folder: Path) -> None:
    """Remove the .part files crashed writers left in `folder` (once per folder and process)."""
    folder = folder.resolve()
    if folder in _cleaned:
        return
    _cleaned.add(folder)
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            m = _PART.match(entry.name)
            if m is None or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                idle = now - entry.stat(follow_symlinks=False).st_mtime
                dead = idle > DEAD_WRITER_GRACE_S and not _pid_alive(int(m["pid"]))
                if idle > STALE_AFTER_S or dead:
                    os.unlink(entry.path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content (caches are keyed by content, not by name)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_readable(path: Path) -> None:
    """Refuse an input that is missing, a folder, or unreadable, before any work on it."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise input_error(path, e) from e


def png_bytes(image, exif: bytes = b"") -> bytes:
    """(H, W, 3) uint8 or uint16 -> PNG bytes; EXIF kept for 8-bit (Pillow has no 16-bit RGB mode)."""
    buf = io.BytesIO()
    if image.dtype == "uint16":
        import png  # pypng: writes 16-bit RGB, which Pillow cannot

        h, w, _ = image.shape
        png.Writer(w, h, greyscale=False, bitdepth=16).write(buf, image.reshape(h, w * 3))
    else:
        from PIL import Image

        Image.fromarray(image, "RGB").save(buf, format="PNG", exif=exif or None)
    return buf.getvalue()
