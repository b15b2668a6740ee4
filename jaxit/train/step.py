"""One pure jitted update step and the evaluation forward."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from jaxit.batch import Batch
from jaxit.methods.base import Method
from jaxit.train.optim import gate_value
from jaxit.train.state import TrainState


def make_update_fn(method: Method, tx: optax.GradientTransformation, labels):
    """update(state, batch) -> (state, metrics); gradients of gated-off groups are zeroed
    before clipping so frozen params neither move nor count in the clip norm. Gradients
    come from `method.grads` when the method has one, else value_and_grad(method.loss)."""

    def update(state: TrainState, batch: Batch):
        rng = jax.random.fold_in(state.rng, state.step)
        if method.grads is not None:
            loss, aux, grads = method.grads(state.params, batch, rng, state.step)
            chex.assert_trees_all_equal_shapes_and_dtypes(grads, state.params)
        else:
            (loss, aux), grads = jax.value_and_grad(method.loss, has_aux=True)(
                state.params, batch, rng, state.step)
        on = jax.tree.map(lambda g: gate_value(method.gates[g], state.step), labels)
        grads = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros_like(g)), grads, on)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        chex.assert_trees_all_equal_shapes_and_dtypes(params, state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(state.step + 1, params, opt_state, state.rng), metrics

    return update


def make_predict_fn(method: Method):
    """predict(params, batch) -> outputs; jitted once per batch shape."""
    return jax.jit(method.predict)
