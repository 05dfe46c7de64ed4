"""Black-Box Tuning's data (Sun et al. 2022; github.com/txsun1997/Black-Box-Tuning, bbt.py):
the split it tests on, as Hugging Face gives it, and the full training set its few-shot
train/dev split is drawn from (by `secfwt_jax.tasks.data.true_few_shot`)."""

from __future__ import annotations

import os

from secfwt_jax.tasks.data import (
    LOCAL_LAYOUTS,
    Example,
    _layout,
    load_split,
    read_tsv,
    resolve_data_dir,
)
from secfwt_jax.tasks.registry import Task, as_task


def load_bbt_test(task: Task | str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """The split BBT tests on, as Hugging Face gives it (bbt.py: GLUE validation for sst2,
    mrpc, rte; the test set for the others): LocalLayout.bbt_test where the local `test` file
    is LM-BFF's version of it, else the local test file (see load_split)."""
    t = as_task(task)
    layout = _layout(t)
    if layout.bbt_test is None:
        return load_split(t, data_dir, "test")
    name, fmt = layout.bbt_test
    path = resolve_data_dir(data_dir) / layout.dirname / name
    if not path.is_file():
        raise FileNotFoundError(f"no file {str(path)!r} (BBT's test split of {t.name!r})")
    return read_tsv(path, t, fmt)


def load_full_train(task: Task | str, data_dir: str | os.PathLike | None = None) -> list[Example]:
    """The task's full training set from the local directory (sst2, mrpc, rte have one), e.g.
    as input to `true_few_shot`. FileNotFoundError when the local copy has none."""
    t = as_task(task)
    layout = _layout(t)
    root = resolve_data_dir(data_dir)
    if layout.full_train is None:
        with_full = [n for n, lay in LOCAL_LAYOUTS.items() if lay.full_train is not None]
        raise FileNotFoundError(
            f"no local full training set for task {t.name!r}; tasks with one: "
            f"{', '.join(with_full)}; others: load_hf({t.name!r}, 'train')"
        )
    name, fmt = layout.full_train
    path = root / layout.dirname / name
    if not path.is_file():
        raise FileNotFoundError(f"no file {str(path)!r} (the full training set of {t.name!r})")
    return read_tsv(path, t, fmt)
