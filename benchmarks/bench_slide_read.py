"""What a slide's thumbnail costs (the first thing `segment` and `info` read), side by side per reader.

Writes one synthetic slide as an OME-TIFF pyramid (levels in SubIFDs, as QuPath and bfconvert write them) and the
same tiles as an Aperio SVS, then, each in a fresh process, finds the tissue (thumbnail at 8 µm/px) with:
OpenSlide on the OME-TIFF (which it reads as one level: the thumbnail is made from full resolution), pathoseg's reader
on the OME-TIFF (tifffile, every level) and OpenSlide on the SVS (the reference). Prints seconds and peak RSS.

    python benchmarks/bench_slide_read.py [--size 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pathoseg.synthetic import write_synthetic_slide
from pathoseg.system import cpu_capability

THUMBNAIL = """
import json, sys, time
import openslide
from pathoseg.config import load_config
from pathoseg.distributed import peak_rss_bytes
from pathoseg.io.slide import Slide, open_slide
from pathoseg.tiling.tissue import find_tissue
path, reader = sys.argv[1], sys.argv[2]
started = time.perf_counter()
slide = open_slide(path)
if reader == "openslide":
    slide = Slide(slide.path, openslide.OpenSlide(path), slide.mpp, slide.mpp_source)
mask, thumbnail = find_tissue(slide, load_config(None))
rss_mb = peak_rss_bytes() / 2**20
print(json.dumps({"seconds": time.perf_counter() - started, "levels": len(slide.level_dimensions),
                  "side_px": max(thumbnail.shape), "peak_rss_mb": rss_mb}))
"""


def measure(path: Path, reader: str) -> dict | str:
    """The figures of one reader, or the last line it printed when it failed."""
    run = subprocess.run([sys.executable, "-c", THUMBNAIL, str(path), reader], capture_output=True, text=True)
    if run.returncode:
        return (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
    return json.loads(run.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="slide side in px at 0.25 µm/px")
    args = parser.parse_args()
    print(f"CPU: {cpu_capability()}")
    with tempfile.TemporaryDirectory() as folder:
        ome = write_synthetic_slide(Path(folder) / "slide.ome.tif", args.size, args.size, kind="ome-tiff")
        svs = write_synthetic_slide(Path(folder) / "slide.svs", args.size, args.size, kind="svs")
        print(f"{args.size}x{args.size} px slide at 0.25 µm/px, tissue detection:")
        print(f"  {'file, reader':<22} {'levels':>6} {'thumbnail':>10} {'seconds':>8} {'peak RSS':>10}")
        for label, path, reader in (
            ("OME-TIFF, OpenSlide", ome, "openslide"),
            ("OME-TIFF, pathoseg", ome, "pathoseg"),
            ("SVS, OpenSlide", svs, "pathoseg"),
        ):
            figures = measure(path, reader)
            if isinstance(figures, str):
                print(f"  {label:<22} failed: {figures}")
                continue
            print(
                f"  {label:<22} {figures['levels']:>6} {figures['side_px']:>7} px {figures['seconds']:>8.2f} "
                f"{figures['peak_rss_mb']:>7.0f} MB"
            )


if __name__ == "__main__":
    main()
