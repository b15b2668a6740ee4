"""The batch-1 early-exit runner's compiled pieces (pure functions; `runner.py` jits them):
one layer and its exit, packed for one small device->host transfer (`make_layer_compute`,
`unpack`), the per-layer step with a device gate (`make_layer_step`) and the fused run of
every layer in one executable (`make_fused_run`). The gate arithmetic is
`device_rules`' (shared with the batched engine)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders.transformer import MASK_MIN, Encoder, mask_bias_from
from jaxit.heads import halting_value, head_outputs, lte_certainty, pool_features
from jaxit.inference.device_rules import dact_step, layer_scores, threshold_stop
from jaxit.inference.policies import GATE_DACT, LayerOutput


def _kept(mask_bias):
    """0/1 token weights [B, T] (float32) of an additive mask [B, T]."""
    return (mask_bias > MASK_MIN / 2).astype(jnp.float32)


def _features(hidden, mask_bias, pooling: str):
    """The pooled state [B, D] of hidden [B, T, D]: [CLS] or the mean of the unmasked tokens
    (what a "bert" head and a DACT halting unit read)."""
    if pooling == "cls":
        return hidden[:, 0]
    return pool_features(hidden, _kept(mask_bias), pooling)


def exit_outputs(head, hidden, mask_bias, pooling: str):
    """Any exit head (`jaxit.heads.head_outputs`) on hidden [B, T, D] under an additive mask
    [B, T] -> (outputs [B, C], pooled)."""
    return head_outputs(head, hidden, _kept(mask_bias), pooling)


def make_layer_compute(encoder: Encoder, is_regression: bool, pooling: str = "cls"):
    """One layer and its exit (pure):

        compute(layer_params, head_params, lte_params, hidden [B, T, D], mask_bias [B, T],
                layer [] int32) -> (hidden [B, T, D], packed [B, K], scores [B, 5])

    `packed` holds, per example, the outputs [C] (logits or value), the softmax [C]
    (classification), u (with LTE), the halting value h (when the head carries a DACT
    "halting" unit) and a final 1.0 ("this layer ran"); `scores` the device gate's inputs
    (max p, entropy, normalised entropy, u, layer), indexed by the gate kinds.
    """

    def compute(lp, head, lte, hidden, mask_bias, layer):
        hidden = encoder.block(lp, hidden, mask_bias)
        out, pooled = exit_outputs(head, hidden, mask_bias, pooling)
        out = out.astype(jnp.float32)
        parts = [out]
        b = out.shape[0]
        probs = out
        if not is_regression:
            probs = jax.nn.softmax(out, axis=-1)
            parts.append(probs)
        u = jnp.zeros((b,), jnp.float32)
        if lte is not None:
            u = lte_certainty(lte, pooled).astype(jnp.float32)
            parts.append(u[:, None])
        if "halting" in head:  # DACT: this layer's halting unit on the raw [CLS] state
            feats = _features(hidden, mask_bias, pooling)
            parts.append(halting_value(head["halting"], feats)[:, None])
        parts.append(jnp.ones((b, 1), jnp.float32))
        scores = layer_scores(probs, u, layer, is_regression)  # [B, 5], gate kinds
        return hidden, jnp.concatenate(parts, axis=-1), scores

    return compute


def gate_stop(scores, gate):
    """[B] bool: the threshold gate (kind, threshold, direction) on `scores` [B, 5]."""
    return threshold_stop(scores, gate)


def dact_gate_step(y, h, a, p, layers_left: int, is_regression: bool, tolerance, value_range):
    """`device_rules.dact_step` with a static number of layers left (the fused run)."""
    return dact_step(y, h, a, p, int(layers_left), is_regression, tolerance, value_range)


def make_layer_step(encoder: Encoder, is_regression: bool, counter: dict | None = None,
                    pooling: str = "cls"):
    """The per-layer function (pure; jit it once, it serves every layer):

        layer_step(layer_params, head_params, lte_params, hidden [B, T, D], mask_bias [B, T],
                   active [] bool, layer [] int32, gate [3] float32)
            -> (hidden [B, T, D], packed [B, K], next_active [] bool)

    When `active`, runs block + exit head (+ LTE) and packs the outputs
    (`make_layer_compute`); `next_active` is False when the device gate (kind, threshold,
    direction; see `policies.device_gate`) says every example stops here. When not
    `active` (a speculatively dispatched layer after a stop), returns `hidden` unchanged
    and zeros, at almost no cost. `counter["layer"]` counts traces when given.
    """
    compute = make_layer_compute(encoder, is_regression, pooling)

    def layer_step(lp, head, lte, hidden, mask_bias, active, layer, gate):
        if counter is not None:
            counter["layer"] = counter.get("layer", 0) + 1
        shapes = jax.eval_shape(compute, lp, head, lte, hidden, mask_bias, layer)

        def skip(_):
            return (hidden, jnp.zeros(shapes[1].shape, jnp.float32),
                    jnp.zeros(shapes[2].shape, jnp.float32))

        hidden, packed, scores = jax.lax.cond(
            active, lambda _: compute(lp, head, lte, hidden, mask_bias, layer), skip, None)
        stop = gate_stop(scores, gate)
        return hidden, packed, jnp.logical_and(active, jnp.logical_not(jnp.all(stop)))

    return layer_step


def make_fused_run(encoder: Encoder, num_outputs: int, is_regression: bool, has_lte: bool,
                   has_halting: bool, counter: dict | None = None, pooling: str = "cls"):
    """Every layer of one adaptive run in ONE executable, stopping on the device:

        fused(embed_params, layers [L trees], heads [L trees], lte_params, inputs [3, B, T],
              gate [3] float32) -> (hidden [B, T, D], mask_bias [B, T], packed [L, B, K],
                                    exit_layer [] int32)

    The layers are unrolled, each under a `lax.cond` that runs it only while no earlier
    layer's gate said stop (threshold gates, or DACT's bound on a and p carried from layer
    to layer); a skipped layer costs almost nothing and leaves zeros in `packed`.
    `exit_layer` is the device's exit (1-based), `hidden` the state after it.
    """
    compute = make_layer_compute(encoder, is_regression, pooling)
    c = int(num_outputs)
    h_index = (c if is_regression else 2 * c) + int(has_lte)

    def fused(embed_params, layers, heads, lte, inputs, gate):
        if counter is not None:
            counter["fused"] = counter.get("fused", 0) + 1
        ids, tt, mask = inputs[0], inputs[1], inputs[2]
        hidden = encoder.embed(embed_params, Batch(ids, tt, mask))
        bias = mask_bias_from(mask, hidden.dtype)
        b, num_layers = ids.shape[0], len(layers)
        a, p = jnp.zeros((b, c), jnp.float32), jnp.ones((b,), jnp.float32)
        active, exit_layer, rows = jnp.bool_(True), jnp.int32(num_layers), []
        for i in range(num_layers):
            layer = jnp.int32(i + 1)

            def run(carry, i=i, layer=layer):
                h, a, p = carry
                h, packed, scores = compute(layers[i], heads[i], lte, h, bias, layer)
                stop = gate_stop(scores, gate)
                if has_halting:
                    y = packed[:, :c] if is_regression else packed[:, c:2 * c]
                    a, p, dact_stop = dact_gate_step(y, packed[:, h_index], a, p,
                                                     num_layers - i - 1, is_regression,
                                                     gate[1], gate[2])
                    stop = jnp.where(gate[0] == GATE_DACT, dact_stop, stop)
                return (h, a, p), packed, jnp.all(stop)

            shape = jax.eval_shape(run, (hidden, a, p))[1].shape

            def skip(carry, shape=shape):
                return carry, jnp.zeros(shape, jnp.float32), jnp.bool_(False)

            (hidden, a, p), packed, stop = jax.lax.cond(active, run, skip, (hidden, a, p))
            rows.append(packed)
            exit_layer = jnp.where(active & stop, layer, exit_layer)
            active = active & ~stop
        return hidden, bias, jnp.stack(rows), exit_layer

    return fused


def unpack(row: np.ndarray, num_outputs: int, is_regression: bool, has_lte: bool,
           has_halting: bool = False) -> LayerOutput:
    """One example's packed row -> `LayerOutput`."""
    c = num_outputs
    probs = None if is_regression else row[c:2 * c]
    i = c if is_regression else 2 * c
    lte = float(row[i]) if has_lte else None
    halting = float(row[i + int(has_lte)]) if has_halting else None
    return LayerOutput(row[:c], probs, lte, halting)
