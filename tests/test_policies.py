"""Exit rules on hand-made per-layer probability sequences."""

import math

import numpy as np
import pytest

from jaxit.inference.policies import (
    ConfidencePolicy,
    ELBERTPolicy,
    EntropyPolicy,
    FixedLayerPolicy,
    LayerOutput,
    LTEPolicy,
    NeverExit,
    NormalizedEntropyPolicy,
    PatiencePolicy,
    entropy,
    layer_output,
    make_policy,
    normalized_entropy,
    patience_count,
    window_criterion,
)


def cls(*p, lte=None):
    p = np.asarray(p, np.float64)
    return LayerOutput(np.log(p), p, lte)


def reg(v, lte=None):
    return LayerOutput(np.array([v]), None, lte)


def first_exit(policy, seq):
    """1-based layer where `policy` first fires on `seq`, or len(seq) (runner semantics)."""
    policy.reset()
    for layer, out in enumerate(seq, start=1):
        if policy.update(layer, out):
            return layer
    return len(seq)


def test_entropy_measures():
    assert entropy([1.0, 0.0]) == 0.0
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2))
    assert normalized_entropy([0.5, 0.5]) == pytest.approx(1.0)
    assert normalized_entropy([1 / 3] * 3) == pytest.approx(1.0)
    assert normalized_entropy([0.9, 0.1]) == pytest.approx(entropy([0.9, 0.1]) / math.log(2))
    out = layer_output([0.0, math.log(3.0)])
    np.testing.assert_allclose(out.probs, [0.25, 0.75])


def test_entropy_confidence_lte():
    seq = [cls(0.5, 0.5), cls(0.7, 0.3), cls(0.95, 0.05), cls(0.99, 0.01)]
    h = [entropy(o.probs) for o in seq]
    # DeeBERT: entropy (nats) strictly below S
    assert first_exit(EntropyPolicy(h[2] + 1e-6), seq) == 3
    assert first_exit(EntropyPolicy(h[2]), seq) == 4
    assert first_exit(EntropyPolicy(0.0), seq) == 4  # never fires: full depth
    # FastBERT / puzzlement: normalised entropy
    assert first_exit(NormalizedEntropyPolicy(0.9), seq) == 2
    # BERxiT: max prob >= threshold
    assert first_exit(ConfidencePolicy(0.95), seq) == 3
    assert first_exit(ConfidencePolicy(0.5), seq) == 1
    assert first_exit(ConfidencePolicy(1.01), seq) == 4
    # multi-class
    assert first_exit(ConfidencePolicy(0.6), [cls(0.4, 0.3, 0.3), cls(0.1, 0.2, 0.7)]) == 2
    # LTE: u >= threshold, classification or regression alike
    seq_u = [reg(3.0, lte=0.2), reg(3.1, lte=0.6), reg(2.0, lte=0.9)]
    assert first_exit(LTEPolicy(0.6), seq_u) == 2
    assert first_exit(LTEPolicy(0.95), seq_u) == 3
    with pytest.raises(ValueError, match="LTE"):
        first_exit(LTEPolicy(0.5), [cls(0.5, 0.5)])
    with pytest.raises(ValueError, match="probabilities"):
        first_exit(ConfidencePolicy(0.5), [reg(1.0)])


def test_patience_classification_resets_on_disagreement():
    a, b = cls(0.8, 0.2), cls(0.3, 0.7)
    seq = [a, a, b, b, b, a, a, a, a]
    # counters after each layer: 0 1 0 1 2 0 1 2 3
    assert [patience_count(seq[:i]) for i in range(1, 10)] == [0, 1, 0, 1, 2, 0, 1, 2, 3]
    assert first_exit(PatiencePolicy(1), seq) == 2
    assert first_exit(PatiencePolicy(2), seq) == 5
    assert first_exit(PatiencePolicy(3), seq) == 9
    assert first_exit(PatiencePolicy(4), seq) == 9  # never reached: full depth
    # patience 0 = the full model (PABEE), even with perfect agreement
    assert first_exit(PatiencePolicy(0), [a] * 6) == 6


def test_patience_regression_threshold():
    seq = [reg(1.0), reg(1.5), reg(1.55), reg(1.58), reg(3.0), reg(3.05), reg(3.06)]
    # |delta|: .5 .05 .03 1.42 .05 .01 with threshold 0.1 -> counters 0 0 1 2 0 1 2
    assert [patience_count(seq[:i], 0.1) for i in range(1, 8)] == [0, 0, 1, 2, 0, 1, 2]
    assert first_exit(PatiencePolicy(2, regression_threshold=0.1), seq) == 4
    assert first_exit(PatiencePolicy(3, regression_threshold=0.1), seq) == 7
    assert first_exit(PatiencePolicy(1, regression_threshold=1.0), seq) == 2
    with pytest.raises(ValueError, match="regression_threshold"):
        first_exit(PatiencePolicy(1), seq)


