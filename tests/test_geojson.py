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
        "type": "FeatureCollection", "features": []}


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
    read = subprocess.run([java, str(tmp_path / "Gunzip.java"), str(path)], capture_output=True, check=True,
                          timeout=120).stdout
    assert read == gzip.decompress(path.read_bytes()) and json.loads(read)["features"] == features
