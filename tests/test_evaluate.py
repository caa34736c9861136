"""`pathoseg evaluate` on prediction folders: instance maps and GeoJSON, against a real dataset folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image

from pathoseg.cli import main
from pathoseg.io.datasets import read_class_names, read_manifest
from pathoseg.io.geojson import FeatureCollectionWriter, nucleus_feature
from pathoseg.metrics import majority_types
from pathoseg.stitch.polygons import instance_polygons


@pytest.fixture(scope="module")
def dataset():
    return shared("nucls/test")


def test_ground_truth_as_label_images_scores_perfectly(dataset, tmp_path):
    for sample_id in read_manifest(dataset):
        labels = np.asarray(Image.open(dataset / "labels" / f"{sample_id}.png"))
        Image.fromarray(labels.astype(np.uint16)).save(tmp_path / f"{sample_id}.png")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(dataset), "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["overall"]["pq"] == pytest.approx(1.0)
    assert metrics["overall"]["aji"] == pytest.approx(1.0)
    assert set(metrics["per_image"]) == set(read_manifest(dataset))


def test_ground_truth_as_geojson_scores_nearly_perfectly(dataset, tmp_path):
    names = read_class_names(dataset) or {}
    for sample_id in read_manifest(dataset):
        labels = np.asarray(Image.open(dataset / "labels" / f"{sample_id}.png")).astype(np.int32)
        types_path = dataset / "types" / f"{sample_id}.png"
        types = majority_types(labels, np.asarray(Image.open(types_path))) if types_path.is_file() else None
        with FeatureCollectionWriter(tmp_path / f"{sample_id}.geojson") as writer:
            for i, polygon in enumerate(instance_polygons(labels, simplify_px=0)):
                if polygon is None:
                    continue
                name = names.get(int(types[i]), "unknown") if types is not None else "nucleus"
                writer.write(
                    nucleus_feature(
                        np.asarray(polygon.exterior.coords)[:-1], name, [0, 0, 0], {"x": 1.0}, f"{sample_id}:{i}"
                    )
                )
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(dataset), "-o", str(out)])
    assert result.exit_code == 0, result.output
    pq = float(next(line for line in result.output.splitlines() if line.strip().startswith("pq:")).split(":")[1])
    assert pq > 0.9
    overall = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))["overall"]
    for cls in names:
        assert overall[f"pq_type_{cls}"] > 0.9 and overall[f"f1_type_{cls}"] > 0.95
    assert overall["mpq"] > 0.9


def test_missing_prediction_is_a_clear_error(dataset, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(dataset)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "no prediction for image" in result.output


def test_model_evaluation_measures_what_segment_writes(tmp_path):
    """``evaluate --model`` scores the nuclei ``segment`` outputs: same post-processing, same plausibility filters."""
    source = shared("monuseg/train")
    sample_id = "TCGA-B0-5711-01Z-00-DX1"  # a validation image of the shipped model
    dataset = tmp_path / "dataset"
    for sub in ("images", "labels"):
        (dataset / sub).mkdir(parents=True)
        (dataset / sub / f"{sample_id}.png").symlink_to(source / sub / f"{sample_id}.png")
    (dataset / "MANIFEST.csv").write_text(f"id,mpp\n{sample_id},0.25\n")
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "segment",
            str(dataset / "images" / f"{sample_id}.png"),
            "--mpp",
            "0.25",
            "-o",
            str(tmp_path / "run"),
            "--scheduler",
            "inprocess",
            "--quiet",
            "--no-gzip",
        ],
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "pred").mkdir()
    (tmp_path / "run" / "nuclei.geojson").rename(tmp_path / "pred" / f"{sample_id}.geojson")
    from_geojson = tmp_path / "from-geojson.json"
    from_model = tmp_path / "from-model.json"
    result = runner.invoke(main, ["evaluate", str(tmp_path / "pred"), str(dataset), "-o", str(from_geojson)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", "--model", "pathoseg-light", str(dataset), "-o", str(from_model)])
    assert result.exit_code == 0, result.output
    written, direct = (json.loads(path.read_text())["overall"] for path in (from_geojson, from_model))
    assert direct["pq"] > 0.5
    # Only polygon simplification and rasterisation stand between the two.
    for key in ("pq", "aji", "dice"):
        assert written[key] == pytest.approx(direct[key], abs=0.004), key


def test_images_without_nuclei_are_left_out_of_the_means():
    from pathoseg.evaluation import Accumulator
    from pathoseg.io.datasets import Sample

    nuclei = np.zeros((8, 8), np.int32)
    nuclei[1:4, 1:4], nuclei[5:7, 5:7] = 1, 2
    accumulator = Accumulator(None, 12.0)
    accumulator.add(Sample("with", np.zeros((8, 8, 3), np.uint8), nuclei, None), nuclei, None)
    accumulator.add(
        Sample("empty", np.zeros((8, 8, 3), np.uint8), np.zeros_like(nuclei), None), np.zeros_like(nuclei), None
    )
    result = accumulator.result()
    assert result["per_image"]["empty"]["pq"] == 0  # PQ has no pairs to score there
    assert result["overall"]["pq"] == pytest.approx(1) and result["overall"]["images_scored"] == 1
