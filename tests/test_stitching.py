"""The most important property: tiling + stitching gives exactly the nuclei of processing the image in one piece."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared
from PIL import Image
from scipy import ndimage
from skimage.draw import ellipse

from pathoseg.geometry import Box, PatchGrid
from pathoseg.io.datasets import resample_image
from pathoseg.models.infer import Predictor, resolve_device
from pathoseg.models.postproc import instances_from_maps
from pathoseg.models.weights import load_model, registered_models
from pathoseg.stitch.merge import keep_labels, owned_labels
from pathoseg.tiling.grid import Grid
from pathoseg.train.targets import hv_targets


def pixel_sets(labels: np.ndarray, offset_xy: tuple[int, int], full_width: int) -> set[frozenset]:
    """Each instance as the frozenset of its flat pixel indices in a ``full_width``-wide frame (for comparisons)."""
    result = set()
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        rows, cols = np.nonzero(labels[box] == label)
        rows = rows + box[0].start + offset_xy[1]
        cols = cols + box[1].start + offset_xy[0]
        result.add(frozenset((rows * full_width + cols).tolist()))
    return result


def tiled_nuclei(np_prob, hv, region_px, margin_px):
    """Post-process region by region; keep what each region owns; nuclei as pixel sets of the whole image."""
    height, width = np_prob.shape
    grid = Grid(width, height, tile_px=region_px, region_px=region_px, margin_px=margin_px, patches=PatchGrid(512, 16))
    nuclei, owned_total = set(), 0
    for region in grid.regions():
        window = region.window
        labels = instances_from_maps(np_prob[window.slices], hv[(slice(None), *window.slices)])
        owned = keep_labels(labels, owned_labels(labels, window, region.core))
        owned_total += int(owned.max())
        nuclei |= pixel_sets(owned, (window.x, window.y), width)
    return nuclei, owned_total


def untiled_nuclei(np_prob, hv):
    labels = instances_from_maps(np_prob, hv)
    return pixel_sets(labels, (0, 0), np_prob.shape[1]), int(labels.max())


@pytest.fixture(scope="module")
def monuseg_maps():
    """Ideal prediction maps of a real MoNuSeg image (its ground truth turned into NP and HV maps)."""
    folder = shared("monuseg/train")
    instances = np.asarray(Image.open(folder / "labels" / "TCGA-21-5784-01Z-00-DX1.png")).astype(np.int32)
    return (instances > 0).astype(np.float32), hv_targets(instances)


def synthetic_instances(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W) int32 instance map of ~7 µm ellipses at 0.25 µm/px, packed so that many touch or overlap (the later
    one drawn over the earlier): a stand-in for real annotations where ../shared/data is absent."""
    rng = np.random.default_rng(seed)
    instances = np.zeros((height, width), np.int32)
    for label in range(1, height * width // 700):
        rows, cols = ellipse(
            rng.uniform(0, height),
            rng.uniform(0, width),
            rng.uniform(8, 18),
            rng.uniform(8, 18),
            (height, width),
            rotation=rng.uniform(0, np.pi),
        )
        instances[rows, cols] = label
    return instances


@pytest.mark.parametrize("region_px, offset", [(256, (0, 0)), (317, (5, 11))])
def test_tiled_equals_untiled_on_synthetic_instances(region_px, offset):
    """The same property without real data, so a clean checkout checks it too."""
    instances = synthetic_instances(900 + offset[0], 870 + offset[1])[offset[0] :, offset[1] :]
    np_prob, hv = (instances > 0).astype(np.float32), hv_targets(instances)
    expected, n_untiled = untiled_nuclei(np_prob, hv)
    found, n_owned = tiled_nuclei(np_prob, hv, region_px, margin_px=128)
    assert n_untiled > 300
    assert n_owned == n_untiled and found == expected


@pytest.fixture(scope="module", params=["pathoseg-light", "pathoseg-fast"])
def model_maps(request):
    """A shipped model's prediction maps of a real H&E tile (0.25 µm/px), read at the model's resolution."""
    if request.param not in registered_models():
        pytest.skip(f"{request.param} is not shipped")
    rgb = np.asarray(Image.open(shared("examples/he-tcga-tile.png")).convert("RGB"))
    loaded = load_model(request.param)
    maps = Predictor(loaded.network, resolve_device("cpu")).predict(resample_image(rgb, 0.25 / loaded.metadata.mpp))
    return maps.np_prob, maps.hv


@pytest.mark.parametrize("region_px, offset", [(256, (0, 0)), (317, (5, 11)), (500, (123, 7)), (211, (64, 3))])
def test_tiled_equals_untiled_on_ground_truth_maps(monuseg_maps, region_px, offset):
    np_prob, hv = monuseg_maps
    # Offsets crop the image so that region borders fall at new places relative to the nuclei.
    y, x = offset
    np_prob, hv = np_prob[y : y + 900, x : x + 870], hv[:, y : y + 900, x : x + 870]
    expected, n_untiled = untiled_nuclei(np_prob, hv)
    found, n_owned = tiled_nuclei(np_prob, hv, region_px, margin_px=128)
    assert n_owned == n_untiled, "every nucleus is owned exactly once"
    assert found == expected
    assert n_untiled > 250


@pytest.mark.parametrize("region_px, offset", [(192, (0, 0)), (333, (17, 29))])
def test_tiled_equals_untiled_on_model_maps(model_maps, region_px, offset):
    np_prob, hv = model_maps
    y, x = offset
    np_prob, hv = np_prob[y:], hv[:, y:]
    np_prob, hv = np_prob[:, x:], hv[:, :, x:]
    expected, n_untiled = untiled_nuclei(np_prob, hv)
    found, n_owned = tiled_nuclei(np_prob, hv, region_px, margin_px=128)
    assert n_untiled > 80
    assert n_owned == n_untiled
    assert found == expected


def test_too_small_margin_is_detectably_wrong(monuseg_maps):
    """The test above can fail: with no margin, nuclei on region borders are cut."""
    np_prob, hv = monuseg_maps
    expected, _ = untiled_nuclei(np_prob, hv)
    found, _ = tiled_nuclei(np_prob, hv, 256, margin_px=0)
    assert found != expected


@pytest.fixture(scope="module")
def whole_image_maps():
    """pathoseg-light's predictor (256 px patches), a real H&E tile and its maps predicted in one piece."""
    loaded = load_model("pathoseg-light")
    predictor = Predictor(loaded.network, resolve_device("cpu"), patch_px=256, context_px=16)
    rgb = np.asarray(Image.open(shared("examples/he-tcga-tile.png")).convert("RGB"))[:530, :900]
    return predictor, rgb, predictor.predict(rgb)


@pytest.mark.parametrize(
    "window", [Box(0, 0, 130, 170), Box(200, 333, 300, 211), Box(611, 380, 289, 300), Box(17, 450, 900, 150)]
)
def test_a_window_gets_the_maps_of_the_whole_image_bit_for_bit(whole_image_maps, window):
    """Inference patches see the same pixels in any window (those of ``PatchGrid.reads``), so a window's maps are
    the whole image's, exactly: no reflection at a window's edge reaches its pixels."""
    predictor, rgb, whole = whole_image_maps
    frame = Box(0, 0, rgb.shape[1], rgb.shape[0])
    window = window.clip(frame.width, frame.height)
    reads = predictor.patches.reads(window, frame)
    assert reads != frame, "the window must not need the whole image"
    part = predictor.predict_window(rgb[reads.slices], reads, window, frame)
    assert np.array_equal(part.np_prob, whole.np_prob[window.slices])
    assert np.array_equal(part.hv, whole.hv[(slice(None), *window.slices)])
    assert np.array_equal(part.nc_prob, whole.nc_prob[(slice(None), *window.slices)])


def test_patch_grid_reads_mirror_the_frame_edges():
    patches = PatchGrid(patch_px=64, context_px=8)  # step 48
    frame = Box(0, 0, 100, 70)
    assert patches.span(50, 60) == (40, 104)
    assert patches.reads(Box(50, 10, 10, 10), frame) == Box(40, 0, 60, 56)  # rows -8..55: -8..-1 mirror to 8..1
    assert patches.seen(0, 5, 70)[:10].tolist() == [8, 7, 6, 5, 4, 3, 2, 1, 0, 1]
    assert patches.seen(60, 70, 70)[-10:].tolist() == list(range(44, 34, -1))  # 94..103 mirror at 69 to 44..35
    padded = np.pad(np.arange(70), (8, 34), mode="reflect")
    assert np.array_equal(patches.seen(0, 70, 70), padded)


def test_window_pixels_are_a_view_inside_the_frame_and_mirrored_at_its_edge():
    """rows_and_columns gives np.ix_'s pixels: a view for consecutive rows and columns, a gather for mirrored ones."""
    from pathoseg.models.infer import rows_and_columns

    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    inside, mirrored = np.arange(5, 30), np.array([2, 1, 0, 1, 2, 3, 4])
    for rows, cols in ((inside, inside), (mirrored, inside), (inside, mirrored), (mirrored, mirrored)):
        result = rows_and_columns(pixels, rows, cols)
        assert np.array_equal(result, pixels[np.ix_(rows, cols)])
        assert np.shares_memory(result, pixels) == (rows is inside and cols is inside)
