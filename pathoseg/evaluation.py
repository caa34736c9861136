"""Evaluate predictions (instance label images or GeoJSON) or a model against a dataset folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from pathoseg.errors import InputError
from pathoseg.geometry import Box
from pathoseg.io.datasets import Sample, load_dataset, read_class_names, read_manifest, resample_image
from pathoseg.io.geojson import read_features
from pathoseg.measure.biomarkers import DAB_BIN_NAMES
from pathoseg.measure.nuclei import contrast_od
from pathoseg.measure.stain import estimate_hdab_vectors
from pathoseg.metrics import (
    centroids,
    class_panoptic_quality,
    detection_and_type_f1,
    f1,
    instance_metrics,
    majority_types,
    pair_centroids,
    pair_centroids_by_image,
    truth_shift_px,
)
from pathoseg.models.infer import PredictionMaps, Predictor
from pathoseg.region import RegionSettings, owned_nuclei
from pathoseg.stitch.merge import keep_labels
from pathoseg.stitch.polygons import instance_polygons

METRIC_KEYS = ("dice", "aji", "aji_plus", "dq", "sq", "pq")
# Detection pairs centroids within this distance: HoVer-Net's 12 px at 0.25 µm/px (40x).
MATCH_RADIUS_UM = 3.0
# A true nucleus is visible in a brightfield image when it stands out from its surroundings (contrast_od) at least as
# much as 95% of the nuclei pathologists outlined on H&E: the 5th percentile over MoNuSeg's 16,929 training nuclei
# (benchmarks/bench_visibility.py prints it, with the 1st, 2.5th and 10th).
VISIBLE_CONTRAST_OD = 0.156


def _mean_of_defined(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none."""
    defined = [value for value in values if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def is_positivity_dataset(class_names: dict[int, str] | None) -> bool:
    """True for IHC truth: two classes, 1 = ...negative, 2 = ...positive (e.g. Ki67-negative / Ki67-positive)."""
    return (
        class_names is not None
        and sorted(class_names) == [1, 2]
        and class_names[1].lower().endswith("negative")
        and class_names[2].lower().endswith("positive")
    )


def positivity_scores(
    true_xy_by_image: Sequence[np.ndarray],
    true_positive_by_image: Sequence[np.ndarray],
    pred_xy_by_image: Sequence[np.ndarray],
    pred_positive_by_image: Sequence[np.ndarray],
    radius_px: float,
) -> dict[str, float]:
    """Detection F1 (centroids within ``radius_px``, paired within each image), positive/negative agreement on the
    matched nuclei, and the positivity index (positive / all nuclei, %) of truth and prediction with its error in
    percentage points and the counts behind it, over one or more images.

    Per image: (N_i, 2) true and (M_i, 2) predicted centroids, (N_i,) and (M_i,) bool positivity.
    """
    rows, cols = pair_centroids_by_image(true_xy_by_image, pred_xy_by_image, radius_px)
    true_xy, pred_xy = np.concatenate(true_xy_by_image), np.concatenate(pred_xy_by_image)
    true_positive, pred_positive = np.concatenate(true_positive_by_image), np.concatenate(pred_positive_by_image)
    true_index = 100 * float(np.mean(true_positive)) if len(true_positive) else float("nan")
    pred_index = 100 * float(np.mean(pred_positive)) if len(pred_positive) else float("nan")
    return {
        "f1_detection": f1(rows.size, len(pred_xy) - rows.size, len(true_xy) - rows.size),
        "positivity_agreement": float(np.mean(true_positive[rows] == pred_positive[cols]))
        if rows.size
        else float("nan"),
        "true_index_percent": true_index,
        "pred_index_percent": pred_index,
        "index_error_points": pred_index - true_index,
        # the index's numerators and denominators: an error from extra positives reads differently from one
        # from missed (pale) negatives
        "true_nuclei": len(true_xy),
        "true_positive_nuclei": int(np.sum(true_positive)),
        "pred_nuclei": len(pred_xy),
        "pred_positive_nuclei": int(np.sum(pred_positive)),
    }


def registration_scores(
    sample: Sample,
    true_xy: np.ndarray,
    true_labels: np.ndarray,
    pred_xy: np.ndarray,
    radius_px: float,
    min_contrast_od: float = VISIBLE_CONTRAST_OD,
) -> dict:
    """The truth's overall offset from one image's detections, (x, y) in pixels (``metrics.truth_shift_px``), and the
    detection F1 once it is removed, over all true nuclei and over those visible in the image
    (``visible_in_brightfield``): truth registered from another image (immunofluorescence on IHC) can sit a few
    pixels off every nucleus, and can hold nuclei the brightfield image hardly shows; this tells both from missed
    nuclei. NaN where too few nuclei pair up.

    true_xy, pred_xy : (N, 2) and (M, 2) centroids (row, col) of one image; true_labels : (N,) their labels in
    ``sample.instances``; min_contrast_od : what visible means (``visible_in_brightfield``).
    """
    shift = truth_shift_px(true_xy, pred_xy, radius_px)
    if not np.all(np.isfinite(shift)):
        return {
            "truth_shift_px": [float("nan")] * 2,
            "f1_detection_shift_removed": float("nan"),
            "f1_detection_visible": float("nan"),
            "visible_nuclei": 0,
        }
    rows, _ = pair_centroids(true_xy - shift, pred_xy, radius_px)
    visible = visible_in_brightfield(sample, shift, min_contrast_od)[true_labels - 1]
    visible_found = int(visible[rows].sum())
    return {
        "truth_shift_px": [float(v) for v in shift[::-1]],
        "f1_detection_shift_removed": f1(rows.size, len(pred_xy) - rows.size, len(true_xy) - rows.size),
        # a detection paired with a true nucleus the image does not show is neither right nor wrong here
        "f1_detection_visible": f1(visible_found, len(pred_xy) - rows.size, int(visible.sum()) - visible_found),
        "visible_nuclei": int(visible.sum()),
    }


def visible_in_brightfield(
    sample: Sample, shift_px: np.ndarray, min_contrast_od: float = VISIBLE_CONTRAST_OD
) -> np.ndarray:
    """(N,) bool per true instance 1..N: whether it stands out from its surroundings in the image
    (``measure.nuclei.contrast_od`` at least ``min_contrast_od``) once the truth is moved by -``shift_px``
    ((row, col), ``metrics.truth_shift_px``) onto the image. One with no free pixel around it counts as visible."""
    registered = ndimage.shift(sample.instances, -np.asarray(shift_px), order=0)
    n = int(sample.instances.max())
    contrast = np.full(n, np.nan)
    contrast[: int(registered.max())] = contrast_od(sample.image, registered, sample.mpp)
    return ~(contrast < min_contrast_od)


class PositivityAccumulator:
    """IHC truth (classes negative / positive): positivity scores per image and pooled over the images."""

    def __init__(self, radius_px: float):
        self.radius_px = radius_px
        self.per_image: dict[str, dict] = {}
        self.pooled: tuple[list[np.ndarray], ...] = ([], [], [], [])

    def add(self, sample: Sample, pred: np.ndarray, pred_positive: np.ndarray) -> None:
        """Score one image's predicted instances and their positive calls against its truth."""
        if sample.types is None:
            raise InputError(f"{sample.id}: positivity truth needs a types map (negative / positive nuclei)")
        true_xy, true_labels = centroids(sample.instances)
        true_positive = majority_types(sample.instances, sample.types)[true_labels - 1] == 2
        pred_xy, pred_labels = centroids(pred)
        pred_positive = np.asarray(pred_positive, bool)[pred_labels - 1]
        scores = positivity_scores([true_xy], [true_positive], [pred_xy], [pred_positive], self.radius_px)
        registration = registration_scores(sample, true_xy, true_labels, pred_xy, self.radius_px)
        self.per_image[sample.id] = {**scores, **registration}
        for pool, values in zip(self.pooled, (true_xy, true_positive, pred_xy, pred_positive)):
            pool.append(values)

    def result(self) -> dict:
        """Detection F1, positivity agreement and index errors pooled over the images, with each image's."""
        true_xy, true_positive, pred_xy, pred_positive = self.pooled
        pooled = positivity_scores(true_xy, true_positive, pred_xy, pred_positive, self.radius_px)
        errors = [abs(scores["index_error_points"]) for scores in self.per_image.values()]
        return {
            "f1_detection": pooled["f1_detection"],
            "positivity_agreement": pooled["positivity_agreement"],
            "index_error_points_mean_abs": _mean_of_defined(errors),
            "index_error_points_max_abs": max(errors, default=float("nan")),
            "pooled_true_index_percent": pooled["true_index_percent"],
            "pooled_pred_index_percent": pooled["pred_index_percent"],
        }


class Accumulator:
    """Per-image instance metrics (and per-class PQ), and centroids/classes pooled for detection and type F1."""

    def __init__(self, classes: list[int] | None, radius_px: float):
        self.classes, self.radius_px = classes, radius_px
        self.per_image: dict[str, dict] = {}
        self.true_xy: list[np.ndarray] = []
        self.true_cls: list[np.ndarray] = []
        self.pred_xy: list[np.ndarray] = []
        self.pred_cls: list[np.ndarray] = []

    def add(self, sample: Sample, pred: np.ndarray, pred_classes: np.ndarray | None) -> None:
        """Score one image's predicted instances (and classes, where both sides have them) against its truth."""
        self.per_image[sample.id] = instance_metrics(sample.instances, pred)
        if self.classes and sample.types is not None and pred_classes is not None:
            true_classes = majority_types(sample.instances, sample.types)
            class_pq = class_panoptic_quality(sample.instances, true_classes, pred, pred_classes, self.classes)
            self.per_image[sample.id].update({f"pq_type_{cls}": pq for cls, pq in class_pq.items()})
            xy, labels = centroids(sample.instances)
            self.true_xy.append(xy)
            self.true_cls.append(true_classes[labels - 1])
            xy, labels = centroids(pred)
            self.pred_xy.append(xy)
            self.pred_cls.append(pred_classes[labels - 1])

    def result(self) -> dict:
        """Mean instance metrics over the images with true nuclei; per-class PQ, detection and type F1 with classes."""
        # Images without true nuclei are left out of the means (PanNuke's convention): their PQ is 0 even when
        # nothing is predicted, their AJI and Dice 1.
        scored = [m for m in self.per_image.values() if m["tp"] + m["fn"] > 0]
        overall = {k: _mean_of_defined([m[k] for m in scored]) for k in METRIC_KEYS}
        overall["images_scored"] = len(scored)
        if self.classes and self.true_xy:
            class_pq = {
                f"pq_type_{cls}": _mean_of_defined([m.get(f"pq_type_{cls}", np.nan) for m in self.per_image.values()])
                for cls in self.classes
            }
            overall.update(class_pq, mpq=_mean_of_defined(list(class_pq.values())))
            overall.update(
                detection_and_type_f1(
                    self.true_xy, self.true_cls, self.pred_xy, self.pred_cls, self.classes, self.radius_px
                )
            )
        return {"overall": overall, "per_image": self.per_image}


def nuclei_of_maps(
    rgb: np.ndarray, maps: PredictionMaps, settings: RegionSettings
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The nuclei ``pathoseg segment`` outputs for an image at the model's mpp, from its prediction maps
    (``region.owned_nuclei`` over the whole image). Returns the (H, W) instance map (1..N) of the plausible nuclei
    and their measurements ((N,) arrays, ``class_id`` among them)."""
    image = Box(0, 0, rgb.shape[1], rgb.shape[0])
    labels, _, measurements, filters = owned_nuclei(rgb, maps, image, image, settings)
    keep = filters["keep"]
    return keep_labels(labels, np.nonzero(keep)[0] + 1), {key: values[keep] for key, values in measurements.items()}


def nuclei_at_sample_resolution(
    predictor: Predictor, sample: Sample, settings: RegionSettings
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``nuclei_of_maps`` for a sample at its own resolution, whatever the model's: the image is resampled to the
    model's mpp and the nuclei's outlines (as ``segment`` writes them) are drawn back onto the sample's grid, so a
    model is scored against the truth as annotated. Returns the (H, W) instance map and the measurements."""
    factor = sample.mpp / settings.mpp
    if abs(factor - 1) < 1e-3:
        return nuclei_of_maps(sample.image, predictor.predict(sample.image), settings)
    image = resample_image(sample.image, factor)
    labels, measurements = nuclei_of_maps(image, predictor.predict(image), settings)
    rings = [
        None if polygon is None else np.asarray(polygon.exterior.coords) / factor
        for polygon in instance_polygons(labels, settings.simplify_px)
    ]
    return rasterise_rings(rings, sample.instances.shape), measurements


def match_radius_px(samples: Sequence[Sample]) -> float:
    """``MATCH_RADIUS_UM`` in the samples' pixels (their median mpp: a dataset's images share one)."""
    return MATCH_RADIUS_UM / float(np.median([sample.mpp for sample in samples])) if samples else 12.0


def evaluate_samples(
    predictor: Predictor,
    samples: list[Sample],
    settings: RegionSettings,
    n_classes: int | None = None,
    positive_dab_od: float | None = None,
    estimate_stains: bool = False,
) -> dict:
    """Run the model over samples (at their own resolution, see ``nuclei_at_sample_resolution``): mean per-image
    metrics, pooled detection/type F1 (centroids within ``MATCH_RADIUS_UM``).

    ``settings`` are a run's post-processing and filters (``RegionSettings.from_config``), so the figures describe
    what ``pathoseg segment`` writes. With ``positive_dab_od`` the samples' classes are IHC truth (1 negative,
    2 positive) and a nucleus is called positive when its DAB OD mean reaches it (as ``segment`` bins in IHC mode):
    positivity scores are added per image (``ihc``) and overall. ``estimate_stains`` measures each image with its
    own hematoxylin-DAB vectors (as ``segment --stain ihc`` with ``stain.estimate_vectors``).
    """
    radius_px = match_radius_px(samples)
    accumulator = Accumulator(list(range(1, n_classes)) if n_classes else None, radius_px)
    positivity = PositivityAccumulator(radius_px) if positive_dab_od is not None else None
    for sample in samples:
        sample_settings = (
            settings.with_stain_matrix(estimate_hdab_vectors(sample.image).matrix) if estimate_stains else settings
        )
        pred, measurements = nuclei_at_sample_resolution(predictor, sample, sample_settings)
        accumulator.add(sample, pred, measurements["class_id"].astype(int) if n_classes else None)
        if positivity is not None:
            positivity.add(sample, pred, measurements["dab_od_mean"] >= positive_dab_od)
    return _with_positivity(accumulator.result(), positivity)


def _with_positivity(result: dict, positivity: PositivityAccumulator | None) -> dict:
    if positivity is not None:
        result["overall"].update({f"ihc_{key}": value for key, value in positivity.result().items()})
        for sample_id, scores in positivity.per_image.items():
            result["per_image"][sample_id]["ihc"] = scores
    return result


def rasterise_geojson(
    path: Path, shape: tuple[int, int], class_ids: dict[str, int], scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Instance map (H, W) and (N,) class ids from a GeoJSON of polygons in the image's pixel coordinates
    (multiplied by ``scale`` first: 2 maps a 20x image's outlines onto its 40x truth)."""
    rings, classes = [], []
    for feature in read_features(path):
        geometry = feature.get("geometry") or {}
        if geometry.get("type") != "Polygon":
            continue
        rings.append(np.asarray(geometry["coordinates"][0], float) * scale)
        classification = (feature.get("properties") or {}).get("classification") or {}
        name = classification.get("name") if isinstance(classification, dict) else classification
        classes.append(class_ids.get(str(name), 0))
    return rasterise_rings(rings, shape), np.asarray(classes, int)


def rasterise_rings(rings: Sequence[np.ndarray | None], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 instance map of outlines ((K, 2) x, y in pixels; pixel i spans [i, i + 1)): ring k is label
    k + 1, None leaves its label out."""
    labels = np.zeros(shape, np.int32)
    for label, ring in enumerate(rings, start=1):
        if ring is not None:
            # Pixel i's centre (i + 0.5) is inside when the ring holds it.
            rows, cols = fill_polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, shape)
            labels[rows, cols] = label
    return labels


def find_prediction(folder: Path, sample_id: str) -> Path:
    """The prediction file of ``sample_id`` in ``folder`` (instance map or GeoJSON); InputError where there is none."""
    for suffix in (".png", ".tif", ".tiff", ".geojson", ".geojson.gz", ".json"):
        path = folder / f"{sample_id}{suffix}"
        if path.is_file():
            return path
    raise InputError(
        f"{folder}: no prediction for image {sample_id!r} (expected {sample_id}.png or {sample_id}.geojson)"
    )


def evaluate_folder(pred_folder: str | Path, dataset: str | Path) -> dict:
    """Compare a folder of predictions (``<id>.png`` instance maps or ``<id>.geojson``) with a dataset folder."""
    pred_folder, dataset = Path(pred_folder), Path(dataset)
    if not pred_folder.is_dir():
        raise InputError(f"{pred_folder}: prediction folder not found")
    names = read_class_names(dataset)
    ihc = is_positivity_dataset(names)
    # IHC truth: segment's DAB bins (QuPath's names) are negative (1) or positive (2).
    class_ids = dict(zip(DAB_BIN_NAMES, (1, 2, 2, 2))) if ihc else {name: int(i) for i, name in (names or {}).items()}
    manifest = read_manifest(dataset)
    radius_px = MATCH_RADIUS_UM / float(np.median(list(manifest.values())))
    accumulator = Accumulator(None if ihc else sorted(class_ids.values()) or None, radius_px)
    positivity = PositivityAccumulator(radius_px) if ihc else None
    for sample_id in manifest:
        sample = load_dataset(dataset, None, [sample_id])[0]  # native resolution
        path = find_prediction(pred_folder, sample_id)
        if path.suffix in (".png", ".tif", ".tiff"):
            pred, pred_classes = np.asarray(Image.open(path)).astype(np.int64), None
        else:
            pred, pred_classes = rasterise_geojson(path, sample.instances.shape, class_ids)
        accumulator.add(sample, pred, None if ihc else pred_classes)
        if positivity is not None and pred_classes is not None:
            positivity.add(sample, pred, pred_classes == 2)
    return _with_positivity(accumulator.result(), positivity)
