"""Metrics against small cases computed by hand."""

import numpy as np
import pytest

from pathoseg.metrics import (
    aggregated_jaccard,
    class_panoptic_quality,
    detection_and_type_f1,
    dice,
    instance_metrics,
    majority_types,
    pair_centroids_by_image,
    panoptic_quality,
)


@pytest.fixture
def simple_pair():
    true = np.zeros((4, 4), int)
    true[0:2, 0:2] = 1  # 4 px
    true[3, 3] = 2  # 1 px
    pred = np.zeros((4, 4), int)
    pred[0:2, 0:3] = 7  # 6 px: IoU with true 1 = 4/6
    pred[3, 2:4] = 9  # 2 px: IoU with true 2 = 1/2, not > 0.5
    return true, pred


def test_panoptic_quality_by_hand(simple_pair):
    result = panoptic_quality(*simple_pair)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)
    assert result["dq"] == pytest.approx(0.5)
    assert result["sq"] == pytest.approx(4 / 6)
    assert result["pq"] == pytest.approx(1 / 3)


def test_aji_and_dice_by_hand(simple_pair):
    true, pred = simple_pair
    assert aggregated_jaccard(true, pred) == pytest.approx((4 + 1) / (6 + 2))
    assert aggregated_jaccard(true, pred, one_to_one=True) == pytest.approx(5 / 8)
    assert dice(true, pred) == pytest.approx(2 * 5 / (5 + 8))


def test_aji_reuses_predictions_aji_plus_does_not():
    true = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 5, 5]])
    assert aggregated_jaccard(true, pred) == pytest.approx((2 + 2) / (4 + 4))
    assert aggregated_jaccard(true, pred, one_to_one=True) == pytest.approx(2 / (4 + 2))
    assert panoptic_quality(true, pred)["pq"] == 0


def test_perfect_and_empty_predictions():
    true = np.array([[0, 1, 1], [0, 0, 2]])
    perfect = instance_metrics(true, true * 3)
    assert perfect["pq"] == pytest.approx(1) and perfect["aji"] == pytest.approx(1) and perfect["dice"] == 1
    empty = instance_metrics(true, np.zeros_like(true))
    assert empty["pq"] == 0 and empty["aji"] == 0 and empty["dice"] == 0


def test_detection_and_type_f1_by_hand():
    true_xy = np.array([[0, 0], [0, 20], [0, 40]], float)
    pred_xy = np.array([[0, 1], [0, 21], [0, 100]], float)
    result = detection_and_type_f1([true_xy], [np.array([1, 1, 2])], [pred_xy], [np.array([1, 2, 2])], [1, 2], 12)
    assert result["f1_detection"] == pytest.approx(4 / 6)
    assert result["f1_type_1"] == pytest.approx(2 / (2 + 2))  # tp 1, fn_paired 1
    assert result["f1_type_2"] == pytest.approx(0.0)  # fp_paired 1, fp 1, fn 1
    assert (result["n_true_type_1"], result["n_true_type_2"]) == (2, 1)


def test_detection_f1_pairs_nuclei_within_each_image_only():
    # Image 1: its one nucleus found and one missed at (50, 50); image 2: a false positive at (50, 50). Pooled, that
    # is 1 hit, 1 miss, 1 false positive; pairing the images' centroids together would make the miss a hit.
    found, missed, empty = np.array([[10.0, 10.0]]), np.array([[50.0, 50.0]]), np.zeros((0, 2))
    true_xy = [np.concatenate([found, missed]), empty]
    pred_xy = [found + 1, missed]
    result = detection_and_type_f1(
        true_xy, [np.array([1, 1]), np.zeros(0, int)], pred_xy, [np.array([1]), np.array([1])], [1], 12
    )
    assert result["f1_detection"] == pytest.approx(2 / (2 + 1 + 1))
    assert result["f1_type_1"] == pytest.approx(2 / (2 + 1 + 1))
    assert pair_centroids_by_image(true_xy, pred_xy, 12)[0].tolist() == [0]


def test_majority_types():
    instances = np.array([[1, 1, 1, 2], [0, 0, 2, 2]])
    types = np.array([[3, 3, 1, 2], [0, 0, 2, 0]])
    assert majority_types(instances, types).tolist() == [3, 2]


def test_class_panoptic_quality_by_hand():
    true = np.array([[1, 1, 0, 2, 2, 0, 3]])
    true_classes = np.array([1, 1, 2])
    pred = np.array([[1, 1, 0, 2, 2, 2, 3]])  # label 2: IoU 2/3 with true 2; label 3 matches true 3
    pred_classes = np.array([1, 2, 2])  # true 2 (class 1) predicted class 2
    result = class_panoptic_quality(true, true_classes, pred, pred_classes, [1, 2, 3])
    assert result[1] == pytest.approx(1 / (1 + 0.5 * 1))  # tp 1 (IoU 1), fn 1
    assert result[2] == pytest.approx(1 / (1 + 0.5 * 1))  # tp 1 (true 3), fp 1 (pred 2)
    assert np.isnan(result[3])  # no class-3 ground truth
