"""The sweep's tables on hand-made traces: `pick_operating_point`, `exits_by_difficulty` and
`layerwise_by_difficulty` (jaxit/sweep.py), with every right answer worked out by hand."""

import numpy as np
import pytest

from jaxit.inference.evaluate_exits import ExitTrace
from jaxit.sweep import exits_by_difficulty, layerwise_by_difficulty, pick_operating_point

# ----------------------------------------------------------------------------- operating point

# binary-exact scores, so "within tolerance" has no rounding question: cutoff 0.75 - 0.125
POINTS = [
    {"threshold": 0.7, "score": 0.6875, "flops_speedup": 2.0},
    {"threshold": 1.0, "score": 0.75, "flops_speedup": 1.0},     # the full-depth point
    {"threshold": 0.3, "score": 0.5, "flops_speedup": 4.0},      # fastest, too poor
    {"threshold": 0.5, "score": 0.625, "flops_speedup": 2.5},    # exactly at the cutoff
    {"threshold": 0.9, "score": 0.8125, "flops_speedup": 1.5},   # best score
]


def test_pick_fastest_point_within_tolerance():
    # qualifying (score >= 0.625): 0.6875@2.0, 0.75@1.0, 0.625@2.5, 0.8125@1.5 -> 2.5
    assert pick_operating_point(POINTS, 0.75, 0.125)["threshold"] == 0.5
    # tighter: 0.75 and 0.8125 qualify (>= 0.6875 also, at 2.0) -> 2.0
    assert pick_operating_point(POINTS, 0.75, 0.0625)["threshold"] == 0.7
    # no tolerance: 0.75@1.0 and 0.8125@1.5 -> 1.5
    assert pick_operating_point(POINTS, 0.75, 0.0)["threshold"] == 0.9
    # very loose: everything qualifies -> the fastest
    assert pick_operating_point(POINTS, 0.75, 1.0)["threshold"] == 0.3
    # the returned object is the point itself (its other fields travel with it)
    assert pick_operating_point(POINTS, 0.75, 0.125) is POINTS[3]


def test_pick_falls_back_to_the_best_score():
    # nothing reaches 0.875 - 0: the best-scoring point, not the fastest or the first
    assert pick_operating_point(POINTS, 0.875, 0.0)["threshold"] == 0.9


# ----------------------------------------------------------------------------- by difficulty

# L = 3 layers, N = 6 examples, 2 classes; P0[l][i] = probability of class 0
P0 = np.array([[0.9, 0.6, 0.3, 0.55, 0.85, 0.45],
               [0.95, 0.85, 0.4, 0.3, 0.2, 0.6],
               [0.3, 0.9, 0.2, 0.1, 0.2, 0.7]])
LABELS = np.array([0, 0, 1, 0, 1, 0])
DIFFICULTY = np.array([2, 0, 1, 0, 2, 1])  # unsorted on purpose


def _trace():
    probs = np.stack([P0, 1.0 - P0], axis=-1).astype(np.float32)  # [L, N, 2]
    return ExitTrace(outputs=np.log(probs), probs=probs, lte=None, labels=LABELS,
                     num_tokens=np.full(6, 5), is_regression=False)


def test_exits_by_difficulty_by_hand():
    """confidence 0.8 (exit when max prob >= 0.8): exit layers [1, 2, 3, 3, 1, 3], exit
    predictions [0, 0, 1, 1, 0, 0] -> correct [1, 1, 1, 0, 0, 1].
    patience 1 (exit when the argmax repeats the previous layer's): layer argmaxes
    ex0 0,0,1  ex1 0,0,0  ex2 1,1,1  ex3 0,1,1  ex4 0,1,1  ex5 1,0,0 -> exits [2, 2, 2, 3, 3, 3],
    predictions [0, 0, 1, 1, 1, 0] -> correct [1, 1, 1, 0, 1, 1].
    Levels: 0 = ex1, ex3; 1 = ex2, ex5; 2 = ex0, ex4."""
    chosen = {"confidence": {"threshold": 0.8, "score": 0.0, "flops_speedup": 1.0},
              "patience": {"threshold": 1, "score": 0.0, "flops_speedup": 1.0}}
    got = exits_by_difficulty(_trace(), DIFFICULTY, chosen)
    want = {
        "confidence": {0: {"n": 2, "avg_exit_layer": 2.5, "accuracy": 0.5},
                       1: {"n": 2, "avg_exit_layer": 3.0, "accuracy": 1.0},
                       2: {"n": 2, "avg_exit_layer": 1.0, "accuracy": 0.5}},
        "patience": {0: {"n": 2, "avg_exit_layer": 2.5, "accuracy": 0.5},
                     1: {"n": 2, "avg_exit_layer": 2.5, "accuracy": 1.0},
                     2: {"n": 2, "avg_exit_layer": 2.5, "accuracy": 1.0}},
    }
    assert set(got) == set(want)
    for name, rows in want.items():
        assert list(got[name]) == [0, 1, 2], name  # int keys, sorted
        for level, row in rows.items():
            assert got[name][level] == pytest.approx(row), (name, level)


def test_exits_by_difficulty_regression_has_no_accuracy():
    values = np.array([[1.0, 2.0, 3.0], [1.05, 2.5, 3.0], [1.0, 2.55, 3.2]], np.float32)
    trace = ExitTrace(outputs=values[..., None], probs=None, lte=None,
                      labels=np.array([1.0, 2.5, 3.0], np.float32), num_tokens=np.full(3, 4),
                      is_regression=True)
    # patience 1 on regression: |change| < 0.1 -> ex0 exits at 2, ex1 at 3, ex2 at 2
    got = exits_by_difficulty(trace, np.array([1, 0, 1]), {"patience": {"threshold": 1}})
    assert got == {"patience": {0: {"n": 1, "avg_exit_layer": 3.0},
                                1: {"n": 2, "avg_exit_layer": 2.0}}}


def test_layerwise_by_difficulty_by_hand():
    """Layer argmaxes vs labels [0, 0, 1, 0, 1, 0]:
    layer 1 preds [0, 0, 1, 0, 0, 1] -> correct [1, 1, 1, 1, 0, 0]
    layer 2 preds [0, 0, 1, 1, 1, 0] -> correct [1, 1, 1, 0, 1, 1]
    layer 3 preds [1, 0, 1, 1, 1, 0] -> correct [0, 1, 1, 0, 1, 1]."""
    got = layerwise_by_difficulty(_trace(), DIFFICULTY)
    assert list(got) == [0, 1, 2]
    assert got[0] == pytest.approx([1.0, 0.5, 0.5])  # ex1, ex3
    assert got[1] == pytest.approx([0.5, 1.0, 1.0])  # ex2, ex5
    assert got[2] == pytest.approx([0.5, 1.0, 0.5])  # ex0, ex4
    assert all(isinstance(v, list) and len(v) == 3 for v in got.values())
