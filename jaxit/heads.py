"""Heads on the encoder's states: BERT-style classification/regression exit heads, BERxiT's
LTE unit and DACT's halting units (shared by the methods and the inference runners).

An exit head is pooler (dense D->D, tanh) + dropout + linear D->C (C = 1 for regression),
as in BERT's own sequence-classification head. Heads for all L layers are stored stacked
on a leading [L] axis so one vmapped call scores every layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxit.encoders.transformer import dense, dropout

POOLINGS = ("cls", "mean")


def pool_features(hidden: jnp.ndarray, attention_mask: jnp.ndarray, pooling: str = "cls"):
    """The exit heads' input from hidden states [..., B, T, D] and a 0/1 mask [B, T]:
    "cls" (the papers) is the first token's state; "mean" averages the real tokens (what
    sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained to use: their
    [CLS] state barely varies across inputs in the lower layers, so [CLS] exits there stay
    at chance). Returns [..., B, D] float32 (the heads run in float32 whatever the encoder's
    compute dtype: they are a small share of the FLOPs)."""
    if pooling == "cls":
        return hidden[..., 0, :].astype(jnp.float32)
    if pooling == "mean":
        m = attention_mask.astype(jnp.float32)[..., None]  # [B, T, 1]
        return (hidden.astype(jnp.float32) * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)
    raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")


def init_exit_head(rng: jax.Array, hidden: int, num_outputs: int, pooler: dict | None = None):
    """One head {"pooler": {kernel [D,D], bias [D]}, "out": {kernel [D,C], bias [C]}}.

    `pooler` (e.g. the checkpoint's params["pooler"]) initialises the pooler when given.
    """
    k_pool, k_out = jax.random.split(rng)
    if pooler is None:
        pooler = {"kernel": 0.02 * jax.random.normal(k_pool, (hidden, hidden)),
                  "bias": jnp.zeros((hidden,))}
    out = {"kernel": 0.02 * jax.random.normal(k_out, (hidden, num_outputs)),
           "bias": jnp.zeros((num_outputs,))}
    return {"pooler": jax.tree.map(jnp.asarray, pooler), "out": out}


def init_exit_heads(rng, num_layers: int, hidden: int, num_outputs: int, pooler=None):
    """L heads stacked on a leading axis; every pooler starts from `pooler` when given."""
    keys = jax.random.split(rng, num_layers)
    heads = [init_exit_head(k, hidden, num_outputs, pooler) for k in keys]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *heads)


def exit_head(p: dict, cls: jnp.ndarray, rng: jax.Array | None = None, rate: float = 0.1):
    """cls [..., D] -> (outputs [..., C], pooled [..., D]), float32 whatever cls's dtype.
    Dropout only when rng is given."""
    pooled = jnp.tanh(dense(p["pooler"], cls.astype(jnp.float32)))
    return dense(p["out"], dropout(pooled, rate, rng)), pooled


def all_exit_heads(heads: dict, cls: jnp.ndarray, rng=None, rate: float = 0.1):
    """Stacked heads [L, ...] on cls [L, B, D] -> (outputs [L, B, C], pooled [L, B, D])."""
    n = cls.shape[0]
    keys = None if rng is None else jax.random.split(rng, n)
    if keys is None:
        return jax.vmap(lambda p, c: exit_head(p, c, None, rate))(heads, cls)
    return jax.vmap(lambda p, c, k: exit_head(p, c, k, rate))(heads, cls, keys)


def task_loss(outputs: jnp.ndarray, labels: jnp.ndarray, is_regression: bool) -> jnp.ndarray:
    """Per-example loss: cross-entropy on logits [..., C] with int labels, or squared error
    on outputs [..., 1] with float labels. Returns [...] (the leading dims of outputs)."""
    labels = jnp.broadcast_to(labels, outputs.shape[:-1])
    if is_regression:
        return jnp.square(outputs[..., 0] - labels.astype(outputs.dtype))
    logp = jax.nn.log_softmax(outputs.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def has_exit_heads(heads: dict) -> bool:
    """Whether every layer can exit: heads for layers 1..L-1 ("exits"), or ELBERT's one
    classifier shared by all layers ("final" with ELBERT's "loss_weights" and no "exits")."""
    return "exits" in heads or "loss_weights" in heads


def stacked_heads(heads: dict) -> dict:
    """All L exit heads stacked on a leading axis (exits 1..L-1, then the final head); for
    ELBERT's shared classifier, the final head broadcast to every layer (its gradient is the
    sum over layers)."""
    if "exits" in heads:
        return jax.tree.map(lambda e, f: jnp.concatenate([e, f[None]], axis=0),
                            heads["exits"], heads["final"])
    if "loss_weights" in heads:
        n = jnp.shape(heads["loss_weights"])[0] + 1
        return jax.tree.map(lambda f: jnp.broadcast_to(f, (n, *jnp.shape(f))), heads["final"])
    raise ValueError("these heads have no intermediate exits (params['heads']['exits'])")


def init_lte(rng: jax.Array, hidden: int) -> dict:
    return {"kernel": 0.02 * jax.random.normal(rng, (hidden, 1)), "bias": jnp.zeros((1,))}


def lte_certainty(lte: dict, pooled: jnp.ndarray) -> jnp.ndarray:
    """u = sigmoid(c . pooled + b): pooled [..., D] -> [...]."""
    z = pooled @ lte["kernel"].astype(pooled.dtype) + lte["bias"].astype(pooled.dtype)
    return jax.nn.sigmoid(z[..., 0])


def init_halting(rng: jax.Array, num_layers: int, hidden: int, bias: float = 0.0) -> dict:
    """L halting units {"kernel": [L, D, 1] normal(0.02), "bias": [L, 1] = bias}."""
    return {"kernel": 0.02 * jax.random.normal(rng, (num_layers, hidden, 1)),
            "bias": jnp.full((num_layers, 1), bias, jnp.float32)}


def halting_value(unit: dict, cls: jnp.ndarray) -> jnp.ndarray:
    """h = sigmoid(w . cls + b): one unit {"kernel": [D, 1], "bias": [1]}, cls [..., D] -> [...]."""
    z = cls @ unit["kernel"].astype(cls.dtype) + unit["bias"].astype(cls.dtype)
    return jax.nn.sigmoid(z[..., 0].astype(jnp.float32))
