"""Writing outputs safely: atomic (temp + rename), never clobbering unless asked."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError


def check_writable(path: Path, force: bool) -> None:
    """Refuse before any work is done: an existing output without --force, or a missing folder."""
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: no such directory")


def write_atomic(path: Path, data: bytes, force: bool = False) -> None:
    """Write all of `data` to `path` or nothing: a crash never leaves a partial file behind."""
    check_writable(path, force)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's usual mode
        if not force and path.exists():  # someone else won the race: keep theirs
            raise OutputError(f"{path}: already exists (use --force to overwrite)")
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content (caches are keyed by content, not by name)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_input(path: Path) -> bytes:
    """Bytes of an input file, with a readable error when it is missing or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def png_bytes(image: np.ndarray, exif: bytes = b"") -> bytes:
    """(H, W, 3) uint8 or uint16 -> PNG bytes; EXIF kept for 8-bit (Pillow has no 16-bit RGB mode)."""
    buf = io.BytesIO()
    if image.dtype == np.uint16:
        import png  # pypng: writes 16-bit RGB, which Pillow cannot

        h, w, _ = image.shape
        png.Writer(w, h, greyscale=False, bitdepth=16).write(buf, image.reshape(h, w * 3))
    else:
        from PIL import Image

        Image.fromarray(image, "RGB").save(buf, format="PNG", exif=exif or None)
    return buf.getvalue()
