"""The GeoJSON writer: features one at a time or as fragments rendered elsewhere (Dask workers) give one file."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess

import numpy as np
import pytest

from pathoseg.io.geojson import FeatureCollectionWriter, encode_fragment, features_text, nucleus_feature, read_features


def square_feature(i: int) -> dict:
    ring = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float) + 10 * i
    return nucleus_feature(ring, "Tumor", [200, 0, 0], {"Nucleus: Area µm^2": 4.0 + i}, f"slide:{i}")


@pytest.mark.parametrize("name", ["nuclei.geojson.gz", "nuclei.geojson"])
def test_fragments_and_single_features_make_the_same_collection(tmp_path, name):
    features = [square_feature(i) for i in range(7)]
    with FeatureCollectionWriter(tmp_path / f"one-{name}") as writer:
        for feature in features:
            writer.write(feature)
    compress = name.endswith(".gz")
    with FeatureCollectionWriter(tmp_path / f"fragments-{name}") as writer:
        for part in ([], features[:3], [], features[3:4], features[4:]):
            writer.write_fragment(encode_fragment(features_text(part), compress), len(part))
    assert writer.count == 7
    one, fragments = ((tmp_path / f"{kind}-{name}").read_bytes() for kind in ("one", "fragments"))
    if compress:
        assert fragments.count(b"\x1f\x8b\x08") >= 4  # gzip members, read as one stream
        one, fragments = gzip.decompress(one), gzip.decompress(fragments)
    assert one == fragments
    assert json.loads(fragments)["features"] == features == read_features(tmp_path / f"fragments-{name}")


def test_a_collection_without_features_is_valid(tmp_path):
    with FeatureCollectionWriter(tmp_path / "none.geojson.gz") as writer:
        writer.write_fragment(encode_fragment("", True), 0)
    assert json.loads(gzip.decompress((tmp_path / "none.geojson.gz").read_bytes())) == {
        "type": "FeatureCollection",
        "features": [],
    }


JAVA_GUNZIP = """
import java.io.*;
import java.util.zip.GZIPInputStream;
public class Gunzip {
    public static void main(String[] args) throws IOException {
        try (InputStream in = new GZIPInputStream(new FileInputStream(args[0]))) { in.transferTo(System.out); }
    }
}
"""


def test_java_reads_the_gzip_members_as_qupath_would(tmp_path):
    """QuPath is Java: its GZIPInputStream must read the whole series of members, not stop after the first."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java here")
    path = tmp_path / "nuclei.geojson.gz"
    features = [square_feature(i) for i in range(5)]
    with FeatureCollectionWriter(path) as writer:
        for part in (features[:2], features[2:]):
            writer.write_fragment(encode_fragment(features_text(part), True), len(part))
    (tmp_path / "Gunzip.java").write_text(JAVA_GUNZIP)
    read = subprocess.run(
        [java, str(tmp_path / "Gunzip.java"), str(path)], capture_output=True, check=True, timeout=120
    ).stdout
    assert read == gzip.decompress(path.read_bytes()) and json.loads(read)["features"] == features


def adversarial_rings() -> list[np.ndarray]:
    """Outlines that QuPath's 0.01 px snapping breaks or that are broken already: a bow-tie, two lobes joined by a
    neck narrower than the grid, a sliver, a near-touching fold, a spike, a ring smaller than the grid."""
    return [
        np.array([[0, 0], [10, 10], [10, 0], [0, 10]], float),
        np.array(
            [
                [0, 0],
                [4, 0],
                [4, 1.998],
                [6, 1.998],
                [6, 0],
                [10, 0],
                [10, 4],
                [6, 4],
                [6, 2.002],
                [4, 2.002],
                [4, 4],
                [0, 4],
            ],
            float,
        ),
        np.array([[0, 0], [20, 0.003], [20, 0.006], [0, 0.004]], float),
        np.array([[0, 0], [10, 0], [10, 10], [5.003, 10], [5.003, 2], [4.997, 2], [4.997, 10], [0, 10]], float),
        np.array([[0, 0], [10, 0], [10, 5], [30, 5.001], [10, 5.002], [10, 10], [0, 10]], float),
        np.array([[0, 0], [0.004, 0], [0.004, 0.004]], float),
    ]


def test_snapped_outlines_are_valid_on_qupaths_grid():
    from qupath_rules import valid_on_qupath_grid
    from shapely.geometry import Polygon

    from pathoseg.io.geojson import snap_rings

    rings = adversarial_rings()
    assert not any(valid_on_qupath_grid(Polygon(ring)) for ring in rings[:2] + rings[3:]), "they do break QuPath"
    snapped, repaired = snap_rings(rings)
    assert repaired == 5  # all but the sliver, which stays valid when rounded
    assert snapped[-1] is None  # nothing left of a ring smaller than the grid
    for ring in snapped[:-1]:
        assert ring is not None and valid_on_qupath_grid(Polygon(ring))
        assert np.array_equal(ring, np.round(ring, 2))
    assert Polygon(snapped[1]).area == pytest.approx(16, abs=0.1)  # the larger lobe of the pinched ring


