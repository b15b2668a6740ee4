"""Threshold grids that cover a model's whole trade-off curve, chosen from its own dev scores.

A fixed grid can miss a model's operating region (an LTE model whose certainties all sit
in [0.4, 0.6] jumps from "never exits" to "exits at once" between two grid points; 4-class
entropy runs to ln 4 = 1.39, past a grid that stops at 0.7). `sweep_thresholds` takes the
quantiles of the rule's own per-layer score over the dev examples (layers 1..L-1, the ones
that can exit early), adds the two ends (nothing exits early / everything exits at layer 1)
and the fixed grid, then `refine_thresholds` bisects wherever two neighbouring thresholds'
average exit layers differ by more than `max_gap`, so the curve runs from about 1 to L in
small steps. Thresholds are float32 values, as the rules compare in float32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from jaxit.inference.evaluate_exits import ExitTrace, default_thresholds, simulate_exits

# rule -> (direction, score): "ge" exits when score >= t, "lt" when score < t
_RULES = {"confidence": "ge", "lte": "ge", "entropy": "lt", "normalized_entropy": "lt",
          "elbert": "lt"}


def rule_scores(trace: ExitTrace, name: str) -> np.ndarray | None:
    """The per-layer score [L-1, N] a threshold rule compares (None: not a threshold rule)."""
    if name == "lte":
        return None if trace.lte is None else np.asarray(trace.lte[:-1], np.float64)
    if name not in _RULES or trace.probs is None:
        return None
    p = np.asarray(trace.probs[:-1], np.float64)
    if name == "confidence":
        return p.max(-1)
    ent = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(-1)
    return ent if name == "entropy" else ent / np.log(p.shape[-1])


def _f32_above(x) -> float:
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def sweep_thresholds(trace: ExitTrace, name: str, num_quantiles: int = 24) -> list[float]:
    """The thresholds to sweep for rule `name`: the fixed grid, the quantiles of the rule's
    own scores and both ends (module docstring); the fixed grid alone for rules without a
    per-layer score (patience: 0..L-1, DACT)."""
    fixed = [float(t) for t in default_thresholds(name)]
    if name == "patience":
        return sorted(set(fixed) | {float(p) for p in range(trace.num_layers)})
    scores = rule_scores(trace, name)
    if scores is None or scores.size == 0:
        return fixed
    q = np.quantile(scores, np.linspace(0.0, 1.0, num_quantiles))
    if _RULES[name] == "ge":  # score >= t exits: t = q lets the scores >= q out
        grid = [float(np.float32(v)) for v in q] + [_f32_above(scores.max())]
    else:  # score < t exits: just above q lets the scores <= q out
        grid = [_f32_above(v) for v in q] + [0.0]
    return sorted(set(fixed) | set(grid))


def refine_thresholds(trace: ExitTrace, make_policy: Callable, thresholds, max_gap: float = 0.25,
                      max_points: int = 64) -> list[float]:
    """`thresholds` plus midpoints wherever neighbouring thresholds' average exit layers
    differ by more than `max_gap` (at most `max_points` in all)."""
    avg = {float(t): float(simulate_exits(trace, make_policy(t))[0].mean())
           for t in thresholds}
    stuck: set = set()
    while len(avg) < max_points:
        ts = sorted(avg)
        gaps = [(abs(avg[b] - avg[a]), a, b) for a, b in itertools.pairwise(ts)
                if (a, b) not in stuck and abs(avg[b] - avg[a]) > max_gap]
        if not gaps:
            break
        _, a, b = max(gaps)
        mid = float(np.float32((a + b) / 2))
        if mid in (a, b):  # float32 cannot split them: one score value is the jump
            stuck.add((a, b))
            continue
        avg[mid] = float(simulate_exits(trace, make_policy(mid))[0].mean())
    return sorted(avg)
