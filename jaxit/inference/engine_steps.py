"""The batched engine's compiled dispatches (pure functions; `engine.py` jits and schedules).

The engine keeps every in-flight example's hidden states in a *pool* per length bucket:
pool_T [P, T, D], one row ("slot") per example, the example's real (kept) tokens first. A
dispatch runs ONE layer for a full batch of b rows of one bucket T:

    step(dst_pool [P, T, D] (donated), src_pools (larger buckets, read only), weights,
         ctrl [b, 3 + S_src] int32, state [b, S] float32, layer [] int32, ids [3, b, T])
        -> (dst_pool, packed [b, K])

ctrl columns: 0 the row's slot in dst_pool (its home after this layer), 1 the number of
valid tokens (a prefix), 2 which source pool the row comes from (0 = dst_pool itself,
j = src_pools[j - 1]), then the row's slot in each source pool. Padding rows point at a
scratch slot (the pool's last row) with 0 valid tokens.

Three kinds, each compiled once per (bucket, batch size): "first" embeds token ids and runs
layer 1 (depth-only models), "embed" embeds and applies contribution predictor 0 (token
dropping: layer 1 then runs at the bucket of the kept count), "layer" gathers the rows,
runs the layer whose params are passed (one executable serves every layer), the exit head
on the pooled kept tokens, the exit rule (`device_rules`), and with contribution predictors
the keep decision and the compaction of the survivors (CLS first, original order).

packed columns (`PackedLayout`): outputs [C], stop, kept count, state [S].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import halting_value, head_outputs, lte_certainty, pool_features
from jaxit.inference.device_rules import DeviceRule, rule_step
from jaxit.methods.adapler import contribution_scores, hard_keep


@dataclasses.dataclass(frozen=True)
class PackedLayout:
    """Column offsets of a dispatch's packed [b, K] output."""

    num_outputs: int
    state_size: int

    @property
    def stop(self) -> int:
        return self.num_outputs

    @property
    def count(self) -> int:
        return self.num_outputs + 1

    @property
    def state(self) -> slice:
        return slice(self.num_outputs + 2, self.num_outputs + 2 + self.state_size)

    @property
    def width(self) -> int:
        return self.num_outputs + 2 + self.state_size


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the compiled steps need to know about the model (all static)."""

    num_layers: int
    num_outputs: int
    is_regression: bool
    pooling: str
    has_exits: bool  # exit heads on every layer (else only the final head decides)
    has_lte: bool
    has_halting: bool
    has_cp: bool  # AdapLeR contribution predictors: token dropping


def gather_rows(pool, slots, t: int):
    """pool [P, T', D], slots [b] -> [b, t, D] (the first t tokens of each row)."""
    return jnp.take(pool, slots, axis=0, mode="clip")[:, :t]


def write_rows(pool, slots, rows):
    """pool [P, T, D] with rows [b, T, D] written at slots [b] (in place when donated): a loop
    of one dynamic_update_slice per row (XLA:CPU's scatter is far slower, and unrolling the
    rows made a batch of 32 compile three times slower than a batch of 1)."""
    rows = rows.astype(pool.dtype)

    def put(i, p):
        row = jax.lax.dynamic_index_in_dim(rows, i, axis=0, keepdims=True)
        return jax.lax.dynamic_update_slice(p, row, (slots[i], 0, 0))

    return jax.lax.fori_loop(0, rows.shape[0], put, pool)


def compact(hidden, keep):
    """Moves the kept tokens to the front, in order: hidden [b, T, D], keep [b, T] bool ->
    (hidden [b, T, D], count [b] int32). Rows past the count hold dropped tokens."""
    order = jnp.argsort(jnp.logical_not(keep).astype(jnp.int32), axis=1, stable=True)
    return (jnp.take_along_axis(hidden, order[..., None], axis=1),
            keep.sum(1).astype(jnp.int32))


def _keep(cp, eta, hidden, valid):
    """The contribution predictor's keep decision ([CLS] and S̃ >= η/n) -> [b, T] bool."""
    vf = valid.astype(jnp.float32)
    return hard_keep(contribution_scores(cp, hidden, vf), vf, eta) > 0


def _exit(spec: ModelSpec, rule: DeviceRule, weights, hidden, valid, state, layer):
    """Exit head on the kept tokens and the rule -> (outputs [b, C], stop, state')."""
    head, lte, rule_params = weights["head"], weights["lte"], weights["rule"]
    out, pooled = head_outputs(head, hidden, valid, spec.pooling)
    out = out.astype(jnp.float32)
    b = out.shape[0]
    probs = out if spec.is_regression else jax.nn.softmax(out, axis=-1)
    u = lte_certainty(lte, pooled).astype(jnp.float32) if spec.has_lte else jnp.zeros((b,))
    h = (halting_value(head["halting"], pool_features(hidden, valid, spec.pooling))
         if spec.has_halting else jnp.zeros((b,)))
    stop, state = rule_step(rule, rule_params, out, probs, u, h, state, layer,
                            spec.num_layers, spec.is_regression)
    return out, stop, state


def make_step(encoder: Encoder, spec: ModelSpec, rule: DeviceRule, kind: str, t: int,
              num_sources: int, counter: dict | None = None):
    """The dispatch function of one kind ("first", "embed", "layer") at bucket t, gathering
    from `num_sources` pools (dst_pool first). See the module docstring."""
    layout = PackedLayout(spec.num_outputs, rule.state_size)

    def pack(b, out=None, stop=None, count=None, state=None):
        zeros = lambda n: jnp.zeros((b, n), jnp.float32)
        cols = [zeros(spec.num_outputs) if out is None else out,
                zeros(1) if stop is None else stop.astype(jnp.float32)[:, None],
                count.astype(jnp.float32)[:, None],
                zeros(rule.state_size) if state is None else state]
        return jnp.concatenate(cols, axis=1)

    def step(dst_pool, src_pools, weights, ctrl, state, layer, ids):
        if counter is not None:
            key = (kind, t, ctrl.shape[0], num_sources, rule.kind)
            counter[key] = counter.get(key, 0) + 1
        b = ctrl.shape[0]
        dst, count = ctrl[:, 0], ctrl[:, 1]
        if kind in ("first", "embed"):
            mask = ids[2]
            hidden = encoder.embed(weights["embed"], Batch(ids[0], ids[1], mask))
            valid = mask > 0
            count = valid.sum(1).astype(jnp.int32)
        else:
            pools = (dst_pool, *src_pools)
            src = ctrl[:, 2]
            hidden = gather_rows(pools[0], ctrl[:, 3], t)
            for j in range(1, num_sources):
                other = gather_rows(pools[j], ctrl[:, 3 + j], t)
                hidden = jnp.where((src == j)[:, None, None], other, hidden)
            valid = jnp.arange(t)[None] < count[:, None]
        if kind == "embed":  # CP 0 on the embeddings decides layer 1's tokens
            hidden, count = compact(hidden, _keep(weights["cp"], weights["eta"], hidden, valid))
            return write_rows(dst_pool, dst, hidden), pack(b, count=count)
        hidden = encoder.block(weights["layer"], hidden, mask_bias_from(valid, hidden.dtype))
        out, stop, state = _exit(spec, rule, weights, hidden, valid, state, layer)
        if spec.has_cp:  # CP l in front of layer l + 1 (unused after the last layer)
            hidden, count = compact(hidden, _keep(weights["cp"], weights["eta"], hidden, valid))
        return write_rows(dst_pool, dst, hidden), pack(b, out, stop, count, state)

    return step, layout


def make_static_step(encoder: Encoder, spec: ModelSpec, counter: dict | None = None):
    """The static full model on a batch: embedding, every layer, the final head, in one
    executable: static(embed, layers [L trees], head, ids [3, b, T]) -> outputs [b, C]."""

    def static(embed, layers, head, ids):
        if counter is not None:
            key = ("static", ids.shape[2], ids.shape[1])
            counter[key] = counter.get(key, 0) + 1
        mask = ids[2]
        hidden = encoder.embed(embed, Batch(ids[0], ids[1], mask))
        bias = mask_bias_from(mask, hidden.dtype)
        for lp in layers:
            hidden = encoder.block(lp, hidden, bias)
        out, _ = head_outputs(head, hidden, mask > 0, spec.pooling)
        return out.astype(jnp.float32)

    return static