def test_real_outlines_stay_valid_at_any_offset_and_scale():
    """Every nucleus of a real annotation (MoNuSeg, touching nuclei included), traced as segment traces them, stays
    valid once snapped, placed at odd sub-pixel offsets and scales (0.25 and 0.5 µm/px models on 0.25-0.5 slides)."""
    from conftest import shared
    from PIL import Image
    from qupath_rules import valid_on_qupath_grid
    from shapely.geometry import Polygon

    from pathoseg.io.geojson import snap_rings
    from pathoseg.stitch.polygons import instance_polygons

    labels = np.asarray(Image.open(shared("monuseg/train") / "labels" / "TCGA-21-5784-01Z-00-DX1.png")).astype(np.int32)
    outlines = [np.asarray(p.exterior.coords)[:-1] for p in instance_polygons(labels) if p is not None]
    assert len(outlines) > 300
    for scale, offset in ((1.0, 0.0), (2.0, 1234.567), (0.5, 0.0051), (1.0 / 0.499 * 0.25, 77.777)):
        snapped, _ = snap_rings([ring * scale + offset for ring in outlines])
        assert all(ring is not None and valid_on_qupath_grid(Polygon(ring)) for ring in snapped)


def good_annotation() -> dict:
    from shapely.geometry import MultiPolygon, box

    from pathoseg.io.geojson import annotation_feature

    return annotation_feature(
        MultiPolygon([box(0, 0, 10, 10), box(20, 0, 30, 10)]),
        "QC: Pen ink",
        [0, 160, 0],
        {"Tiles": 2},
        "slide:qc:ink",
        "QC: Pen ink",
    )


# Each breaks one of QuPath's import rules (REFERENCE.md): the whole file is rejected, or objects are silently
# changed or dropped.
BREAKS = {
    "colour as a string": lambda f: f["properties"]["classification"].update(color="#ff0000"),
    "no colour": lambda f: f["properties"]["classification"].pop("color"),
    "null geometry": lambda f: f.update(geometry=None),
    "text measurement": lambda f: f["properties"]["measurements"].update(Area="12"),
    "null measurement": lambda f: f["properties"]["measurements"].update(Area=None),
    "boolean measurement": lambda f: f["properties"]["measurements"].update(Area=True),
    "beyond float32": lambda f: f["properties"]["measurements"].update(Area=1e39),
    "nested metadata": lambda f: f["properties"].update(metadata={"model": "x"}),
    "capital objectType": lambda f: f["properties"].update(objectType="Detection"),
    "no objectType": lambda f: f["properties"].pop("objectType"),
    "unclosed ring": lambda f: f["geometry"].update(coordinates=[[[0, 0], [4, 0], [4, 4], [0, 4]]]),
    "bow-tie": lambda f: f["geometry"].update(coordinates=[[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]),
    "hole outside its shell": lambda f: f["geometry"].update(
        coordinates=[[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]], [[10, 10], [12, 10], [12, 12], [10, 12], [10, 10]]]
    ),
    "overlapping parts": lambda f: f.update(
        geometry={
            "type": "MultiPolygon",
            "coordinates": [[[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]], [[[2, 2], [6, 2], [6, 6], [2, 6], [2, 2]]]],
        }
    ),
    "pinched apart by the snapping": lambda f: f["geometry"].update(
        coordinates=[[*adversarial_rings()[1].tolist(), [0.0, 0.0]]]
    ),
}


@pytest.mark.parametrize("breaks", list(BREAKS))
def test_the_qupath_checker_catches_each_rule(tmp_path, breaks):
    """The checker the pipeline tests use fails on each way a file breaks QuPath's import (it can fail)."""
    from qupath_rules import check_qupath_geojson

    features = [square_feature(1), good_annotation()]
    path = tmp_path / "objects.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    check_qupath_geojson(path, 100, 100, ("detection", "annotation"))
    BREAKS[breaks](features[0])
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises((AssertionError, KeyError, TypeError, ValueError)):
        check_qupath_geojson(path, 100, 100, ("detection", "annotation"))


def test_a_file_named_only_gz_is_refused(tmp_path):
    from qupath_rules import check_qupath_geojson

    path = tmp_path / "nuclei.gz"
    path.write_bytes(gzip.compress(b'{"type": "FeatureCollection", "features": []}'))
    with pytest.raises(AssertionError, match="only .gz"):
        check_qupath_geojson(path, 10, 10)


def test_annotations_are_repaired_onto_qupaths_grid_or_dropped():
    """A bow-tie becomes its two valid triangles, parts narrower than the grid disappear, and a shape smaller than
    the grid gives no feature at all (the writer counts it as dropped)."""
    from qupath_rules import valid_on_qupath_grid
    from shapely.geometry import Polygon, shape

    from pathoseg.io.geojson import annotation_feature

    bow_tie = annotation_feature(
        Polygon([[0, 0], [10, 10], [10, 0], [0, 10]]), "QC", [0, 0, 0], {"Tiles": 1}, "a", "bow-tie"
    )
    repaired = shape(bow_tie["geometry"])
    assert repaired.geom_type == "MultiPolygon" and valid_on_qupath_grid(repaired)
    assert repaired.area == pytest.approx(50)
    assert annotation_feature(Polygon([[0, 0], [0.004, 0], [0.004, 0.004]]), "QC", [0, 0, 0], {}, "b", "tiny") is None
    # a hole 0.004 px inside its shell's edge: snapping makes them touch; the annotation stays one valid area
    holed = Polygon([[0, 0], [10, 0], [10, 10], [0, 10]], [[[2, 2], [9.996, 2], [9.996, 8], [2, 8]]])
    snapped = shape(annotation_feature(holed, "QC", [0, 0, 0], {"Tiles": 1}, "c", "holed")["geometry"])
    assert valid_on_qupath_grid(snapped) and snapped.area == pytest.approx(100 - 7.996 * 6, abs=0.1)
