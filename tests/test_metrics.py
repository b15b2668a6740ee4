"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from jaxit.metrics import accuracy, compute_metrics, f1, macro_f1, mcc, pearson, rankdata, spearman


def test_accuracy():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    # scores [N, C] -> argmax
    assert accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 0]) == 0.5
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        accuracy([0, 1, 1], [0, 1])


def test_f1_binary():
    # labels 1 1 1 0 0 ; preds 1 1 0 1 0 -> tp=2 fp=1 fn=1 -> F1 = 4/6
    assert f1([1, 1, 0, 1, 0], [1, 1, 1, 0, 0]) == pytest.approx(2 / 3)
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere: 0/0 -> 0
    assert f1([1, 1], [0, 0]) == 0.0


def test_macro_f1():
    y = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, 0]
    # class 0: tp1 fp1 fn1 -> 0.5 ; class 1: tp2 fp1 fn0 -> 0.8 ; class 2: tp1 fp0 fn1 -> 2/3
    assert macro_f1(p, y) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(p, y, num_classes=4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 4)


def test_mcc():
    # tp=2 tn=1 fp=1 fn=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert mcc([1, 1, 0, 1, 0], [1, 1, 1, 0, 0]) == pytest.approx(1 / 6)
    assert mcc([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert mcc([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert mcc([1, 1, 1], [1, 0, 1]) == 0.0  # one predicted class: denominator 0
    # 3 classes, perfect
    assert mcc([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)


def test_pearson():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x=[1,2,3,4] y=[1,3,2,4]: cov = 4, var = 5, 5 -> 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0  # constant: not NaN
    assert pearson([1.0], [2.0]) == 0.0


def test_rankdata_ties_average():
    np.testing.assert_allclose(rankdata([10, 20, 20, 5, 20]), [2, 4, 4, 1, 4])
    np.testing.assert_allclose(rankdata([3.0, 1.0, 3.0]), [2.5, 1, 2.5])


def test_spearman_with_ties():
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4]:
    # dx = [-1.5, 0, 0, 1.5], dy = [-1.5, -.5, .5, 1.5]; cov = 4.5, var x = 4.5, var y = 5
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone
    assert spearman([2, 2, 2], [1, 2, 3]) == 0.0


def test_compute_metrics_per_task():
    assert compute_metrics("mrpc", [1, 1, 0, 1, 0], [1, 1, 1, 0, 0]) == pytest.approx(
        {"f1": 2 / 3, "accuracy": 0.6})
    assert list(compute_metrics("mrpc", [1], [1])) == ["f1", "accuracy"]  # primary first
    assert compute_metrics("cola", [1, 1, 0, 1, 0], [1, 1, 1, 0, 0])["mcc"] == pytest.approx(1 / 6)
    out = compute_metrics("stsb", np.array([[1.0], [2.0], [3.0], [4.0]]), [1, 3, 2, 4])
    assert out == pytest.approx({"pearson": 0.8, "spearman": 0.8})
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    out = compute_metrics("hatexplain", scores, [0, 0, 1, 1, 2, 2])
    assert out == pytest.approx({"macro_f1": (0.5 + 0.8 + 2 / 3) / 3, "accuracy": 4 / 6})
    with pytest.raises(ValueError, match="unlabeled"):
        compute_metrics("sst2", [0, 1], [0, -1])
