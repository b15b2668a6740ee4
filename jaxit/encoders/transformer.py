"""Functional post-LN Transformer encoder shared by BERT, RoBERTa, ALBERT and DistilBERT.

Param tree (D hidden, E embedding width, F FFN width, L layers):

    {"embeddings": {"word": [V, E], "position": [P, E], "token_type": [T, E] (absent when
                    type_vocab_size == 0), "ln": {"scale": [E], "bias": [E]}},
     "embed_proj": {"kernel": [E, D], "bias": [D]}          # ALBERT only
     "layers": {"qkv": {"kernel": [D, 3D], "bias": [3D]},
                "attn_out": {"kernel": [D, D], "bias": [D]},
                "attn_ln": {"scale": [D], "bias": [D]},
                "ffn_in": {"kernel": [D, F], "bias": [F]},
                "ffn_out": {"kernel": [F, D], "bias": [D]},
                "ffn_ln": {"scale": [D], "bias": [D]}},      # leading [L] axis except ALBERT
     "pooler": {"kernel": [D, D], "bias": [D]}}               # when the checkpoint has one

Kernels are [in, out] (x @ kernel). The additive `mask_bias` is float [B, T]: 0 keeps a key
token, MASK_MIN (or anything below) removes it; AdapLeR adds its soft removal to it.

Mixed precision (`EncoderConfig.dtype`): params stay float32 and are cast at each matmul;
hidden states are in the compute dtype; LayerNorm statistics, attention scores and softmax
are float32. The heads (`jaxit.heads`) return float32 outputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxit.batch import Batch
from jaxit.encoders.config import EncoderConfig

MASK_MIN = -10000.0  # BERT's additive pad mask value; AdapLeR clips its accumulated mask here


def compute_dtype(cfg: EncoderConfig):
    """The dtype of the encoder's matmuls and hidden states (`EncoderConfig.dtype`); params,
    LayerNorm statistics and attention softmax stay float32."""
    return jnp.dtype(cfg.dtype)


def mask_bias_from(attention_mask: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """[B, T] 0/1 attention mask -> [B, T] additive bias (0 keep, MASK_MIN drop)."""
    return (1.0 - attention_mask.astype(dtype)) * MASK_MIN


def _gelu_erf(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU as PyTorch computes it, x/2 (1 + erf(x / sqrt 2)). `jax.nn.gelu(x,
    approximate=False)` goes through erfc and costs ~4x more on XLA:CPU for the same values."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (2.0 ** -0.5)))


def _activation(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
    if name == "gelu":
        return _gelu_erf
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return functools.partial(jax.nn.gelu, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unsupported hidden_act {name!r} (gelu, gelu_new, gelu_pytorch_tanh, relu)")


def layer_norm(p: dict, x: jnp.ndarray, eps: float) -> jnp.ndarray:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * p["scale"] + p["bias"]).astype(x.dtype)


def dense(p: dict, x: jnp.ndarray) -> jnp.ndarray:
    return x @ p["kernel"].astype(x.dtype) + p["bias"].astype(x.dtype)


def dropout(x: jnp.ndarray, rate: float, rng: jax.Array | None) -> jnp.ndarray:
    """Inverted dropout; identity when `rng` is None (evaluation) or rate is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _split3(rng):
    return (None, None, None) if rng is None else tuple(jax.random.split(rng, 3))


def embed(cfg: EncoderConfig, params: dict, batch: Batch, rng: jax.Array | None = None,
          word_embeddings: jnp.ndarray | None = None):
    """Token + position (+ token-type) embeddings, LayerNorm, dropout -> hidden [B, T, D].

    `word_embeddings` [B, T, E], when given, replaces the word-table lookup of
    `batch.input_ids` (which still set the shape and RoBERTa's positions): gradients and
    Integrated Gradients with respect to the input embeddings go through it.
    """
    ids = jnp.asarray(batch.input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {ids.shape}")
    seq_len = ids.shape[1]
    e = params["embeddings"]
    if cfg.position_offset:  # RoBERTa: positions count real tokens from pad_token_id + 1
        real = (ids != cfg.pad_token_id).astype(jnp.int32)
        positions = jnp.cumsum(real, axis=1) * real + cfg.pad_token_id
        if isinstance(positions, jax.core.Tracer):
            # Under jit the ids are unknown: bound the position a row of real tokens reaches
            # (jnp.take would otherwise silently give NaN embeddings past the table's end).
            max_pos = seq_len + cfg.pad_token_id
        else:
            max_pos = int(positions.max())
    else:
        positions = jnp.arange(seq_len)[None, :]
        max_pos = seq_len - 1
    if max_pos >= cfg.max_position_embeddings:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_position_embeddings "
            f"{cfg.max_position_embeddings}"
            + (f" (positions start at {cfg.position_offset})" if cfg.position_offset else "")
        )
    if word_embeddings is None:
        words = jnp.take(e["word"], ids, axis=0)
    else:
        words = jnp.asarray(word_embeddings)
        if words.shape != ids.shape + (e["word"].shape[-1],):
            raise ValueError(f"word_embeddings must be [batch, length, {e['word'].shape[-1]}] "
                             f"= {ids.shape + (e['word'].shape[-1],)}, got {words.shape}")
    x = words + jnp.take(e["position"], positions, axis=0)
    if "token_type" in e:
        tt = jnp.asarray(batch.token_type_ids)
        x = x + jnp.take(e["token_type"], tt, axis=0)
    x = layer_norm(e["ln"], x, cfg.layer_norm_eps).astype(compute_dtype(cfg))
    x = dropout(x, cfg.hidden_dropout, rng)
    if "embed_proj" in params:
        x = dense(params["embed_proj"], x)
    return x


