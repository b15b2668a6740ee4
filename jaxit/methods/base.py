"""What a training method gives the trainer: init, loss, prediction and optimizer groups.

A method is one object of plain functions (no class hierarchy). Params are always
{"encoder": <encoder params>, "heads": {...}}. Multi-phase or alternating schedules are
expressed through `param_labels` (an optimizer group per leaf) and `gates` (when each
group is updated), both functions of the training step, so one jitted update step serves
every phase and the trainer never copies params to freeze them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder

# A gate says when a parameter group is updated: "train" (every step), "frozen" (never),
# or a function step -> bool scalar (jit-traceable) for alternating / staged schedules.
Gate = str | Callable[[jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class Method:
    """A training method.

    init(rng, encoder_params) -> params {"encoder": ..., "heads": ...}
    loss(params, batch, rng, step) -> (scalar loss, dict of scalar metrics)
    predict(params, batch) -> final outputs: logits [B, C] or regression values [B]
    param_labels(params) -> pytree of group names (same structure as params)
    gates: group name -> Gate
    lr_scale: group name -> learning-rate multiplier (default 1)

    Optional, for methods with more than one objective (AdapLeR):
    grads(params, batch, rng, step) -> (scalar loss, metrics, grads): replaces
        value_and_grad(loss) in the update step (e.g. one forward, several cotangents);
    group_optimizers: group name -> a complete optax transform for that group (its own
        schedule and clipping), used instead of the run's AdamW; such groups are left out
        of the run's global gradient clipping;
    prepare_data(dataset, split) -> dataset: called on the training split before batching
        (e.g. to attach per-token targets);
    stage_starts: steps at which a new training stage begins (Two-stage, FastBERT, DACT
        with a stage 1): each stage gets its own warm-up/decay schedule at the peak
        learning rate, as the papers' code trains each stage like a fresh run.
    """

    name: str
    encoder: Encoder
    is_regression: bool
    num_outputs: int
    init: Callable[[jax.Array, dict], dict]
    loss: Callable[[dict, Batch, jax.Array, jnp.ndarray], tuple[jnp.ndarray, dict]]
    predict: Callable[[dict, Batch], jnp.ndarray]
    param_labels: Callable[[dict], Any]
    gates: Mapping[str, Gate]
    lr_scale: Mapping[str, float] = dataclasses.field(default_factory=dict)
    grads: Callable[[dict, Batch, jax.Array, jnp.ndarray], tuple[jnp.ndarray, dict, Any]] | None = None
    group_optimizers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prepare_data: Callable[[Any, str], Any] | None = None
    stage_starts: tuple[int, ...] = ()


def label_by_top_key(params: dict, mapping: Mapping[str, str], default: str) -> Any:
    """Labels each leaf by its path: the first path element (or "heads/<name>") found in
    `mapping` names its group; others get `default`."""

    def label(path, _):
        keys = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        for depth in (2, 1):
            name = "/".join(str(k) for k in keys[:depth])
            if name in mapping:
                return mapping[name]
        return default

    return jax.tree_util.tree_map_with_path(label, params)
