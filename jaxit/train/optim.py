"""optax AdamW with linear warm-up/decay and clipping, split into parameter groups.

Groups come from `Method.param_labels`; a group's `Gate` decides when it is updated:
"train" always, "frozen" never (exactly zero update), or a step -> bool function (e.g.
BERxiT's Alternating). A gated-off group gets a zero update and keeps its Adam moments
unchanged, as if it had its own optimizer that skipped that step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxit.methods.base import Method
from jaxit.methods.schedules import (  # noqa: F401  (re-exported)
    lr_schedule,
    project_to_box,
    staged_lr_schedule,
)


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


