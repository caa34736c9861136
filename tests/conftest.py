"""Shared fixtures: tifffile-written pyramidal slides and the real data under ../shared/data (skipped if absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathoseg.synthetic import write_synthetic_slide

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(relative: str) -> Path:
    """A path under ../shared/data; skips the test when it is not there."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(scope="session")
def svs_slide(tmp_path_factory) -> Path:
    """Aperio SVS, JPEG tiles, 3 levels, mpp 0.25 (40x)."""
    return write_synthetic_slide(tmp_path_factory.mktemp("slides") / "synthetic.svs", 2600, 1800, kind="svs",
                                 tile_px=256, min_level_px=512)


@pytest.fixture(scope="session")
def tiff_slide(tmp_path_factory) -> Path:
    """Generic pyramidal TIFF, JPEG tiles, mpp 0.5 (20x): the tiler must upsample to the model's 0.25."""
    return write_synthetic_slide(tmp_path_factory.mktemp("slides") / "synthetic.tiff", 1400, 1000, mpp=0.5,
                                 kind="tiff", tile_px=256, seed=3, min_level_px=256)
