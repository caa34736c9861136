"""Shared fixtures: tifffile-written pyramidal slides and the real data under ../shared/data (skipped if absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathoseg.batch import run_batch
from pathoseg.config import load_config
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
    return write_synthetic_slide(
        tmp_path_factory.mktemp("slides") / "synthetic.svs", 2600, 1800, kind="svs", tile_px=256, min_level_px=512
    )


@pytest.fixture(scope="session")
def tiff_slide(tmp_path_factory) -> Path:
    """Generic pyramidal TIFF, JPEG tiles, mpp 0.5 (20x): the tiler must upsample to the model's 0.25."""
    return write_synthetic_slide(
        tmp_path_factory.mktemp("slides") / "synthetic.tiff",
        1400,
        1000,
        mpp=0.5,
        kind="tiff",
        tile_px=256,
        seed=3,
        min_level_px=256,
    )


@pytest.fixture(scope="session")
def archive(tmp_path_factory) -> Path:
    """A small slide archive: two 1500 x 1200 px synthetic slides in a sub-folder."""
    root = tmp_path_factory.mktemp("archive")
    (root / "cases").mkdir()
    for seed in (1, 2):
        write_synthetic_slide(root / "cases" / f"slide{seed}.svs", 1500, 1200, tile_px=256, min_level_px=256, seed=seed)
    return root


@pytest.fixture(scope="session")
def reference(archive, tmp_path_factory) -> Path:
    """The archive's in-process batch results (regions of 512 px), what every cluster run must reproduce."""
    from clusters import SMALL_CONFIG

    folder = tmp_path_factory.mktemp("reference")
    (folder / "small.yaml").write_text(SMALL_CONFIG)
    config = load_config(folder / "small.yaml", overrides={"cluster": {"scheduler": "inprocess"}})
    rows = run_batch(archive, folder / "results", config)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    return folder / "results"


DICOM_SERIES_UID = b"1.2.276.0.7230010.3.1.3.2425734838.4124713.1626788322.499658"


def copy_dicom_slide(folder, into, new_series_uid: bytes | None = None):
    """The DICOM slide's files copied into ``into``, each renamed, optionally as another series (the UID replaced
    by one of the same length, so the files stay valid)."""
    into.mkdir(parents=True, exist_ok=True)
    tag = (new_series_uid or b"")[-4:].decode()
    for path in sorted(folder.glob("*.dcm")):
        data = path.read_bytes()
        if new_series_uid:
            data = data.replace(DICOM_SERIES_UID, new_series_uid)
        (into / f"{tag}{path.name}").write_bytes(data)
    return into
