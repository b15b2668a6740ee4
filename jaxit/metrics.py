"""Task metrics in plain numpy (no scipy / scikit-learn).

Conventions:
- Predictions for classification are class ids [N], or scores/logits [N, C] (argmax taken).
  Regression predictions are [N] or [N, 1].
- Degenerate inputs give 0.0, never NaN: no examples; F1 with no positive predictions or no
  positive labels (precision/recall 0/0 counts as 0, like scikit-learn's zero_division=0);
  MCC with a zero denominator (one class only in labels or predictions, as scikit-learn);
  Pearson/Spearman when either side is constant or N < 2.
- Spearman is the Pearson correlation of average ranks (ties share their mean rank), as
  scipy.stats.spearmanr.
- MCC for more than two classes is the multiclass generalisation (Gorodkin's R_K), which
  equals the binary MCC for two classes.
"""

from __future__ import annotations

import numpy as np


def _ids(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions)
    y = np.asarray(labels).reshape(-1)
    if p.ndim == 2 and p.shape[-1] > 1:
        p = p.argmax(-1)
    p = p.reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.shape[0]} predictions for {y.shape[0]} labels")
    return p.astype(np.int64), y.astype(np.int64)


def _floats(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.shape[0]} predictions for {y.shape[0]} labels")
    return p, y


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label (0.0 for no examples)."""
    p, y = _ids(predictions, labels)
    return float((p == y).mean()) if len(y) else 0.0


def _f1_of(p: np.ndarray, y: np.ndarray, positive: int) -> float:
    tp = np.sum((p == positive) & (y == positive))
    fp = np.sum((p == positive) & (y != positive))
    fn = np.sum((p != positive) & (y == positive))
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def f1(predictions, labels, positive: int = 1) -> float:
    """Binary F1 of class `positive`: 2TP / (2TP + FP + FN); 0.0 when that is 0/0."""
    p, y = _ids(predictions, labels)
    return _f1_of(p, y, positive)


def macro_f1(predictions, labels, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over classes 0..num_classes-1 (default: the classes
    present in labels or predictions)."""
    p, y = _ids(predictions, labels)
    if not len(y):
        return 0.0
    classes = (np.arange(num_classes) if num_classes is not None
               else np.union1d(np.unique(y), np.unique(p)))
    return float(np.mean([_f1_of(p, y, int(c)) for c in classes]))


def mcc(predictions, labels) -> float:
    """Matthews correlation coefficient (multiclass R_K; binary MCC for two classes);
    0.0 when the denominator is 0."""
    p, y = _ids(predictions, labels)
    if not len(y):
        return 0.0
    classes = np.union1d(np.unique(y), np.unique(p))
    yi = np.searchsorted(classes, y)
    pi = np.searchsorted(classes, p)
    k = len(classes)
    c = np.zeros((k, k), np.float64)
    np.add.at(c, (yi, pi), 1.0)
    t = c.sum(1)  # true counts per class
    q = c.sum(0)  # predicted counts per class
    n = c.sum()
    correct = np.trace(c)
    cov_yp = correct * n - t @ q
    cov_yy = n * n - t @ t
    cov_pp = n * n - q @ q
    denom = np.sqrt(cov_yy * cov_pp)
    return float(cov_yp / denom) if denom > 0 else 0.0


def pearson(predictions, labels) -> float:
    """Pearson correlation; 0.0 if either side is constant or there are < 2 examples."""
    x, y = _floats(predictions, labels)
    if len(x) < 2:
        return 0.0
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    if not np.isfinite(denom) or denom <= 0:
        return 0.0
    return float(np.clip((x * y).sum() / denom, -1.0, 1.0))


def rankdata(x) -> np.ndarray:
    """1-based ranks, ties given the average of the ranks they span (scipy's 'average')."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # group boundaries of equal values
    new = np.concatenate([[True], xs[1:] != xs[:-1]]) if len(xs) else np.zeros(0, bool)
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [len(xs)]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x), np.float64)
    ranks[order] = avg[group]
    return ranks


def spearman(predictions, labels) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0.0 when degenerate."""
    x, y = _floats(predictions, labels)
    return pearson(rankdata(x), rankdata(y))


METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(task, predictions, labels) -> dict[str, float]:
    """The task's metrics ({name: value}, primary first; see `TaskSpec.metrics`).

    task: a `TaskSpec` or task name. predictions: class ids [N] or scores [N, C] for
    classification, values [N] / [N, 1] for regression. labels: [N]. Unlabeled examples
    (label -1 or NaN) are an error: remove them first.
    """
    from jaxit.data.tasks import get_task

    task = get_task(task)
    y = np.asarray(labels)
    if task.is_regression:
        if np.isnan(np.asarray(y, np.float64)).any():
            raise ValueError("labels contain NaN (unlabeled examples): remove them first")
        p = np.asarray(predictions, np.float64)
        if p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        if p.ndim != 1:
            raise ValueError(f"regression predictions must be [N] or [N, 1], got {p.shape}")
    else:
        if (y.astype(np.int64) < 0).any():
            raise ValueError("labels contain -1 (unlabeled examples): remove them first")
        p = predictions
    out = {}
    for name in task.metrics:
        fn = METRICS[name]
        if name == "macro_f1":
            out[name] = fn(p, y, num_classes=task.num_labels)
        else:
            out[name] = fn(p, y)
    return out
