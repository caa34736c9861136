"""`pathoseg batch`: per-slide outputs, a manifest with the corrupt slide recorded, and a rerun that is a no-op."""

from __future__ import annotations

import csv
import json
import os
import shutil

from click.testing import CliRunner
from conftest import DICOM_SERIES_UID, copy_dicom_slide, shared

from pathoseg.batch import find_slides, safe_name
from pathoseg.cli import main
from pathoseg.synthetic import write_synthetic_slide


def read_rows(path):
    with open(path, newline="") as handle:
        return {row["slide"]: row for row in csv.DictReader(handle)}


def test_batch_archive_with_a_corrupt_slide(tmp_path):
    archive = tmp_path / "archive"
    (archive / "case 1").mkdir(parents=True)
    write_synthetic_slide(archive / "a.svs", 1100, 900, tile_px=256, min_level_px=256, seed=1)
    write_synthetic_slide(archive / "case 1" / "b.tiff", 900, 800, kind="tiff", tile_px=256, min_level_px=256, seed=2)
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


def test_a_dicom_slide_counts_once(tmp_path):
    """An archive's DICOM slide is a folder of files (one or more per level): one slide, named by its folder; a
    folder holding two is two slides; a .dcm file that is no slide is still listed, to be reported."""
    source = shared("slides/CMU-1-Small-Region-dicom")
    archive = tmp_path / "archive"
    copy_dicom_slide(source, archive / "case_a")
    copy_dicom_slide(source, archive / "case_b")
    copy_dicom_slide(source, archive / "case_b", DICOM_SERIES_UID[:-3] + b"777")
    (archive / "notes.dcm").write_bytes(b"DICM" + os.urandom(300))
    found = [path.relative_to(archive).as_posix() for path in find_slides(archive)]
    assert found == ["case_a", "case_b/9777level-0-frames-0-30.dcm", "case_b/level-0-frames-0-30.dcm", "notes.dcm"]

    (archive / "notes.dcm").unlink()
    shutil.rmtree(archive / "case_b")
    out = tmp_path / "results"
    fast = ["--model", "pathoseg-fast"]  # a quarter of the pixels; what is tested is how the slide is found and named
    result = CliRunner().invoke(
        main, ["batch", str(archive), "-o", str(out), "--scheduler", "inprocess", "--quiet", *fast]
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "manifest.csv")
    assert list(rows) == ["case_a"] and rows["case_a"]["status"] == "ok" and int(rows["case_a"]["nuclei"]) > 2000
    assert (out / "case_a" / "nuclei.geojson.gz").is_file()


def test_batch_limits_slides_to_their_annotations(tmp_path):
    """--roi-dir: a slide with <stem>.geojson there is limited to it; changing that redoes the slide."""
    archive, rois, out = tmp_path / "archive", tmp_path / "rois", tmp_path / "results"
    archive.mkdir()
    rois.mkdir()
    write_synthetic_slide(archive / "a.svs", 1100, 900, tile_px=256, min_level_px=256, seed=1)
    write_synthetic_slide(archive / "b.svs", 700, 600, tile_px=256, min_level_px=256, seed=2)
    (rois / "a.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {"name": "tumour"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[200, 200], [700, 200], [700, 600], [200, 600], [200, 200]]],
                },
            }
        )
    )
    args = ["batch", str(archive), "-o", str(out), "--scheduler", "inprocess", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--roi-dir", str(rois)])
    assert result.exit_code == 0, result.output
    rows = read_rows(out / "manifest.csv")
    assert (rows["a.svs"]["roi"], rows["b.svs"]["roi"]) == ("a.geojson", "")
    summary = json.loads((out / "a.svs" / "summary.json").read_text())
    assert [a["name"] for a in summary["roi"]["annotations"]] == ["tumour"]
    assert "roi" not in json.loads((out / "b.svs" / "summary.json").read_text())
    inside = int(rows["a.svs"]["nuclei"])

    again = CliRunner().invoke(main, args)  # no annotations now: a.svs is redone whole, b.svs was whole already
    assert again.exit_code == 0, again.output
    rows = read_rows(out / "manifest.csv")
    assert (rows["a.svs"]["status"], rows["b.svs"]["status"]) == ("ok", "skipped")
    assert int(rows["a.svs"]["nuclei"]) > inside > 0
