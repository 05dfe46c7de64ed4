"""The notebooks run from top to bottom (on their quick / small configuration), so they never
rot."""

import os
import pathlib

import pytest

# the dev extra's notebook runner; a stack without it skips these tests, naming the package
nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, workdir, timeout: int) -> str:
    """Execute notebooks/<name> with `workdir` as its working directory; its text output."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    resources = {"metadata": {"path": str(workdir)}}
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.spu
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICK", "1")
    work = tmp_path / "notebooks"
    work.mkdir()
    # the notebook adds ".." to sys.path: give it the checkout there
    os.symlink(NOTEBOOKS.parent / "secfwt_jax", tmp_path / "secfwt_jax")
    outputs = run_notebook("01_quickstart.ipynb", work, 900)
    assert "max |secure - plaintext|" in outputs and "train_acc" in outputs
    assert (work / "quickstart_run" / "curves.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.spu
def test_protocols_notebook_runs_the_small_configuration(monkeypatch):
    """02: the tiny model measured live under aby3 and semi2k, then the committed results."""
    monkeypatch.setenv("SECFWT_NB_SMALL", "1")
    text = run_notebook("02_protocols.ipynb", NOTEBOOKS, 360)
    assert "small=True" in text
    for protocol in ("aby3", "semi2k"):
        line = next(x for x in text.splitlines()
                    if x.startswith(f"{protocol}: fot_secfwt query vs sft iteration"))
        # a forward query of the tiny model costs less than an SFT step, in bytes
        assert float(line.rsplit("bytes ", 1)[1].rstrip("x")) > 1.0, line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_attention_notebook_runs_the_small_configuration(monkeypatch):
    """03: small configuration, plaintext only."""
    monkeypatch.setenv("SECFWT_NB_SMALL", "1")
    text = run_notebook("03_attention.ipynb", NOTEBOOKS, 100)
    assert "small=True" in text
    assert "max |cos err|" in text and "distance per element" in text
