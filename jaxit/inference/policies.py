"""Exit policies: when to stop running layers for one example.

Each rule is a small pure function over the example's *history*: the per-layer exit
outputs seen so far (layer 1 first), each a `LayerOutput`. A policy object wraps one rule
with its settings and the history, with the interface every runner uses::

    policy.reset()                       # before each example
    stop = policy.update(layer, output)  # after layer `layer` (1-based); True = exit here

Runners always stop after the last layer, whatever the policy says; so a policy never
needs to know the depth, and "never exit early" is a threshold that never fires.

Stateless threshold rules (and DACT's bound) also offer `device_gate()`: the same test as
(kind, threshold, direction) numbers that the runner's compiled code evaluates on the
device, so that all layers run in one dispatch and stop on the device (the fused path), or
the next layer can be dispatched before the host has read this one's outputs (the
pipelined path; threshold rules only). The host policy stays authoritative: where
float32 on the device and float64 on the host disagree at the boundary, the runner re-runs
or discards the speculative layer, so results never depend on the gate.

Rules (thresholds are compared as the papers state them):

- `entropy_exit` (DeeBERT): entropy (nats) of the softmax over classes < S.
- `confidence_exit` (BERxiT): max probability >= threshold.
- `normalized_entropy_exit` (FastBERT "speed", ELBERT's puzzlement): entropy / log C.
- `patience_exit` (PABEE): the counter of consecutive layers whose prediction agrees with
  the previous layer's (classification: same argmax; regression: |delta| < threshold)
  resets on any disagreement; exit when it reaches `patience`; patience 0 = full model.
- `lte_exit` (BERxiT learning-to-exit): u >= threshold.
- `elbert_exit` (ELBERT): stage 1 puzzlement < delta; otherwise stage 2, a confidence window
  over the last N layers (default 8) with one of the paper's three criteria. The released
  code watches class 0 of a binary task; here the watched class c is the one predicted at
  the current layer, which is the same rule for binary tasks and extends to any C:
    1 (default) "a class probability varies monotonically": c leads the runner-up by more
      than 2*margin at the window's first layer and p_c never decreases over the window
      (binary: the code's "p_0 > 0.5 + margin, then p_0 non-decreasing", or mirrored);
    2 "the range of max p is below a value": c leads by more than 2*margin at every layer
      of the window and max p_c - min p_c <= max_range;
    3 "the predicted label stays the same": c leads by more than 2*margin at every layer of
      the window.
  margin defaults to 0.0 (the released config); max_range to 0.05 (not given anywhere).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import numpy as np


class LayerOutput(NamedTuple):
    """One layer's exit outputs for one example, on the host.

    outputs: [C] logits, or [1] the regression value
    probs:   [C] softmax of the logits (classification), or None
    lte:     the LTE certainty u, or None when the model has no LTE module
    halting: the DACT halting value h, or None when the model has no halting units
    """

    outputs: np.ndarray
    probs: np.ndarray | None = None
    lte: float | None = None
    halting: float | None = None


def layer_output(outputs, lte=None, is_regression: bool = False, halting=None) -> LayerOutput:
    """Builds a `LayerOutput` from logits (computing the softmax) or a regression value."""
    outputs = np.asarray(outputs, np.float64).reshape(-1)
    probs = None
    if not is_regression:
        z = np.exp(outputs - outputs.max())
        probs = z / z.sum()
    return LayerOutput(outputs, probs, None if lte is None else float(lte),
                       None if halting is None else float(halting))


# ----------------------------------------------------------------------------- measures


def entropy(probs) -> float:
    """Shannon entropy in nats (0 log 0 = 0)."""
    p = np.asarray(probs, np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def normalized_entropy(probs) -> float:
    """Entropy / log C, in [0, 1] (ELBERT's puzzlement, FastBERT's uncertainty)."""
    c = len(probs)
    return entropy(probs) / math.log(c) if c > 1 else 0.0


def _probs(out: LayerOutput) -> np.ndarray:
    if out.probs is None:
        raise ValueError("this exit rule needs class probabilities (a classification task)")
    return out.probs


def _prediction(out: LayerOutput):
    return float(out.outputs[0]) if out.probs is None else int(np.argmax(out.probs))


# ----------------------------------------------------------------------------- rules


# Threshold rules compare in float32, as the runner's device gate does: the model's outputs
# are float32, and a threshold that float32 cannot represent exactly would otherwise make the
# host and the device disagree on values within one rounding step of it.
_f32 = np.float32


def entropy_exit(history: Sequence[LayerOutput], threshold: float) -> bool:
    return _f32(entropy(_probs(history[-1]))) < _f32(threshold)


def normalized_entropy_exit(history: Sequence[LayerOutput], threshold: float) -> bool:
    return _f32(normalized_entropy(_probs(history[-1]))) < _f32(threshold)


def confidence_exit(history: Sequence[LayerOutput], threshold: float) -> bool:
    return _f32(np.max(_probs(history[-1]))) >= _f32(threshold)


def lte_exit(history: Sequence[LayerOutput], threshold: float) -> bool:
    u = history[-1].lte
    if u is None:
        raise ValueError("the LTE exit rule needs a model with an LTE module (lte=True)")
    return _f32(u) >= _f32(threshold)


def patience_count(history: Sequence[LayerOutput], regression_threshold: float | None = None):
    """PABEE's counter after the last layer: consecutive agreements with the previous layer,
    reset to 0 on any disagreement (0 after layer 1)."""
    count = 0
    for prev, cur in itertools.pairwise(history):
        if cur.probs is None:  # regression
            if regression_threshold is None:
                raise ValueError("patience on a regression task needs regression_threshold")
            agree = abs(float(cur.outputs[0]) - float(prev.outputs[0])) < regression_threshold
        else:
            agree = int(np.argmax(cur.probs)) == int(np.argmax(prev.probs))
        count = count + 1 if agree else 0
    return count


def patience_exit(history: Sequence[LayerOutput], patience: int,
                  regression_threshold: float | None = None) -> bool:
    if patience <= 0:  # PABEE: patience 0 runs the full model
        return False
    return patience_count(history, regression_threshold) >= patience


def _lead(p: np.ndarray, c: int) -> float:
    """p_c minus the largest other probability."""
    others = np.delete(p, c)
    return float(p[c] - others.max()) if len(others) else 1.0


def window_criterion(history: Sequence[LayerOutput], window: int = 8, criterion: int = 1,
                     margin: float = 0.0, max_range: float = 0.05) -> bool:
    """ELBERT's stage 2 over the last `window` layers (False until that many exist)."""
    if len(history) < window or window < 1:
        return False
    probs = np.stack([_probs(o) for o in history[-window:]])  # [N, C]
    c = int(np.argmax(probs[-1]))
    pc = probs[:, c]
    if criterion == 1:
        return _lead(probs[0], c) > 2 * margin and bool(np.all(np.diff(pc) >= 0))
    leads_all = all(_lead(p, c) > 2 * margin for p in probs)
    if criterion == 2:
        return leads_all and float(pc.max() - pc.min()) <= max_range
    if criterion == 3:
        return leads_all
    raise ValueError(f"ELBERT window criterion must be 1, 2 or 3, got {criterion}")