def test_elbert_stage1_puzzlement():
    seq = [cls(0.6, 0.4), cls(0.8, 0.2), cls(0.99, 0.01)]
    pz = [normalized_entropy(o.probs) for o in seq]
    assert first_exit(ELBERTPolicy(delta=pz[1] + 1e-6, window=8), seq) == 2
    assert first_exit(ELBERTPolicy(delta=0.0, window=8), seq) == 3


def test_elbert_window_monotonic_criterion():
    rising = [cls(0.55, 0.45), cls(0.6, 0.4), cls(0.6, 0.4), cls(0.7, 0.3)]
    assert window_criterion(rising, window=4, criterion=1)
    assert window_criterion(rising, window=3, criterion=1)
    assert not window_criterion(rising[:3], window=4, criterion=1)  # window not full yet
    dip = [cls(0.55, 0.45), cls(0.65, 0.35), cls(0.6, 0.4), cls(0.7, 0.3)]
    assert not window_criterion(dip, window=4, criterion=1)
    assert window_criterion(dip, window=2, criterion=1)  # only the last two: 0.6 -> 0.7
    # class 1 predicted, its probability rising (the code's "p_0 decreasing" branch)
    falling0 = [cls(0.45, 0.55), cls(0.4, 0.6), cls(0.2, 0.8)]
    assert window_criterion(falling0, window=3, criterion=1)
    # prediction flips inside the window: the current class did not lead at the start
    flip = [cls(0.45, 0.55), cls(0.6, 0.4), cls(0.7, 0.3)]
    assert not window_criterion(flip, window=3, criterion=1)
    # margin: the start must lead by more than 2 * margin
    assert not window_criterion(rising, window=4, criterion=1, margin=0.1)
    assert window_criterion(rising[1:], window=3, criterion=1, margin=0.09)
    # generalised to 3 classes: the currently predicted class is watched
    three = [cls(0.2, 0.5, 0.3), cls(0.1, 0.6, 0.3), cls(0.1, 0.65, 0.25)]
    assert window_criterion(three, window=3, criterion=1)
    three_bad = [cls(0.5, 0.2, 0.3), cls(0.1, 0.6, 0.3), cls(0.1, 0.65, 0.25)]
    assert not window_criterion(three_bad, window=3, criterion=1)


def test_elbert_window_range_and_label_criteria():
    steady = [cls(0.7, 0.3), cls(0.72, 0.28), cls(0.69, 0.31), cls(0.71, 0.29)]
    assert window_criterion(steady, window=4, criterion=2, max_range=0.05)
    assert not window_criterion(steady, window=4, criterion=2, max_range=0.02)
    assert not window_criterion(steady, window=4, criterion=1)  # not monotonic
    wobbly = [cls(0.6, 0.4), cls(0.9, 0.1), cls(0.55, 0.45), cls(0.8, 0.2)]
    assert not window_criterion(wobbly, window=4, criterion=2, max_range=0.05)
    assert window_criterion(wobbly, window=4, criterion=3)  # label 0 throughout
    assert not window_criterion(wobbly, window=4, criterion=3, margin=0.1)  # 0.55 is too close
    flip = [cls(0.6, 0.4), cls(0.4, 0.6), cls(0.6, 0.4)]
    assert not window_criterion(flip, window=3, criterion=3)
    assert not window_criterion(flip, window=3, criterion=2, max_range=1.0)
    with pytest.raises(ValueError, match="criterion"):
        window_criterion(steady, window=2, criterion=4)


def test_elbert_two_stages_in_order():
    # Puzzlement never below delta; window of 3 with rising p fires at layer 3 (criterion 1),
    # the label criterion fires at layer 3 too, the range criterion only once values settle.
    seq = [cls(0.6, 0.4), cls(0.62, 0.38), cls(0.64, 0.36), cls(0.5 + 0.14, 0.36)]
    assert first_exit(ELBERTPolicy(delta=0.1, window=3), seq) == 3
    assert first_exit(ELBERTPolicy(delta=0.1, window=3, criterion=2, max_range=0.01), seq) == 4
    assert first_exit(ELBERTPolicy(delta=0.1, window=8), seq) == 4  # window never full


def test_fixed_never_and_factory():
    seq = [cls(0.99, 0.01)] * 5
    assert first_exit(FixedLayerPolicy(3), seq) == 3
    assert first_exit(NeverExit(), seq) == 5
    assert first_exit(make_policy("confidence", 0.9), seq) == 1
    assert first_exit(make_policy("patience", 2), seq) == 3
    with pytest.raises(ValueError, match="unknown exit policy"):
        make_policy("nope", 1.0)
