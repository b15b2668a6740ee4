"""Learning-rate schedules and a box projection for optax: shared by the trainer's optimizer
(`jaxit.train.optim`) and the methods that bring their own (AdapLeR's η/θ optimizer)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import optax


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
