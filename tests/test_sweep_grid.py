"""Sweep grids from the model's own scores: every curve spans exits from layer 1 to L in
small steps, where a fixed grid jumps (4-class entropy past 0.7; LTE certainties packed
in [0.4, 0.6])."""

import numpy as np
import pytest

from jaxit.inference.evaluate_exits import ExitTrace, default_thresholds, simulate_exits
from jaxit.inference.policies import policy_for
from jaxit.inference.sweep_grid import refine_thresholds, rule_scores, sweep_thresholds

L, N = 6, 400


def _trace(classes=4, lte=False, seed=0):
    rng = np.random.default_rng(seed)
    # logits that sharpen with depth: high entropy early (4 classes: up to ln 4)
    logits = rng.normal(size=(L, N, classes)) * np.linspace(0.2, 3.0, L)[:, None, None]
    logits = logits.astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    u = (0.4 + 0.2 * rng.random((L, N))).astype(np.float32) if lte else None
    return ExitTrace(logits, probs.astype(np.float32), u, rng.integers(0, classes, N),
                     np.full(N, 10), False)


def _avg_exits(trace, name, thresholds):
    return [float(simulate_exits(trace, policy_for(name, t, L))[0].mean()) for t in thresholds]


@pytest.mark.parametrize("name", ["entropy", "normalized_entropy", "confidence", "lte"])
def test_curve_spans_every_layer_in_small_steps(name):
    trace = _trace(lte=name == "lte")
    make = lambda t: policy_for(name, t, L)
    grid = refine_thresholds(trace, make, sweep_thresholds(trace, name), max_gap=0.25,
                             name=name)
    avg = _avg_exits(trace, name, grid)
    assert min(avg) == pytest.approx(1.0) and max(avg) == pytest.approx(float(L))
    steps = np.abs(np.diff(sorted(avg)))
    assert steps.max() <= 0.25 + 1e-9, steps.max()
    if name in ("entropy", "lte"):  # where the fixed grid leaves a hole in the curve
        fixed = np.abs(np.diff(sorted(_avg_exits(trace, name, default_thresholds(name)))))
        assert fixed.max() > 1.0


def test_entropy_grid_reaches_four_class_entropies():
    trace = _trace()
    scores = rule_scores(trace, "entropy")
    assert scores.max() > 1.2  # close to ln 4
    grid = sweep_thresholds(trace, "entropy")
    assert max(t for t in grid if t < 1e8) > scores.max()  # "everything exits at layer 1"
    assert 0.0 in grid  # "nothing exits early"


def test_patience_and_dact_keep_their_grids():
    trace = _trace()
    assert sweep_thresholds(trace, "patience") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert sweep_thresholds(trace, "dact") == [float(t) for t in default_thresholds("dact")]


def test_thresholds_keep_a_margin_to_every_score():
    """A threshold never sits within MIN_CUT_GAP / 2 of a score the rule compares (the device
    computes scores in float32: a threshold next to one could flip its exit)."""
    from jaxit.inference.sweep_grid import MIN_CUT_GAP

    trace = _trace()
    for name in ("entropy", "confidence", "normalized_entropy"):
        scores = np.unique(rule_scores(trace, name))
        make = lambda t, name=name: policy_for(name, t, L)
        grid = refine_thresholds(trace, make, sweep_thresholds(trace, name), name=name)
        fixed = set(default_thresholds(name))
        for t in grid:
            if t in fixed or t == 0.0:
                continue
            assert np.abs(scores - t).min() >= MIN_CUT_GAP / 2 - 1e-7, (name, t)


def test_eta_scales_fill_the_holes_of_the_tokens_only_curve():
    """The depth + width sweep adds η scales where the kept fraction jumps (a fixed grid of
    scales can miss the whole region where a model drops tokens), midpoint by midpoint."""
    from jaxit.depth_width_sweep import next_eta_scale

    kept = {0.0: 1.0, 1.0: 0.97, 2.0: 0.4, 3.0: 0.35}
    assert next_eta_scale(kept) == 1.5  # the 0.57 jump, not the small ones
    kept[1.5] = 0.9
    assert next_eta_scale(kept) == 1.75
    assert next_eta_scale({0.0: 1.0, 1.0: 0.95, 2.0: 0.9}) is None  # no hole
    assert next_eta_scale({0.0: 1.0}) is None
    assert next_eta_scale({0.0: 1.0, 0.0005: 0.5}) is None  # a jump no scale can split
