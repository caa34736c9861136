"""IHC: the positivity index and its interval, and evaluation against IHC truth (negative / positive nuclei), on
hand-made cases and on the real DeepLIIF Ki-67 tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image
from skimage.draw import disk

from pathoseg.cli import main
from pathoseg.evaluation import is_positivity_dataset, positivity_scores, registration_scores
from pathoseg.io.datasets import Sample
from pathoseg.io.geojson import FeatureCollectionWriter, nucleus_feature
from pathoseg.measure.biomarkers import (
    index_confidence_interval,
    index_range_of_uncertain,
    positivity_certainty,
    positivity_summary,
)
from pathoseg.measure.stain import REFERENCE_VECTORS, estimate_hdab_vectors
from pathoseg.metrics import centroids, truth_shift_px
from pathoseg.stitch.polygons import instance_polygons


def test_wilson_interval_by_hand():
    # 5 of 100: p = 0.05, z = 1.96: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) = 2.15% .. 11.18%
    low, high = index_confidence_interval(5, 100)
    assert low == pytest.approx(2.15, abs=0.01) and high == pytest.approx(11.18, abs=0.01)
    assert index_confidence_interval(0, 0) == [0.0, 100.0]
    summary = positivity_summary(np.array([0] * 95 + [1, 2, 3, 3, 1]))
    assert summary["positive_percent"] == 5 and summary["positive_percent_ci95"] == [low, high]


def test_positivity_scores_by_hand():
    true_xy = np.array([[10, 10], [50, 10], [90, 10], [130, 10]], float)
    true_positive = np.array([True, False, False, True])  # index 50%
    # Three detections near the first three truths (the second called positive: a disagreement), one false positive
    # far away, the fourth truth missed.
    pred_xy = np.array([[12, 11], [49, 13], [91, 9], [300, 300]], float)
    pred_positive = np.array([True, True, False, True])  # index 75%
    scores = positivity_scores([true_xy], [true_positive], [pred_xy], [pred_positive], radius_px=12)
    assert scores["f1_detection"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert scores["positivity_agreement"] == pytest.approx(2 / 3)
    assert scores["true_index_percent"] == 50 and scores["pred_index_percent"] == 75
    assert scores["index_error_points"] == 25
    assert (
        scores["true_nuclei"],
        scores["true_positive_nuclei"],
        scores["pred_nuclei"],
        scores["pred_positive_nuclei"],
    ) == (4, 2, 4, 3)
    # Pooled with a second image whose one detection lies where the first image's missed nucleus is: a false
    # positive there, not a hit here.
    pooled = positivity_scores(
        [true_xy, np.zeros((0, 2))],
        [true_positive, np.zeros(0, bool)],
        [pred_xy, true_xy[3:]],
        [pred_positive, np.array([True])],
        radius_px=12,
    )
    assert pooled["f1_detection"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert pooled["pred_index_percent"] == 80


def test_truth_offset_is_measured_and_removed_and_faint_truth_set_apart():
    # 25 nuclei (disks) on a 40 px grid, 5 of them too faint to see; the truth drawn 8 px below them (row + 8). The
    # 20 visible ones are detected, each off its nucleus by up to 5 px: at 12 px about half pair up, with the truth's
    # offset removed all 20 do, and the 5 faint ones are misses over all true nuclei, not over the visible ones.
    rng = np.random.default_rng(0)
    nuclei = np.stack(np.meshgrid(20 + np.arange(5) * 40.0, 20 + np.arange(5) * 40.0), -1).reshape(-1, 2)
    rows, cols = np.mgrid[:220, :220]
    image, instances = np.full((220, 220, 3), 225, np.uint8), np.zeros((220, 220), np.int32)
    for label, (row, col) in enumerate(nuclei, start=1):
        image[(rows - row) ** 2 + (cols - col) ** 2 < 36] = (215, 212, 222) if label % 5 == 0 else (110, 90, 150)
        instances[(rows - row - 8) ** 2 + (cols - col) ** 2 < 36] = label
    faint = np.arange(1, 26) % 5 == 0
    sample = Sample("grid", image, instances, None, 0.25)
    true_xy, true_labels = centroids(instances)
    pred_xy = (nuclei + rng.uniform(-5, 5, nuclei.shape))[~faint]
    unshifted = positivity_scores([true_xy], [np.zeros(25, bool)], [pred_xy], [np.zeros(20, bool)], radius_px=12)
    assert unshifted["f1_detection"] < 2 * 20 / (2 * 20 + 5)  # some of the 20 do not pair up
    scores = registration_scores(sample, true_xy, true_labels, pred_xy, radius_px=12)
    assert scores["f1_detection_shift_removed"] == pytest.approx(2 * 20 / (2 * 20 + 5))
    assert scores["f1_detection_visible"] == 1.0 and scores["visible_nuclei"] == 20
    assert scores["truth_shift_px"] == pytest.approx([0, 8], abs=1.5)  # (x, y)
    assert np.isnan(truth_shift_px(true_xy[:5], pred_xy[:5], radius_px=12)).all()  # too few pairs to tell


def test_positivity_datasets_are_recognised():
    assert is_positivity_dataset({1: "Ki67-negative", 2: "Ki67-positive"})
    assert not is_positivity_dataset({1: "other", 2: "inflammatory", 3: "epithelial", 4: "spindle"})
    assert not is_positivity_dataset(None)


def _ihc_dataset(folder):
    """Two images, disks as nuclei: image a 2 of 4 positive, image b 1 of 2 positive."""
    for sub in ("images", "labels", "types"):
        (folder / sub).mkdir(parents=True)
    (folder / "classes.json").write_text(json.dumps({"1": "Ki67-negative", "2": "Ki67-positive"}))
    (folder / "MANIFEST.csv").write_text("id,mpp\na,0.25\nb,0.25\n")
    layouts = {"a": [((20, 20), 2), ((20, 60), 1), ((60, 20), 1), ((60, 60), 2)], "b": [((20, 20), 1), ((60, 60), 2)]}
    for sample_id, nuclei in layouts.items():
        labels = np.zeros((80, 80), np.uint16)
        types = np.zeros((80, 80), np.uint8)
        for label, (centre, cls) in enumerate(nuclei, start=1):
            labels[disk(centre, 8)] = label
            types[disk(centre, 8)] = cls
        Image.fromarray(np.full((80, 80, 3), 200, np.uint8)).save(folder / "images" / f"{sample_id}.png")
        Image.fromarray(labels).save(folder / "labels" / f"{sample_id}.png")
        Image.fromarray(types).save(folder / "types" / f"{sample_id}.png")
    return layouts


def test_evaluate_reads_segments_dab_bins_against_ihc_truth(tmp_path):
    layouts = _ihc_dataset(tmp_path / "truth")
    predictions = tmp_path / "pred"
    predictions.mkdir()
    # Image a: every nucleus found, the last negative one called "1+" (positive); image b: the positive one missed.
    calls = {"a": ["2+", "Negative", "1+", "3+"], "b": ["Negative", None]}
    for sample_id, nuclei in layouts.items():
        labels = np.zeros((80, 80), np.int32)
        for label, (centre, _) in enumerate(nuclei, start=1):
            labels[disk(centre, 8)] = label
        with FeatureCollectionWriter(predictions / f"{sample_id}.geojson") as writer:
            for polygon, name in zip(instance_polygons(labels, 0), calls[sample_id]):
                if name is not None:
                    writer.write(
                        nucleus_feature(
                            np.asarray(polygon.exterior.coords)[:-1],
                            name,
                            [0, 0, 0],
                            {"x": 1.0},
                            f"{sample_id}:{name}:{polygon.centroid.x}",
                        )
                    )
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", str(predictions), str(tmp_path / "truth"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    a, b = metrics["per_image"]["a"]["ihc"], metrics["per_image"]["b"]["ihc"]
    assert a["f1_detection"] == 1 and a["positivity_agreement"] == 0.75
    assert a["true_index_percent"] == 50 and a["pred_index_percent"] == 75 and a["index_error_points"] == 25
    assert b["f1_detection"] == pytest.approx(2 / 3) and b["positivity_agreement"] == 1
    assert b["true_index_percent"] == 50 and b["pred_index_percent"] == 0 and b["index_error_points"] == -50
    overall = metrics["overall"]
    assert overall["ihc_index_error_points_mean_abs"] == 37.5 and overall["ihc_index_error_points_max_abs"] == 50
    assert overall["ihc_f1_detection"] == pytest.approx(2 * 5 / (2 * 5 + 0 + 1))
    assert overall["ihc_positivity_agreement"] == pytest.approx(4 / 5)
    assert "ihc_f1_detection" in result.output
    assert "a: index 75.0% (3/4) vs true 50.0% (2/4), error +25.0 points" in result.output


@pytest.mark.timeout(600)
def test_model_evaluation_on_real_ki67_tiles(tmp_path):
    dataset = shared("deepliif-ihc/train")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["evaluate", "--model", "pathoseg-light", str(dataset), "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    for sample_id in ("lung_1", "bladder_1"):
        scores = metrics["per_image"][sample_id]["ihc"]
        assert 0 < scores["true_index_percent"] < 40  # the truth as the data set gives it (18.0% and 8.0%)
        assert scores["f1_detection"] > 0.5 and scores["positivity_agreement"] > 0.8
        # the registered immunofluorescence truth holds nuclei this brightfield image hardly shows (bladder: ~40)
        assert scores["visible_nuclei"] < scores["true_nuclei"]
        assert 0.5 < scores["f1_detection_visible"] <= 1
    assert metrics["overall"]["ihc_index_error_points_max_abs"] >= 0
    assert "visible in brightfield" in result.output


def test_stain_vectors_of_a_real_ihc_image_and_the_fallback():
    image = np.asarray(Image.open(shared("examples/ihc-dab-roi.png")).convert("RGB"))
    estimate = estimate_hdab_vectors(image)
    assert estimate.source == "estimated" and estimate.n_pixels > 5000
    assert np.allclose(np.linalg.norm(estimate.matrix, axis=1), 1)
    # Near the defaults (within the 30 degree guard), but the slide's own.
    for row in (0, 2):
        cosine = estimate.matrix[row] @ REFERENCE_VECTORS[row]
        assert 0.87 < cosine < 0.9999
    blank = estimate_hdab_vectors(np.full((100, 100, 3), 250, np.uint8))
    assert blank.source == "default" and "too little stain" in blank.reason
    assert np.array_equal(blank.matrix, REFERENCE_VECTORS)


@pytest.mark.timeout(600)
def test_segment_records_the_slides_stain_vectors(tmp_path):
    roi = shared("examples/ihc-dab-roi.png")
    config = tmp_path / "estimate.yaml"
    config.write_text("stain: {estimate_vectors: true}\n")
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(roi),
            "--mpp",
            "0.25",
            "--stain",
            "ihc",
            "-c",
            str(config),
            "--scheduler",
            "inprocess",
            "-o",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    vectors = summary["stain_vectors"]
    assert vectors["source"] == "estimated" and len(vectors["dab"]) == 3 and vectors["stained_pixels"] > 5000
    low, high = summary["ihc"]["positive_percent_ci95"]
    assert low <= summary["ihc"]["positive_percent"] <= high
    assert 0 <= summary["ihc"]["borderline_nuclei"] < summary["ihc"]["n_nuclei"]
    least, most = summary["ihc"]["positive_percent_uncertain_range"]
    assert least <= summary["ihc"]["positive_percent"] <= most
    assert 0 <= summary["ihc"]["unsure_detections"] < summary["ihc"]["n_nuclei"]
    assert "counting them both ways" in (tmp_path / "out" / "report.html").read_text()
    assert summary["review"]["squares"]  # ranked by detection x positivity certainty in IHC mode


def test_positivity_certainty_by_hand():
    certainty = positivity_certainty(np.array([0.0, 0.15, 0.2, 0.22, 0.35, 0.9]), threshold=0.2)
    assert np.allclose(certainty, [1.0, 0.5, 0.0, 0.2, 1.0, 1.0])


def test_index_range_counts_the_uncertain_nuclei_both_ways():
    """10 nuclei: 3 sure positives, 1 borderline positive, 1 borderline negative, 1 unsure positive detection, 1 unsure
    negative detection, 3 sure negatives. Lowest: the borderline ones negative, the unsure positive not a nucleus: 3 of
    9. Highest: the borderline ones positive, the unsure negative not a nucleus: 6 of 9."""
    positive = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], bool)
    borderline = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 0], bool)
    unsure = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    assert index_range_of_uncertain(positive, borderline, unsure) == pytest.approx([100 * 3 / 9, 100 * 6 / 9])
    nothing_uncertain = np.zeros(10, bool)
    assert index_range_of_uncertain(positive, nothing_uncertain, nothing_uncertain) == pytest.approx([50, 50])
    assert index_range_of_uncertain(np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, bool)) == [0.0, 100.0]
