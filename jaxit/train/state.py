"""The train state: everything a resumed run needs besides the config and the data."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class TrainState(NamedTuple):
    step: jnp.ndarray  # int32 scalar: number of updates applied
    params: Any
    opt_state: Any
    rng: jnp.ndarray  # uint32 [2] base key; dropout uses fold_in(rng, step)


def init_state(params, tx, seed: int) -> TrainState:
    params = jax.tree.map(jnp.asarray, params)
    return TrainState(jnp.zeros([], jnp.int32), params, tx.init(params),
                      jax.random.PRNGKey(seed))
