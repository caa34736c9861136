"""Slide archives: one output folder per slide, a manifest, an archive-level table; resumable, failure-tolerant."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from pathoseg.config import Config
from pathoseg.distributed import RegionRunner
from pathoseg.errors import InputError, PathosegError
from pathoseg.io.files import DiskFullError, atomic_path
from pathoseg.io.slide import dicom_series
from pathoseg.outputs import flatten
from pathoseg.pipeline import segment_slide

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".svslide",
    ".bif",
    ".dcm",
    ".png",
    ".jpg",
    ".jpeg",
}
MANIFEST_FIELDS = ["slide", "output", "status", "nuclei", "seconds", "roi", "error"]
# What fails one slide and not the archive: its own input or output folder, or the filesystem it is read from.
SLIDE_ERRORS = (PathosegError, OSError)


def find_slides(archive: Path, pattern: str | None = None, exclude: Path | None = None) -> list[Path]:
    """Slides under ``archive`` (recursive), sorted; ``pattern`` is a glob on the file name. A DICOM slide, a
    series of files, counts once (``one_per_dicom_series``)."""
    archive = Path(archive)
    if not archive.is_dir():
        raise InputError(f"{archive}: archive folder not found")
    found = []
    for path in sorted(archive.rglob(pattern or "*")):
        if exclude and exclude.resolve() in path.resolve().parents:
            continue
        if path.is_file() and not path.name.startswith(".") and (pattern or path.suffix.lower() in SLIDE_SUFFIXES):
            found.append(path)
    return one_per_dicom_series(found, archive)


def one_per_dicom_series(paths: list[Path], archive: Path) -> list[Path]:
    """``paths`` with each folder's .dcm files replaced by one entry per DICOM slide: the folder where it holds one
    slide (below the archive), else one file of each. Where none of a folder's .dcm files opens as a slide, they
    stay, so that each is reported as unreadable."""
    dicom_by_folder: dict[Path, list[Path]] = {}
    for path in paths:
        if path.suffix.lower() == ".dcm":
            dicom_by_folder.setdefault(path.parent, []).append(path)
    kept = [path for path in paths if path.suffix.lower() != ".dcm"]
    for folder, files in dicom_by_folder.items():
        series = list(dicom_series(files).values())
        if len(series) == 1 and folder != archive:
            kept.append(folder)
        else:
            kept.extend(series or files)
    return sorted(kept)


def roi_for(slide: Path, roi_dir: Path | None) -> Path | None:
    """The slide's annotations in ``roi_dir``: ``<slide name>.geojson`` or ``<name without suffix>.geojson`` (either
    may be gzipped, ``.geojson.gz``); None where there is none."""
    if roi_dir is None:
        return None
    for stem in (slide.name, slide.stem):
        for suffix in (".geojson", ".geojson.gz"):
            if (roi_dir / f"{stem}{suffix}").is_file():
                return roi_dir / f"{stem}{suffix}"
    return None


def safe_name(slide: Path, archive: Path) -> str:
    """Output folder name for a slide: its path in the archive, flattened; never escapes the output folder."""
    relative = slide.relative_to(archive).as_posix()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", relative.replace("/", "__")).strip("._")
    return name or "slide"


def failed_row(row: dict, started: float, error: str) -> dict:
    """The manifest row of a slide that failed, with the error and the time it took."""
    return {**row, "status": "failed", "nuclei": "", "seconds": round(time.time() - started, 1), "error": error}


def read_batch_manifest(path: Path) -> dict[str, dict]:
    """A batch's manifest.csv as ``{slide: row}`` (empty when there is none yet)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["slide"]: row for row in csv.DictReader(handle)}


def write_table(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Write ``rows`` as a CSV table (atomically), with ``fields`` or every key the rows hold as columns."""
    fields = fields or sorted({key for row in rows for key in row})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


def archive_row(slide_key: str, summary: dict) -> dict:
    """One row of the archive-level table: counts, densities and IHC scores of a slide."""
    counts = summary["counts"]
    row = {
        "slide": slide_key,
        "nuclei": summary["nuclei"],
        "tissue_mm2": summary["tissue"]["area_mm2"],
        "density_per_mm2": round(counts["density_per_mm2"], 2),
        "stain_mode": summary["stain_mode"],
        "precision": summary["run"].get("precision", ""),
        "tissue_mm2_per_second": summary["run"].get("tissue_mm2_per_second"),
    }
    for name, values in counts["classes"].items():
        row[f"{name}_count"] = values["count"]
        row[f"{name}_per_mm2"] = round(values["density_per_mm2"], 2)
    if "ihc" in summary:
        row.update({f"ihc_{k}": v for k, v in flatten(summary["ihc"]).items() if not k.startswith("dab_thr")})
    return row


def run_batch(
    archive: Path,
    out_root: Path,
    config: Config,
    runner: RegionRunner | None = None,
    pattern: str | None = None,
    on_slide: Callable[[Path, str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    roi_dir: Path | None = None,
) -> list[dict]:
    """Segment every slide of ``archive`` into ``out_root/<safe name>/``; returns the manifest rows.

    A slide whose output is complete (summary.json present, manifest says ok, same annotation file) is skipped; a
    failing slide is recorded with its error and the batch goes on; an interrupted slide resumes from its store on
    the next run. With ``roi_dir``, a slide with annotations there (``roi_for``) is limited to them.
    """
    archive, out_root = Path(archive), Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    manifest_path = out_root / "manifest.csv"
    previous = read_batch_manifest(manifest_path)
    slides = find_slides(archive, pattern, exclude=out_root)
    rows, table = {}, []
    for slide in slides:
        key = slide.relative_to(archive).as_posix()
        out_dir = out_root / safe_name(slide, archive)
        roi = roi_for(slide, roi_dir)
        roi_name = roi.name if roi else ""
        before = previous.get(key, {})
        done = (
            before.get("status") in ("ok", "skipped")
            and before.get("roi", "") == roi_name
            and (out_dir / "summary.json").is_file()
        )
        if done:
            rows[key] = {**before, "status": "skipped"}
        else:
            started = time.time()
            row = {"slide": key, "output": out_dir.name, "roi": roi_name}
            try:
                summary = segment_slide(slide, out_dir, config, progress=progress, runner=runner, roi_path=roi)
                rows[key] = {
                    **row,
                    "status": "ok",
                    "nuclei": summary["nuclei"],
                    "seconds": round(time.time() - started, 1),
                    "error": "",
                }
            except DiskFullError:
                raise  # every later slide would fail the same way
            except SLIDE_ERRORS as error:
                log.warning("%s failed: %s", key, error)
                rows[key] = failed_row(row, started, str(error).splitlines()[0] if str(error) else repr(error))
            except Exception as error:  # a bug: the archive goes on, the row and the log say it is one
                log.exception("%s failed on a bug in pathoseg; please report it with this traceback", key)
                rows[key] = failed_row(
                    row,
                    started,
                    f"bug in pathoseg (please report it; traceback in the log): "
                    f"{error.__class__.__name__}: {error}".splitlines()[0],
                )
        if on_slide:
            on_slide(slide, rows[key]["status"])
        write_table(manifest_path, [*rows.values()], MANIFEST_FIELDS)
    for key, row in rows.items():
        summary_path = out_root / row["output"] / "summary.json"
        if row["status"] in ("ok", "skipped") and summary_path.is_file():
            table.append(archive_row(key, json.loads(summary_path.read_text())))
    if table:
        write_table(out_root / "archive_summary.csv", table)
    return [*rows.values()]
