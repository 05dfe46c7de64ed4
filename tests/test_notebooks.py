"""The notebooks run from top to bottom (on their quick configuration), so they never rot."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICK", "1")
    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    work = tmp_path / "notebooks"
    work.mkdir()
    # the notebook adds ".." to sys.path: give it the checkout there
    os.symlink(NOTEBOOKS.parent / "secfwt_jax", tmp_path / "secfwt_jax")
    resources = {"metadata": {"path": str(work)}}
    NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "max |secure - plaintext|" in outputs and "train_acc" in outputs
    assert (work / "quickstart_run" / "curves.png").stat().st_size > 1000
