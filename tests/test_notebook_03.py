"""notebooks/03_attention.ipynb runs from top to bottom (small configuration, plaintext only)."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "03_attention.ipynb")


@pytest.mark.timeout(120)
def test_attention_notebook_executes_on_the_small_configuration(monkeypatch):
    monkeypatch.setenv("SECFWT_NB_SMALL", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=100, kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
    )
    client.execute()
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "small=True" in text
    assert "max |cos err|" in text and "distance per element" in text