def elbert_exit(history: Sequence[LayerOutput], delta: float, window: int = 8,
                criterion: int = 1, margin: float = 0.0, max_range: float = 0.05) -> bool:
    if _f32(normalized_entropy(_probs(history[-1]))) < _f32(delta):
        return True
    return window_criterion(history, window, criterion, margin, max_range)


# ----------------------------------------------------------------------------- policies


# Device gate kinds: which per-layer score the compiled step compares with the threshold.
# GATE_DACT is DACT's halting bound on the accumulated (a_n, p_n): (GATE_DACT, tolerance,
# value_range); only the runner's fused path (which carries a and p) evaluates it.
GATE_MAX_PROB, GATE_ENTROPY, GATE_NORM_ENTROPY, GATE_LTE, GATE_LAYER, GATE_DACT = range(6)
GATE_GE, GATE_LT = 1.0, -1.0  # stop when score >= threshold / score < threshold


class ExitPolicy(Protocol):
    name: str

    def reset(self) -> None: ...

    def update(self, layer: int, output: LayerOutput) -> bool: ...

    # optional: def device_gate(self) -> tuple[int, float, float] | None


def device_gate(policy) -> np.ndarray | None:
    """The policy's device gate as a float32 [3] array (kind, threshold, direction), or None
    when the rule needs state across layers (patience, ELBERT's window)."""
    fn = getattr(policy, "device_gate", None)
    gate = fn() if fn is not None else None
    return None if gate is None else np.asarray(gate, np.float32)


