"""The worked example notebook runs top to bottom."""

from __future__ import annotations

import pytest
from conftest import REPO


@pytest.mark.timeout(600)
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PATHOSEG_NOTEBOOK_DIR", str(tmp_path))
    notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=500, kernel_name="python3").execute()
    assert (tmp_path / "counts.png").stat().st_size > 1000
    assert (tmp_path / "out" / "nuclei.geojson.gz").is_file()
