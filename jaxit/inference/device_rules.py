"""Exit rules evaluated on the device, one row per example, for the batched engine.

Every policy of `jaxit.inference.policies` has a device twin here. A rule is a static kind
(which code runs) plus float32 parameters (thresholds: arguments of the compiled step, so a
threshold sweep never recompiles) and a per-example state row of `state_size` floats that
the engine keeps beside each example and passes in and out with every dispatch:

- "threshold": the stateless rules (confidence, entropy, normalised entropy, LTE, a fixed
  layer, never), as the batch-1 runner's device gate (kind, threshold, direction); no state.
- "patience" (PABEE): state (counter, previous prediction or value).
- "elbert": stage 1 puzzlement, else the confidence window (its criterion a parameter:
  one executable serves all three); state = the softmax of every layer so far ([L, C]).
- "dact": DACT's accumulator and halting product; state (a [C], p).

`rule_step` is the float32 twin of the host policies' `update`: the same comparisons in
float32 (thresholds rounded to float32 as the host rules do), so decisions agree with the
batch-1 runner except for values within a rounding step of a threshold.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.inference.policies import (
    DACTPolicy,
    ELBERTPolicy,
    PatiencePolicy,
    device_gate,
)

RULE_KINDS = ("threshold", "patience", "elbert", "dact")
NUM_SCORES = 5  # max p, entropy, normalised entropy, LTE u, layer (the gate kinds' order)


@dataclasses.dataclass(frozen=True)
class DeviceRule:
    """kind: one of RULE_KINDS (static); params: float32 [K] (traced: thresholds, ELBERT's
    window and criterion); state_size: floats of per-example state."""

    kind: str
    params: tuple
    state_size: int

    @property
    def static_key(self) -> tuple:
        return (self.kind, self.state_size)

    def param_array(self) -> np.ndarray:
        return np.asarray(self.params, np.float32)


def device_rule(policy, num_layers: int, num_outputs: int, is_regression: bool) -> DeviceRule:
    """The device twin of a host policy; a clear error for a policy with none."""
    if isinstance(policy, DACTPolicy):
        if policy.num_layers != num_layers:
            raise ValueError(f"DACTPolicy(num_layers={policy.num_layers}) on a model with "
                             f"{num_layers} layers")
        return DeviceRule("dact", (policy.tolerance, policy.value_range), num_outputs + 1)
    if isinstance(policy, PatiencePolicy):
        s = policy.settings
        thr = s["regression_threshold"]
        if is_regression and thr is None:
            raise ValueError("patience on a regression task needs regression_threshold")
        return DeviceRule("patience", (s["patience"], 0.0 if thr is None else thr), 2)
    if isinstance(policy, ELBERTPolicy):
        if is_regression:
            raise ValueError("the ELBERT exit rule needs class probabilities (a classification task)")
        s = policy.settings
        if s["criterion"] not in (1, 2, 3):
            raise ValueError(f"ELBERT window criterion must be 1, 2 or 3, got {s['criterion']}")
        return DeviceRule("elbert", (s["delta"], s["window"], s["margin"], s["max_range"],
                                     s["criterion"]), num_layers * num_outputs)
    gate = device_gate(policy)
    if gate is None:
        raise ValueError(f"{policy!r} has no device rule for the batched engine")
    return DeviceRule("threshold", tuple(float(g) for g in gate), 0)


def layer_scores(probs, u, layer, is_regression: bool):
    """[B, NUM_SCORES] gate inputs from probs [B, C] (classification), u [B], layer []."""
    b = u.shape[0]
    zero = jnp.zeros((b,), jnp.float32)
    max_p = ent = nent = zero
    if not is_regression:
        max_p = probs.max(-1)
        ent = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.maximum(probs, 1e-30)), 0.0),
                       axis=-1)
        c = probs.shape[-1]
        nent = ent / np.float32(np.log(c)) if c > 1 else zero
    layer_f = jnp.broadcast_to(layer.astype(jnp.float32), (b,))
    return jnp.stack([max_p, ent, nent, u, layer_f], axis=-1)


def threshold_stop(scores, gate):
    """gate [3] = (kind, threshold, direction) -> stop [B] (`policies.device_gate`)."""
    value = jnp.take(scores, jnp.clip(gate[0].astype(jnp.int32), 0, scores.shape[-1] - 1),
                     axis=-1)
    return jnp.where(gate[2] > 0, value >= gate[1], value < gate[1])


def _lead(p, c):
    """p [B, C] at class c [B]: p_c minus the largest other probability ([B])."""
    pc = jnp.take_along_axis(p, c[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(c, p.shape[-1], dtype=bool), -jnp.inf, p)
    return jnp.where(p.shape[-1] > 1, pc - others.max(-1), 1.0)


def _elbert(params, probs, scores, hist, layer):
    """ELBERT's rule with the window over hist [B, L, C] (this layer's probs included);
    params (delta, window, margin, max_range, criterion)."""
    delta, window, margin, max_range = params[0], params[1], params[2], params[3]
    num_layers = hist.shape[1]
    stage1 = scores[:, 2] < delta
    c = probs.argmax(-1)
    lf = layer.astype(jnp.float32)
    pos = jnp.arange(num_layers, dtype=jnp.float32)
    in_win = (pos >= lf - window) & (pos < lf)  # 0-based layers of the window
    first_f = jnp.clip(lf - window, 0.0, num_layers - 1.0)
    first = first_f.astype(jnp.int32)
    pc = jnp.take_along_axis(hist, c[:, None, None], axis=-1)[..., 0]  # [B, L]
    enough = (window >= 1) & (lf >= window)
    prev = jnp.concatenate([pc[:, :1], pc[:, :-1]], axis=1)
    rising = jnp.all(jnp.where(in_win & (pos > first_f), pc >= prev, True), axis=1)
    ok1 = (_lead(hist[:, first], c) > 2 * margin) & rising
    leads = jax.vmap(lambda p: _lead(p, c), in_axes=1, out_axes=1)(hist)  # [B, L]
    ok3 = jnp.all(jnp.where(in_win, leads > 2 * margin, True), axis=1)
    hi = jnp.where(in_win, pc, -jnp.inf).max(1)
    lo = jnp.where(in_win, pc, jnp.inf).min(1)
    ok2 = ok3 & (hi - lo <= max_range)
    ok = jnp.where(params[4] == 1, ok1, jnp.where(params[4] == 2, ok2, ok3))
    return stage1 | (enough & ok)


def dact_step(y, h, a, p, d, is_regression: bool, tolerance, value_range):
    """DACT's accumulation and halting bound (float32 twin of `DACTPolicy.update`): y [B, C]
    softmax (or [B, 1] value), h [B], a [B, C], p [B], d = layers left (a Python int, or a
    traced float32 scalar) -> (a', p', stop [B] bool)."""
    a = y * p[:, None] + a * (1.0 - p[:, None])
    p = h * p
    if is_regression:
        stop = p * d * value_range <= tolerance
    elif a.shape[-1] < 2:
        stop = jnp.ones(p.shape, bool)
    else:
        top2 = jax.lax.top_k(a, 2)[0]
        stop = top2[:, 0] * (1.0 - p) ** d >= top2[:, 1] + p * d
    return a, p, stop | (d <= 0)


def _dact(params, y, h, state, layer, num_layers: int, is_regression: bool):
    """`dact_step` on the state row (a [C], p); layer 1 starts from a = 0, p = 1."""
    c = y.shape[-1]
    first = layer <= 1
    a = jnp.where(first, 0.0, state[:, :c])
    p = jnp.where(first, 1.0, state[:, c])
    d = (num_layers - layer).astype(jnp.float32)
    a, p, stop = dact_step(y, h, a, p, d, is_regression, params[0], params[1])
    return stop, jnp.concatenate([a, p[:, None]], axis=1)


def rule_step(rule: DeviceRule, params, out, probs, u, h, state, layer, num_layers: int,
              is_regression: bool):
    """One layer's decision for every row.

    out [B, C] head outputs (float32), probs [B, C] softmax (classification; unused for
    regression), u [B] LTE certainty (zeros without LTE), h [B] halting values (zeros
    without halting units), state [B, S], layer [] int32 (1-based) ->
    (stop [B] bool, state' [B, S]). The last layer always stops."""
    last = layer >= num_layers
    scores = layer_scores(probs, u, layer, is_regression)
    if rule.kind == "threshold":
        return threshold_stop(scores, params) | last, state
    if rule.kind == "patience":
        count, prev = state[:, 0], state[:, 1]
        cur = out[:, 0] if is_regression else probs.argmax(-1).astype(jnp.float32)
        agree = (jnp.abs(cur - prev) < params[1]) if is_regression else (cur == prev)
        count = jnp.where((layer > 1) & agree, count + 1.0, 0.0)
        stop = (params[0] > 0) & (count >= params[0])
        return stop | last, jnp.stack([count, cur], axis=1)
    if rule.kind == "elbert":
        b, c = probs.shape
        hist = state.reshape(b, num_layers, c)
        hist = jnp.where((jnp.arange(num_layers) == layer - 1)[None, :, None], probs[:, None],
                         hist)
        stop = _elbert(params, probs, scores, hist, layer)
        return stop | last, hist.reshape(b, -1)
    if rule.kind == "dact":
        y = out if is_regression else probs
        return _dact(params, y, h, state, layer, num_layers, is_regression)
    raise ValueError(f"unknown device rule kind {rule.kind!r}; known: {RULE_KINDS}")
