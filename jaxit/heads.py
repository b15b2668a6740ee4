"""Heads on the encoder's states: exit heads (BERT-style, or FastBERT's small attention
classifiers), BERxiT's LTE unit and DACT's halting units (shared by the methods and the
inference runners).

A "bert" exit head is pooler (dense D->D, tanh) + dropout + linear D->C (C = 1 for
regression) on the pooled state, as in BERT's own sequence-classification head. An
"attention" head (FastBERT's, as in its released `Classifier`) reads every kept token:
dense D->W (W = 128) + tanh, 2-head self-attention of width W (query, key, value and
output projections; dropout on the attention probabilities), the first token's output
(or the kept tokens' mean), dense W->W + tanh, linear W->C. Only the first token's query is
needed for "cls" pooling, so only it is computed. `head_outputs` runs either kind on a
layer's states; the kind is read from the params ("attn" present). Heads for all L layers
are stored stacked on a leading [L] axis so one vmapped call scores every layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxit.encoders.transformer import MASK_MIN, dense, dropout
from jaxit.flops import ATTENTION_HEAD_WIDTH, HeadCost

POOLINGS = ("cls", "mean")
HEAD_KINDS = ("bert", "attention")
ATTENTION_HEAD_HEADS = 2  # FastBERT's cla_heads_num


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


def init_attention_head(rng: jax.Array, hidden: int, num_outputs: int,
                        width: int = ATTENTION_HEAD_WIDTH) -> dict:
    """FastBERT's classifier: {"proj": D->W, "attn": {"query", "key_value" [W, 2W], "out"},
    "pooler": W->W, "out": W->C}, kernels normal(0.02), biases 0."""
    keys = jax.random.split(rng, 6)

    def lin(k, n_in, n_out):
        return {"kernel": 0.02 * jax.random.normal(k, (n_in, n_out)), "bias": jnp.zeros((n_out,))}

    return {"proj": lin(keys[0], hidden, width),
            "attn": {"query": lin(keys[1], width, width),
                     "key_value": lin(keys[2], width, 2 * width),
                     "out": lin(keys[3], width, width)},
            "pooler": lin(keys[4], width, width), "out": lin(keys[5], width, num_outputs)}


def init_exit_heads(rng, num_layers: int, hidden: int, num_outputs: int, pooler=None,
                    kind: str = "bert"):
    """L heads of `kind` ("bert", "attention") stacked on a leading axis; every "bert"
    pooler starts from `pooler` when given."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; choose from {HEAD_KINDS}")
    keys = jax.random.split(rng, num_layers)
    if kind == "attention":
        heads = [init_attention_head(k, hidden, num_outputs) for k in keys]
    else:
        heads = [init_exit_head(k, hidden, num_outputs, pooler) for k in keys]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *heads)


def head_kind(head: dict) -> str:
    """"attention" for FastBERT's classifier (params with "attn"), else "bert"."""
    return "attention" if "attn" in head else "bert"


def head_cost(head: dict, pooling: str = "cls") -> HeadCost:
    """The FLOPs descriptor (`jaxit.flops.HeadCost`) of a head's params and pooling."""
    return HeadCost(head_kind(head), pooling)


def head_width(head: dict) -> int:
    """The width of a head's pooled state (what an LTE unit reads): D or W."""
    return int(jnp.shape(head["pooler"]["kernel"])[-1])


def exit_head(p: dict, cls: jnp.ndarray, rng: jax.Array | None = None, rate: float = 0.1):
    """A "bert" head on pooled states: cls [..., D] -> (outputs [..., C], pooled [..., D]),
    float32 whatever cls's dtype. Dropout only when rng is given."""
    pooled = jnp.tanh(dense(p["pooler"], cls.astype(jnp.float32)))
    return dense(p["out"], dropout(pooled, rate, rng)), pooled


