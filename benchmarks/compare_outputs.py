"""Are two runs' outputs the same? For refactors that must not change behaviour: run the same slide with the code
before and after, then compare every output file byte for byte, the run's own timings aside.

What a run may differ in without its outputs differing: ``summary.json``'s ``run`` (times, speeds, memory) and
``schema_version``, the same columns of ``summary.csv``, and the run line of ``report.html``. Everything else —
the GeoJSON files, images, the nuclei table, config, every other figure — must be identical.

    python benchmarks/compare_outputs.py OUT_BEFORE OUT_AFTER
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

RUN_LINE = re.compile(r"[\d.]+ s, [\d.]+ mm²/s of tissue \([\d.]+ Mpx/s at 0\.25 µm/px\)")
NOT_COMPARED = ("store.zarr", ".pathoseg.lock", "demo.svs")


def normalised(path: Path) -> bytes:
    """The file's bytes, less what a rerun of the same code changes."""
    data = path.read_bytes()
    if path.name == "summary.json":
        summary = json.loads(data)
        summary.pop("run", None)
        summary.pop("schema_version", None)
        return json.dumps(summary, sort_keys=True).encode()
    if path.name == "summary.csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, name in enumerate(rows[0]) if not name.startswith("run") and name != "schema_version"]
        return "\n".join(",".join(row[i] for i in keep) for row in rows).encode()
    if path.name == "report.html":
        return RUN_LINE.sub("(run)", data.decode()).encode()
    return data


def compare(before: Path, after: Path) -> bool:
    names = sorted({p.name for p in before.iterdir()} | {p.name for p in after.iterdir()})
    same_everywhere = True
    print(f"{'file':24s} {'before (sha256, normalised)':30s} {'after':30s} same")
    for name in names:
        if name in NOT_COMPARED:
            continue
        digests = [
            hashlib.sha256(normalised(folder / name)).hexdigest()[:16] if (folder / name).is_file() else "(missing)"
            for folder in (before, after)
        ]
        same = digests[0] == digests[1]
        same_everywhere &= same
        print(f"{name:24s} {digests[0]:30s} {digests[1]:30s} {'yes' if same else 'NO'}")
    return same_everywhere


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    sys.exit(0 if compare(args.before, args.after) else 1)


if __name__ == "__main__":
    main()