class HistoryPolicy:
    """A rule over the history, with its settings; `update` appends and asks the rule."""

    name = "rule"

    def __init__(self, rule: Callable[..., bool], **settings):
        self.rule = rule
        self.settings = settings
        self.history: list[LayerOutput] = []

    def reset(self) -> None:
        self.history = []

    def update(self, layer: int, output: LayerOutput) -> bool:
        del layer
        self.history.append(output)
        return bool(self.rule(self.history, **self.settings))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({args})"


class _LastLayerPolicy(HistoryPolicy):
    """A rule on the last layer's outputs only: no history kept, and a device gate."""

    gate_kind: int = -1
    gate_direction: float = GATE_GE

    def __init__(self, rule, threshold: float):
        super().__init__(rule, threshold=float(threshold))

    def update(self, layer: int, output: LayerOutput) -> bool:
        return bool(self.rule((output,), **self.settings))

    def device_gate(self):
        return (self.gate_kind, self.settings["threshold"], self.gate_direction)


class EntropyPolicy(_LastLayerPolicy):
    name, gate_kind, gate_direction = "entropy", GATE_ENTROPY, GATE_LT

    def __init__(self, threshold: float):
        super().__init__(entropy_exit, threshold)


class NormalizedEntropyPolicy(_LastLayerPolicy):
    name, gate_kind, gate_direction = "normalized_entropy", GATE_NORM_ENTROPY, GATE_LT

    def __init__(self, threshold: float):
        super().__init__(normalized_entropy_exit, threshold)


class ConfidencePolicy(_LastLayerPolicy):
    name, gate_kind, gate_direction = "confidence", GATE_MAX_PROB, GATE_GE

    def __init__(self, threshold: float):
        super().__init__(confidence_exit, threshold)


class LTEPolicy(_LastLayerPolicy):
    name, gate_kind, gate_direction = "lte", GATE_LTE, GATE_GE

    def __init__(self, threshold: float):
        super().__init__(lte_exit, threshold)


class PatiencePolicy(HistoryPolicy):
    name = "patience"

    def __init__(self, patience: int, regression_threshold: float | None = None):
        super().__init__(patience_exit, patience=int(patience),
                         regression_threshold=regression_threshold)


class ELBERTPolicy(HistoryPolicy):
    name = "elbert"

    def __init__(self, delta: float, window: int = 8, criterion: int = 1, margin: float = 0.0,
                 max_range: float = 0.05):
        super().__init__(elbert_exit, delta=delta, window=window, criterion=criterion,
                         margin=margin, max_range=max_range)


def dact_can_stop(a: np.ndarray, p: float, layers_left: int, is_regression: bool,
                  tolerance: float = 0.1, value_range: float = 5.0) -> bool:
    """DACT's halting bound after a layer with accumulator a [C] (or [1]) and p = p_n.

    Classification (seed 001): the top class c* cannot be overtaken by the runner-up c_ru in
    the d = `layers_left` remaining layers when a[c*] (1 - p)^d >= a[c_ru] + p d: each later
    layer scales a by (1 - p_m) >= (1 - p) and adds at most p_m <= p to any class.
    Regression (our rule): a later layer moves a by p_{m-1} |y_m - a_{m-1}| <= p * range,
    so stop when p * d * value_range <= tolerance (|a_L - a_n| <= tolerance whenever the
    heads' values stay within a `value_range`-wide interval, e.g. 5 for STS-B's 0..5).
    """
    d = int(layers_left)
    if d <= 0:
        return True
    p = float(p)
    if is_regression:
        return p * d * float(value_range) <= float(tolerance)
    a = np.asarray(a, np.float64)
    if a.size < 2:
        return True
    top2 = np.sort(a)[-2:]
    return bool(top2[1] * (1.0 - p) ** d >= top2[0] + p * d)


