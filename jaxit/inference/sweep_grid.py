"""Threshold grids that cover a model's whole trade-off curve, chosen from its own dev scores.

A fixed grid can miss a model's operating region (an LTE model whose certainties all sit
in [0.4, 0.6] jumps from "never exits" to "exits at once" between two grid points; 4-class
entropy runs to ln 4 = 1.39, past a grid that stops at 0.7). `sweep_thresholds` takes the
quantiles of the rule's own per-layer score over the dev examples (layers 1..L-1, the ones
that can exit early), adds the two ends (nothing exits early / everything exits at layer 1)
and the fixed grid, then `refine_thresholds` bisects wherever two neighbouring thresholds'
average exit layers differ by more than `max_gap`, so the curve runs from about 1 to L in
small steps. Every threshold taken from the data is a cut point: the midpoint between two
neighbouring distinct scores at least MIN_CUT_GAP apart, never next to a score (the device
computes the scores in float32 and must take the same decisions as the host's sweep).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from jaxit.inference.evaluate_exits import ExitTrace, default_thresholds, simulate_exits

# the threshold rules with a per-layer score (ELBERT's δ compares the normalised entropy)
_RULES = ("confidence", "lte", "entropy", "normalized_entropy", "elbert")


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


# cuts between score values closer than this are skipped: the device computes the scores in
# float32 and could put an example on the other side of such a threshold than the host does
MIN_CUT_GAP = 1e-5


def cut_points(scores: np.ndarray) -> np.ndarray:
    """Midpoints between consecutive distinct score values at least MIN_CUT_GAP apart: every
    threshold there has the largest margin to the data that separates the same examples."""
    u = np.unique(np.asarray(scores, np.float64).ravel())
    ok = np.diff(u) >= MIN_CUT_GAP
    return ((u[:-1] + u[1:]) / 2)[ok]


def sweep_thresholds(trace: ExitTrace, name: str, num_quantiles: int = 24) -> list[float]:
    """The thresholds to sweep for rule `name`: the fixed grid, cut points at the quantiles
    of the rule's own scores and both ends (module docstring); the fixed grid alone for rules
    without a per-layer score (patience: also 0..L-1; DACT)."""
    fixed = [float(t) for t in default_thresholds(name)]
    if name == "patience":
        return sorted(set(fixed) | {float(p) for p in range(trace.num_layers)})
    scores = rule_scores(trace, name)
    if scores is None or scores.size == 0:
        return fixed
    cuts = cut_points(scores)
    picked = cuts[np.unique(np.round(np.linspace(0, len(cuts) - 1, num_quantiles)).astype(int))] \
        if len(cuts) else cuts
    ends = [0.0, float(scores.max()) + 1e-3]  # below / above every score: the curve's ends
    return sorted(set(fixed) | {float(np.float32(t)) for t in picked} | set(ends))


def refine_thresholds(trace: ExitTrace, make_policy: Callable, thresholds, max_gap: float = 0.25,
                      max_points: int = 64, name: str | None = None) -> list[float]:
    """`thresholds` plus cut points wherever neighbouring thresholds' average exit layers
    differ by more than `max_gap` (at most `max_points` in all). `name`: the rule, whose
    scores give the cut points (None: plain midpoints)."""
    scores = rule_scores(trace, name) if name else None
    cuts = cut_points(scores) if scores is not None and scores.size else None
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
        if cuts is not None:
            inside = cuts[(cuts > a) & (cuts < b)]
            mid = float(np.float32(inside[len(inside) // 2])) if len(inside) else a
        else:
            mid = float(np.float32((a + b) / 2))
        if mid <= a or mid >= b:  # nothing separates them: one score value is the jump
            stuck.add((a, b))
            continue
        avg[mid] = float(simulate_exits(trace, make_policy(mid))[0].mean())
    return sorted(avg)