def block(
    cfg: EncoderConfig,
    lp: dict,
    hidden: jnp.ndarray,
    mask_bias: jnp.ndarray,
    rng: jax.Array | None = None,
    return_attention: bool = False,
):
    """One Transformer layer: hidden [B, T, D], mask_bias [B, T] -> hidden [B, T, D].

    With `return_attention`, also returns the attention probabilities [B, H, T, T].
    """
    b, t, d = hidden.shape
    r_attn, r_out, r_ffn = _split3(rng)
    qkv = dense(lp["qkv"], hidden).reshape(b, t, 3, cfg.num_heads, cfg.head_dim)
    dropout_on = r_attn is not None and cfg.attention_dropout > 0.0
    impl = attention_impl(cfg, dropout_on, return_attention)
    probs = None
    if impl == "xla":
        ctx, probs = _attention_xla(cfg, qkv, mask_bias, r_attn, return_attention)
    else:
        if dropout_on:
            raise ValueError(f"attention={cfg.attention!r} has no attention dropout: set "
                             "attention_dropout to 0 or use attention='xla' for training")
        bias = mask_bias[:, None, None, :].astype(hidden.dtype)
        with jax.numpy_dtype_promotion("standard"):  # jax's bf16 path mixes in float32
            ctx = jax.nn.dot_product_attention(
                qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias=bias,
                implementation="cudnn" if impl == "cudnn" else "xla")
    ctx = ctx.reshape(b, t, d)
    attn = dropout(dense(lp["attn_out"], ctx), cfg.hidden_dropout, r_out)
    x = layer_norm(lp["attn_ln"], hidden + attn, cfg.layer_norm_eps)
    ffn = dense(lp["ffn_out"], _activation(cfg.hidden_act)(dense(lp["ffn_in"], x)))
    ffn = dropout(ffn, cfg.hidden_dropout, r_ffn)
    out = layer_norm(lp["ffn_ln"], x + ffn, cfg.layer_norm_eps)
    if return_attention:
        return out, probs
    return out


def attention_impl(cfg: EncoderConfig, dropout_on: bool = False,
                   return_attention: bool = False) -> str:
    """Which attention `block` runs: "xla" (jaxit's own), "dot_product" or "cudnn" (see
    `ATTENTION_IMPLS`). "auto" picks cuDNN's fused kernel on GPU for 16-bit compute at head
    sizes it supports, when no attention dropout or probabilities are needed."""
    if return_attention:  # the probabilities: only jaxit's own path materialises them
        return "xla"
    if cfg.attention == "auto":
        fused = (jax.default_backend() == "gpu" and cfg.dtype != "float32" and not dropout_on
                 and cfg.head_dim % 8 == 0 and cfg.head_dim <= 128)
        return "cudnn" if fused else "xla"
    if cfg.attention == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(f"attention='cudnn' needs a GPU; this backend is "
                         f"{jax.default_backend()!r} (use 'auto' or 'xla')")
    return cfg.attention


def _attention_xla(cfg: EncoderConfig, qkv, mask_bias, rng, return_attention):
    """qkv [B, T, 3, H, hd] -> (context [B, T, H, hd], probabilities [B, H, T, T] or None).

    Head-major [3, B, H, T, hd] so that the per-head products run on contiguous operands
    (faster on XLA:CPU than einsums over a [B, T, H, hd] layout). Scores and softmax are
    float32 whatever the compute dtype."""
    dtype = qkv.dtype
    qkv = qkv.transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (cfg.head_dim ** -0.5), qkv[1], qkv[2]
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
    scores = scores + mask_bias[:, None, None, :].astype(jnp.float32)
    # softmax with the normalisation deferred to after the value product (one pass over the
    # [B, H, T, T] scores fewer); dropout on exp(scores) == dropout on the probabilities
    unnorm = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
    denom = unnorm.sum(-1, keepdims=True)  # [B, H, T, 1], >= 1
    unnorm_d = dropout(unnorm.astype(dtype), cfg.attention_dropout, rng)
    ctx = jnp.einsum("bhqk,bhkd->bhqd", unnorm_d, v) / denom.astype(dtype)
    probs = (unnorm / denom).astype(dtype) if return_attention else None
    return jnp.swapaxes(ctx, 1, 2), probs


