"""Write examples/sample.dng: scikit-image's astronaut photo (512x512), unprocessed to a Bayer DNG."""

from __future__ import annotations

from pathlib import Path

from skimage import data

from rawbit.data.synth import synthesize_dng

OUT = Path(__file__).resolve().parent / "sample.dng"


def main() -> None:
    """Unprocess the astronaut with a fixed seed, so the sample is the same on every run."""
    params = synthesize_dng(data.astronaut(), OUT, seed=2024)
    print(
        f"wrote {OUT} ({OUT.stat().st_size} bytes): {params['camera']}, "
        f"black {params['black_level']}, white {params['white_level']}"
    )


if __name__ == "__main__":
    main()