def attention_head(p: dict, hidden: jnp.ndarray, weights: jnp.ndarray, pooling: str = "cls",
                   rng: jax.Array | None = None, rate: float = 0.1):
    """FastBERT's classifier on states hidden [..., T, D] with token weights [..., T] (1 =
    kept, 0 = padding or removed; soft weights in (0, 1) scale a key's attention by that
    factor) -> (outputs [..., C], pooled [..., W]), float32. Dropout on the attention
    probabilities only when rng is given."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
    a = p["attn"]
    x = jnp.tanh(dense(p["proj"], hidden.astype(jnp.float32)))  # [..., T, W]
    w = jnp.asarray(weights, jnp.float32)
    kv = dense(a["key_value"], x)
    width = x.shape[-1]
    k, v = kv[..., :width], kv[..., width:]
    q = dense(a["query"], x[..., :1, :] if pooling == "cls" else x)  # [..., Q, W]

    def split(t):  # [..., n, W] -> [..., H, n, W/H]
        t = t.reshape(*t.shape[:-1], ATTENTION_HEAD_HEADS, width // ATTENTION_HEAD_HEADS)
        return jnp.moveaxis(t, -2, -3)

    q, k, v = split(q), split(k), split(v)
    scores = q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(jnp.float32(q.shape[-1]))
    log_w = jnp.where(w > 0, jnp.log(jnp.maximum(w, 1e-30)), MASK_MIN)
    probs = jax.nn.softmax(scores + log_w[..., None, None, :], -1)
    ctx = jnp.moveaxis(dropout(probs, rate, rng) @ v, -3, -2)  # [..., Q, H, W/H]
    att = dense(a["out"], ctx.reshape(*ctx.shape[:-2], width))  # [..., Q, W]
    if pooling == "cls":
        feats = att[..., 0, :]
    else:
        feats = (att * w[..., None]).sum(-2) / jnp.maximum(w.sum(-1, keepdims=True), 1.0)
    pooled = jnp.tanh(dense(p["pooler"], feats))
    return dense(p["out"], pooled), pooled


def head_outputs(head: dict, hidden: jnp.ndarray, weights: jnp.ndarray, pooling: str = "cls",
                 rng: jax.Array | None = None, rate: float = 0.1):
    """Any exit head on a layer's states hidden [..., B, T, D] and token weights [B, T] (or
    [..., B, T]) -> (outputs [..., B, C], pooled [..., B, D or W]), float32."""
    if head_kind(head) == "attention":
        w = jnp.broadcast_to(jnp.asarray(weights), hidden.shape[:-1])
        return attention_head(head, hidden, w, pooling, rng, rate)
    return exit_head(head, pool_features(hidden, weights, pooling), rng, rate)


def _per_layer(fn, rng, n: int, *stacked):
    """vmap of fn(*layer_args, key) over the leading [n] axis of `stacked`, one dropout key
    per layer (None without `rng`)."""
    if rng is None:
        return jax.vmap(lambda *xs: fn(*xs, None))(*stacked)
    return jax.vmap(fn)(*stacked, jax.random.split(rng, n))


def all_exit_heads(heads: dict, hidden: jnp.ndarray, weights: jnp.ndarray,
                   pooling: str = "cls", rng=None, rate: float = 0.1):
    """Stacked heads [L, ...] on every layer's states hidden [L, B, T, D] with token weights
    [B, T] (or per layer [L, B, T]) -> (outputs [L, B, C], pooled [L, B, D or W])."""
    w = jnp.broadcast_to(jnp.asarray(weights), hidden.shape[:-1])
    return _per_layer(lambda p, h, m, k: head_outputs(p, h, m, pooling, k, rate), rng,
                      hidden.shape[0], heads, hidden, w)


def pooled_exit_heads(heads: dict, cls: jnp.ndarray, rng=None, rate: float = 0.1):
    """Stacked "bert" heads [L, ...] on pooled states cls [L, B, D] -> (outputs [L, B, C],
    pooled [L, B, D]) (token dropping's soft-pooled features: `jaxit.methods.depth_width`)."""
    return _per_layer(lambda p, c, k: exit_head(p, c, k, rate), rng, cls.shape[0], heads, cls)


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