class DACTPolicy:
    """DACT-BERT's exit rule: accumulate a_n, p_n from each layer's head output and halting
    value (`LayerOutput.halting`), stop when `dact_can_stop`; the answer is a_n
    (`answer()`: log a_n for classification, so argmax and softmax match a_n; [a_n] for
    regression). `num_layers` is the model's depth L (d = L - n)."""

    name = "dact"

    def __init__(self, num_layers: int, tolerance: float = 0.1, value_range: float = 5.0):
        self.num_layers = int(num_layers)
        self.tolerance, self.value_range = float(tolerance), float(value_range)
        self.reset()

    def reset(self) -> None:
        self.a: np.ndarray | None = None
        self.p = 1.0

    def update(self, layer: int, output: LayerOutput) -> bool:
        if output.halting is None:
            raise ValueError("the DACT exit rule needs a model with halting units (method dact)")
        regression = output.probs is None
        y = np.asarray(output.outputs if regression else output.probs, np.float64)
        a = np.zeros_like(y) if self.a is None else self.a
        self.a = y * self.p + a * (1.0 - self.p)
        self.p = float(output.halting) * self.p
        return dact_can_stop(self.a, self.p, self.num_layers - layer, regression,
                             self.tolerance, self.value_range)

    def device_gate(self):
        """The same bound in float32 on the device (the runner's fused path)."""
        return (GATE_DACT, self.tolerance, self.value_range)

    def answer(self) -> np.ndarray:
        if self.a is None:
            raise ValueError("DACTPolicy.answer() before any layer")
        if self.a.size == 1:
            return self.a.astype(np.float32)
        return np.log(np.maximum(self.a, 1e-8)).astype(np.float32)

    def __repr__(self):
        return (f"DACTPolicy(num_layers={self.num_layers}, tolerance={self.tolerance}, "
                f"value_range={self.value_range})")


class FixedLayerPolicy:
    """Every example exits at `layer` (layer-wise scores through a runner)."""

    name = "fixed"

    def __init__(self, layer: int):
        self.layer = int(layer)

    def reset(self) -> None:
        pass

    def update(self, layer: int, output: LayerOutput) -> bool:
        return layer >= self.layer

    def device_gate(self):
        return (GATE_LAYER, float(min(self.layer, 2**24)), GATE_GE)

    def __repr__(self):
        return f"FixedLayerPolicy(layer={self.layer})"


class NeverExit(FixedLayerPolicy):
    """The full model: never exits before the last layer."""

    name = "full"

    def __init__(self):
        super().__init__(10**9)

    def __repr__(self):
        return "NeverExit()"


POLICIES = {
    "entropy": EntropyPolicy, "normalized_entropy": NormalizedEntropyPolicy,
    "confidence": ConfidencePolicy, "lte": LTEPolicy, "patience": PatiencePolicy,
    "elbert": ELBERTPolicy, "fixed": FixedLayerPolicy,
}


def make_policy(name: str, threshold, **settings) -> ExitPolicy:
    """A policy by name with its main threshold (patience for "patience", delta for
    "elbert", the layer for "fixed")."""
    if name not in POLICIES:
        raise ValueError(f"unknown exit policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name](threshold, **settings)


# PABEE on regression: consecutive layers "agree" when their values differ by less than this
# (STS-B's 0..5 scale; the PABEE paper does not give its value).
REGRESSION_PATIENCE_DELTA = 0.1


def policy_for(name: str, threshold, num_layers: int, is_regression: bool = False):
    """`make_policy`, plus "dact" (its threshold is the regression tolerance) and patience on
    regression tasks (agreement = |change| < REGRESSION_PATIENCE_DELTA)."""
    if name == "dact":
        return DACTPolicy(num_layers, tolerance=float(threshold))
    if name == "patience" and is_regression:
        return make_policy(name, threshold, regression_threshold=REGRESSION_PATIENCE_DELTA)
    return make_policy(name, threshold)
