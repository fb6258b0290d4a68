"""Errors a photographer can read; the CLI turns them into exit code 1 and one line on stderr."""


class RawbitError(Exception):
    """Base class: every expected failure (bad input, bad file, missing model) is one of these."""


class RawReadError(RawbitError):
    """A RAW file cannot be read, or is not a Bayer mosaic the codec handles."""


class BitstreamError(RawbitError):
    """A .rbit file is damaged, truncated, or of a newer format."""


class ModelError(RawbitError):
    """A model or its weights cannot be found or loaded."""


class OutputError(RawbitError):
    """An output cannot be written (missing folder, permissions, full disk...)."""


class OutputExistsError(OutputError):
    """The output is already there, and overwriting was not asked for."""


class InputError(RawbitError):
    """An input file is missing or unreadable."""


def input_error(path, e: OSError) -> InputError:
    """An OSError met reading an input, as the one line a photographer reads."""
    if isinstance(e, FileNotFoundError):
        return InputError(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return InputError(f"{path}: is a folder, not a file")
    if isinstance(e, PermissionError):
        return InputError(f"{path}: cannot read (permission denied)")
    return InputError(f"{path}: cannot read ({(e.strerror or str(e)).lower()})")
