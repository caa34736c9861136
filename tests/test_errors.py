"""Bad input is one line; a bug is a traceback with a request to report it, never disguised as bad input."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pathoseg.cli import main
from pathoseg.config import ConfigError, load_config
from pathoseg.distributed import ClusterError
from pathoseg.errors import InputError, PathosegError, SettingsError
from pathoseg.io.annotations import AnnotationError
from pathoseg.io.files import DiskFullError, OutputError
from pathoseg.io.geojson import GeoJSONError
from pathoseg.io.slide import SlideError, open_slide
from pathoseg.io.tiff import TiffReadError
from pathoseg.models.weights import CheckpointError
from pathoseg.plan import plan_slide


def test_every_deliberate_error_is_a_pathoseg_error():
    for error in (SlideError, AnnotationError, GeoJSONError, TiffReadError, CheckpointError):
        assert issubclass(error, InputError)
    assert issubclass(ConfigError, SettingsError)
    for error in (OutputError, DiskFullError, ClusterError, InputError, SettingsError):
        assert issubclass(error, PathosegError) and not issubclass(error, ValueError)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "notes.png"), "--mpp", "0.25"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and str(tmp_path / "notes.png") in result.output


@pytest.mark.parametrize(
    "bug",
    [
        ZeroDivisionError("division by zero"),
        ValueError("operands could not be broadcast together with shapes (3,) (4,)"),
    ],
)
def test_a_bug_shows_its_traceback_and_asks_for_a_report(tmp_path, monkeypatch, bug):
    """A ValueError from inside (numpy's, say) is a bug, not bad input: it is not turned into one tidy line."""

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(importlib.import_module("pathoseg.cli.info"), "open_slide", broken)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "tile.png")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "tile.png"), "--mpp", "0.25"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and "in broken" in result.output
    assert "this is a bug in pathoseg" in result.output and "please report it" in result.output


def test_importing_pathoseg_leaves_pils_bomb_guard_alone(tmp_path):
    """PIL's limit is raised only while pathoseg opens a file the user named, and put back after."""
    import pathoseg.io.slide  # noqa: F401  (imported: the old code changed the limit on import)

    default = Image.MAX_IMAGE_PIXELS
    assert default is not None
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "tile.png")
    with open_slide(tmp_path / "tile.png", 0.25) as slide:
        assert slide.dimensions == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == default


def test_a_slide_is_closed_when_planning_it_fails(tmp_path):
    """No tissue in the slide: the run is refused, and the slide it opened is closed (reading it fails)."""
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(
        blank,
        np.full((512, 512, 3), 245, np.uint8),
        tile=(256, 256),
        resolution=(40000, 40000),
        resolutionunit="CENTIMETER",
    )
    with pytest.raises(SlideError, match="no tissue") as refused:
        plan_slide(blank, tmp_path / "out", load_config())
    opened = next(entry.frame.f_locals["slide"] for entry in refused.traceback if "slide" in entry.frame.f_locals)
    with pytest.raises(Exception, match="closed"):
        opened.read_region(0, 0, 0, 8, 8)


def test_a_slide_is_a_context_manager(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "tile.png")
    with open_slide(tmp_path / "tile.png", 0.25) as slide:
        assert slide.read_region(0, 0, 0, 8, 8).shape == (8, 8, 3)
    with pytest.raises(Exception, match="closed"):
        slide.read_region(0, 0, 0, 8, 8)
