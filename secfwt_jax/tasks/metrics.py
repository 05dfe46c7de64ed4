"""Classification metrics on predicted and gold label ids (plain numpy, no sklearn).

`f1` is the binary F1 of the positive class 1, as GLUE reports for MRPC (label 1 =
"equivalent"), matching `sklearn.metrics.f1_score(labels, preds)` that BBT's MRPCMetric calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class LabelSpace(Protocol):
    """What `compute_metrics` reads of a task (registry.Task has these): its name, its number
    of labels and its metric names (keys of METRICS). A protocol, so this module imports
    nothing from the registry (which imports METRICS from here)."""

    name: str
    num_labels: int
    metrics: tuple[str, ...]


def _as_label_arrays(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(preds), np.asarray(labels)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(
            f"preds and labels must be 1-D label ids, got shapes {p.shape} and {y.shape} "
            "(take the argmax of (N, C) logits first)"
        )
    if p.shape != y.shape:
        raise ValueError(f"preds has {p.shape[0]} entries but labels has {y.shape[0]}")
    if p.size == 0:
        raise ValueError("no predictions: preds and labels are empty")
    for name, a in (("preds", p), ("labels", y)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer label ids, got dtype {a.dtype}")
    return p, y


def accuracy(preds, labels) -> float:
    """Fraction of `preds` (N,) equal to `labels` (N,)."""
    p, y = _as_label_arrays(preds, labels)
    return float(np.mean(p == y))


def f1(preds, labels, positive: int = 1) -> float:
    """Binary F1 of class `positive`: 2 TP / (2 TP + FP + FN); 0.0 when that is 0 / 0
    (no positive gold label and none predicted), as scikit-learn returns by default.

    preds, labels: (N,) ids in {0, 1}; any other id is a ValueError.
    """
    p, y = _as_label_arrays(preds, labels)
    for name, a in (("preds", p), ("labels", y)):
        bad = sorted(set(np.unique(a).tolist()) - {0, 1})
        if bad:
            raise ValueError(f"binary f1 needs ids in {{0, 1}}; {name} holds {bad}")
    tp = int(np.sum((p == positive) & (y == positive)))
    fp = int(np.sum((p == positive) & (y != positive)))
    fn = int(np.sum((p != positive) & (y == positive)))
    denom = 2 * tp + fp + fn
    return 2.0 * tp / denom if denom else 0.0


METRICS: dict[str, Callable[..., float]] = {"accuracy": accuracy, "f1": f1}


def compute_metrics(task: LabelSpace, preds, labels) -> dict[str, float]:
    """{metric name: value} for each of `task.metrics`, on (N,) predicted and gold label ids."""
    p, y = _as_label_arrays(preds, labels)
    for name, a in (("preds", p), ("labels", y)):
        if a.min() < 0 or a.max() >= task.num_labels:
            raise ValueError(
                f"task {task.name!r} has labels 0..{task.num_labels - 1}; {name} holds "
                f"{sorted(set(a[(a < 0) | (a >= task.num_labels)].tolist()))}"
            )
    return {name: METRICS[name](p, y) for name in task.metrics}
