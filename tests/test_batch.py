"""`pathoseg batch`: per-slide outputs, a manifest with the corrupt slide recorded, and a rerun that is a no-op."""

from __future__ import annotations

import csv
import os

from click.testing import CliRunner

from pathoseg.batch import safe_name
from pathoseg.cli import main
from pathoseg.synthetic import write_synthetic_slide


def read_rows(path):
    with open(path, newline="") as handle:
        return {row["slide"]: row for row in csv.DictReader(handle)}


def test_batch_archive_with_a_corrupt_slide(tmp_path):
    archive = tmp_path / "archive"
    (archive / "case 1").mkdir(parents=True)
    write_synthetic_slide(archive / "a.svs", 1100, 900, tile_px=256, min_level_px=256, seed=1)
    write_synthetic_slide(archive / "case 1" / "b.tiff", 900, 800, kind="tiff", tile_px=256, min_level_px=256,
                          seed=2)
    (archive / "broken.svs").write_bytes(b"II*\x00" + os.urandom(2000))
    out = tmp_path / "results"
    args = ["batch", str(archive), "-o", str(out), "--scheduler", "inprocess", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "manifest.csv")
    assert {k: r["status"] for k, r in rows.items()} == {"a.svs": "ok", "case 1/b.tiff": "ok", "broken.svs": "failed"}
    assert "broken.svs" in rows["broken.svs"]["error"]
    assert int(rows["a.svs"]["nuclei"]) > 50
    assert (out / "case_1__b.tiff" / "nuclei.geojson.gz").is_file()
    table = read_rows(out / "archive_summary.csv")
    assert set(table) == {"a.svs", "case 1/b.tiff"}
    assert "1 failed" in result.output

    mtime = (out / "a.svs" / "nuclei.geojson.gz").stat().st_mtime_ns
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0
    rows = read_rows(out / "manifest.csv")
    assert rows["a.svs"]["status"] == rows["case 1/b.tiff"]["status"] == "skipped"
    assert (out / "a.svs" / "nuclei.geojson.gz").stat().st_mtime_ns == mtime, "finished slides are not redone"


def test_safe_names_stay_inside(tmp_path):
    archive = tmp_path / "a"
    for relative in ["d e/f.svs", "..hidden/..x.svs", "ünï/cödé$.ndpi", "a/b/c/../d.tiff"]:
        name = safe_name(archive / relative, archive)
        assert "/" not in name and name not in ("", ".", "..") and not name.startswith(".")
        assert (tmp_path / "out" / name).resolve().parent == (tmp_path / "out").resolve()