def layer_params(cfg: EncoderConfig, params: dict, i) -> dict:
    """Params of layer i: a slice of the stacked layers, or ALBERT's one shared layer."""
    if cfg.shared_layers:
        return params["layers"]
    return jax.tree.map(lambda x: x[i], params["layers"])


def forward_all(
    cfg: EncoderConfig,
    params: dict,
    batch: Batch,
    rng: jax.Array | None = None,
    mask_bias: jnp.ndarray | None = None,
) -> dict:
    """Runs every layer with one `lax.scan`.

    Returns {"embeddings": [B, T, D], "hidden": [L, B, T, D], "cls": [L, B, D]};
    "hidden"[l] is the output of layer l + 1 (HF's hidden_states[l + 1]).
    """
    r_embed, r_layers = (None, None) if rng is None else jax.random.split(rng)
    x = embed(cfg, params, batch, r_embed)
    if mask_bias is None:
        mask_bias = mask_bias_from(jnp.asarray(batch.attention_mask), jnp.float32)
    layer_keys = None if rng is None else jax.random.split(r_layers, cfg.num_layers)

    def step(h, xs):
        lp, key = xs
        if lp is None:
            lp = params["layers"]
        h = block(cfg, lp, h, mask_bias, key)
        return h, h

    stacked = None if cfg.shared_layers else params["layers"]
    _, hidden = jax.lax.scan(step, x, (stacked, layer_keys), length=cfg.num_layers)
    return {"embeddings": x, "hidden": hidden, "cls": hidden[:, :, 0, :]}


def pooled(params: dict, cls: jnp.ndarray) -> jnp.ndarray:
    """BERT pooler: tanh(dense(cls)); needs params["pooler"]."""
    if "pooler" not in params:
        raise KeyError("this checkpoint has no pooler (params['pooler'] is missing)")
    return jnp.tanh(dense(params["pooler"], cls))


class Encoder(NamedTuple):
    """An encoder's functions with its config bound (all pure; jit them as you need).

    embed(params, batch, rng=None, word_embeddings=None) -> [B, T, D]
    block(layer_params, hidden, mask_bias, rng=None, return_attention=False) -> [B, T, D]
    layer_params(params, i) -> layer param tree
    forward_all(params, batch, rng=None, mask_bias=None) -> {"embeddings", "hidden", "cls"}
    """

    config: EncoderConfig
    embed: Callable
    block: Callable
    layer_params: Callable
    forward_all: Callable


def make_encoder(cfg: EncoderConfig) -> Encoder:
    return Encoder(
        config=cfg,
        embed=functools.partial(embed, cfg),
        block=functools.partial(block, cfg),
        layer_params=functools.partial(layer_params, cfg),
        forward_all=functools.partial(forward_all, cfg),
    )


def init_params(cfg: EncoderConfig, rng: jax.Array, with_pooler: bool = True) -> dict:
    """Random params (normal(0.02) weights, zero biases, unit LayerNorm) for `cfg`."""
    d, e, f = cfg.hidden_size, cfg.embed_dim, cfg.intermediate_size
    keys = iter(jax.random.split(rng, 16))

    def normal(shape):
        return 0.02 * jax.random.normal(next(keys), shape, jnp.float32)

    def ln(n):
        return {"scale": jnp.ones((n,)), "bias": jnp.zeros((n,))}

    def lin(shape_in, shape_out, lead=()):
        return {"kernel": normal(lead + (shape_in, shape_out)), "bias": jnp.zeros(lead + (shape_out,))}

    def stack_ln(n, lead):
        return {"scale": jnp.ones(lead + (n,)), "bias": jnp.zeros(lead + (n,))}

    emb = {"word": normal((cfg.vocab_size, e)), "position": normal((cfg.max_position_embeddings, e)),
           "ln": ln(e)}
    if cfg.type_vocab_size:
        emb["token_type"] = normal((cfg.type_vocab_size, e))
    lead = () if cfg.shared_layers else (cfg.num_layers,)
    layers = {
        "qkv": lin(d, 3 * d, lead),
        "attn_out": lin(d, d, lead),
        "attn_ln": stack_ln(d, lead),
        "ffn_in": lin(d, f, lead),
        "ffn_out": lin(f, d, lead),
        "ffn_ln": stack_ln(d, lead),
    }
    params = {"embeddings": emb, "layers": layers}
    if cfg.model_type == "albert":
        params["embed_proj"] = lin(e, d)
    if with_pooler:
        params["pooler"] = lin(d, d)
    return params
