"""optax AdamW with linear warm-up/decay and clipping, split into parameter groups.

Groups come from `Method.param_labels`; a group's `Gate` decides when it is updated:
"train" always, "frozen" never (exactly zero update), or a step -> bool function (e.g.
BERxiT's Alternating). A gated-off group gets a zero update and keeps its Adam moments
unchanged, as if it had its own optimizer that skipped that step.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxit.methods.base import Method


def lr_schedule(peak_lr: float, num_steps: int, warmup_fraction: float) -> optax.Schedule:
    """Linear warm-up to `peak_lr` over warmup_fraction·num_steps, then linear decay to 0."""
    warmup = round(warmup_fraction * num_steps)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, max(warmup, 1)),
         optax.linear_schedule(peak_lr, 0.0, max(num_steps - warmup, 1))],
        boundaries=[warmup],
    ) if warmup > 0 else optax.linear_schedule(peak_lr, 0.0, max(num_steps, 1))


def staged_lr_schedule(peak_lr: float, num_steps: int, warmup_fraction: float,
                       stage_starts=()) -> optax.Schedule:
    """`lr_schedule` restarted at every step in `stage_starts`: each stage [s_i, s_{i+1})
    warms up over warmup_fraction of its own length to `peak_lr` and decays to 0 at its end."""
    starts = sorted({int(s) for s in stage_starts if 0 < int(s) < num_steps})
    if not starts:
        return lr_schedule(peak_lr, num_steps, warmup_fraction)
    edges = [0, *starts, num_steps]
    parts = [lr_schedule(peak_lr, b - a, warmup_fraction) for a, b in itertools.pairwise(edges)]
    return optax.join_schedules(parts, boundaries=starts)


def decay_mask(params: Any) -> Any:
    """Weight decay on kernels and embeddings, not on biases or LayerNorm scales (HF), nor
    on ELBERT's loss-weight logits (its released code does not decay them)."""

    def mask(path, _):
        keys = [getattr(k, "key", str(k)) for k in path]
        return keys[-1] not in ("bias", "scale") and "loss_weights" not in keys

    return jax.tree_util.tree_map_with_path(mask, params)


class GatedState(NamedTuple):
    count: jnp.ndarray  # global step: incremented on every call, updated or not
    inner: Any


def gated(inner: optax.GradientTransformation, gate) -> optax.GradientTransformation:
    """Runs `inner` only on steps where gate(step) is True; otherwise zero updates and the
    inner state is left as it was."""

    def init(params):
        return GatedState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        def run(_):
            return inner.update(updates, state.inner, params)

        def skip(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner

        new_updates, new_inner = jax.lax.cond(gate(state.count), run, skip, None)
        return new_updates, GatedState(state.count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def gate_value(gate, step) -> jnp.ndarray:
    """A gate's bool value at `step` (a jit-traceable scalar)."""
    if gate == "train":
        return jnp.asarray(True)
    if gate == "frozen":
        return jnp.asarray(False)
    return jnp.asarray(gate(step), bool)


def make_optimizer(tcfg, method: Method, params: Any, num_steps: int):
    """Returns (optax transform, labels pytree). `tcfg` has learning_rate, warmup_fraction,
    weight_decay, adam_b1, adam_b2, adam_eps, grad_clip_norm (0 disables).

    Groups named in `method.group_optimizers` use that transform instead (their own
    schedule, clipping and decay; gates still zero their gradients when off); the run's
    clipping then covers the other groups only."""
    labels = method.param_labels(params)
    groups = sorted(set(jax.tree.leaves(labels)))
    unknown = [g for g in groups if g not in method.gates]
    if unknown:
        raise ValueError(f"method {method.name!r} labels params with groups {unknown} that have "
                         f"no gate; gates are {sorted(method.gates)}")
    overrides = {g: method.group_optimizers[g] for g in groups if g in method.group_optimizers}
    schedule = staged_lr_schedule(tcfg.learning_rate, num_steps, tcfg.warmup_fraction,
                                  method.stage_starts)
    transforms = {}
    for g in groups:
        if g in overrides:
            transforms[g] = overrides[g]
            continue
        gate = method.gates[g]
        if gate == "frozen":
            transforms[g] = optax.set_to_zero()
            continue
        inner = optax.chain(
            optax.scale_by_adam(tcfg.adam_b1, tcfg.adam_b2, tcfg.adam_eps),
            optax.add_decayed_weights(tcfg.weight_decay, decay_mask),
            optax.scale(method.lr_scale.get(g, 1.0)),
        )
        transforms[g] = inner if gate == "train" else gated(inner, gate)
        if overrides:  # the run's schedule moves inside the group (overrides have their own)
            transforms[g] = optax.chain(transforms[g], optax.scale_by_learning_rate(schedule))
    chain = []
    if not overrides:
        if tcfg.grad_clip_norm:
            chain.append(optax.clip_by_global_norm(tcfg.grad_clip_norm))
        chain += [optax.multi_transform(transforms, labels),
                  optax.scale_by_learning_rate(schedule)]
        return optax.chain(*chain), labels
    # Groups with their own optimizer: the run's clip covers the other groups only, and each
    # group applies the run's schedule itself (same numbers as the chain above).
    if tcfg.grad_clip_norm:
        in_run = jax.tree.map(lambda g: g not in overrides, labels)
        chain.append(optax.masked(optax.clip_by_global_norm(tcfg.grad_clip_norm), in_run))
    chain.append(optax.multi_transform(transforms, labels))
    return optax.chain(*chain), labels


def project_to_box(lo: float, hi: float, select=None) -> optax.GradientTransformation:
    """Makes updates land params in [lo, hi] (u -> clip(p + u, lo, hi) - p): a projection
    after each step (AdapLeR's η in [0.01, 1]). `select(path) -> bool` picks the leaves it
    applies to (default all); needs params."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_to_box needs params")

        def one(path, u, p):
            if select is not None and not select(path):
                return u
            return jnp.clip(p + u, lo, hi) - p

        return jax.tree_util.tree_map_with_path(one, updates, params), state

    return optax.GradientTransformation(init, update)
