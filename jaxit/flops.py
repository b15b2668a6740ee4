"""FLOPs accounting (DESIGN §6): multiply-add = 2 FLOPs, real tokens only (no padding).

Per Transformer layer on n tokens (D hidden, F FFN width):
    QKV 6nD^2 + attention scores and mixing 4n^2 D + attention output 2nD^2 + FFN 4nDF.
BERT-style heads run on the pooled state only: pooler 2D^2 + output 2DC (+ LTE 2D).
FastBERT's attention heads (`HeadCost(kind="attention")`) read the n tokens: `head_flops`.
ALBERT's embedding projection costs 2nED; embedding lookups, LayerNorms, softmaxes,
activations and bias adds are not counted (XLA's cost analysis counts them too: the test
bounds the difference, a few percent).

With token dropping, pass the per-layer token counts to `encoder_flops`; AdapLeR's
contribution predictors (an MLP D->32->1 per token) add `contribution_predictor_flops`
(`token_drop_flops` sums it all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jaxit.encoders.config import EncoderConfig

ATTENTION_HEAD_WIDTH = 128  # FastBERT's cla_hidden_size (`jaxit.heads`)


@dataclasses.dataclass(frozen=True)
class HeadCost:
    """What one exit head costs depends on its kind ("bert" or "attention", see
    `jaxit.heads`) and, for an attention head, on its pooling ("cls" computes one query)."""

    kind: str = "bert"
    pooling: str = "cls"


BERT_HEAD = HeadCost()


def layer_flops(cfg: EncoderConfig, n: int) -> int:
    """One Transformer layer on n tokens."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    return 6 * n * d * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * f


def layer_flops_breakdown(cfg: EncoderConfig, n: int) -> dict:
    d, f = cfg.hidden_size, cfg.intermediate_size
    return {"qkv": 6 * n * d * d, "attention": 4 * n * n * d, "attn_out": 2 * n * d * d,
            "ffn": 4 * n * d * f}


def embedding_flops(cfg: EncoderConfig, n: int) -> int:
    """Matmul FLOPs of the embedding: ALBERT's E->D projection, 0 otherwise."""
    return 2 * n * cfg.embed_dim * cfg.hidden_size if cfg.embedding_size else 0


def head_flops(cfg: EncoderConfig, num_outputs: int, lte: bool = False, n: int = 1,
               head: HeadCost = BERT_HEAD) -> int:
    """One exit head on a layer's n tokens, plus a unit on its pooled state when `lte`
    (the LTE module or a DACT halting unit: the same cost). "bert": pooler D->D and output
    D->C on the pooled state (n does not matter). "attention" (W = 128, q queries: 1 for
    "cls" pooling, else n): D->W on n tokens, keys and values 4nW^2, queries 2qW^2,
    scores and mixing 4qnW, output projection 2qW^2, pooler 2W^2, output 2WC."""
    d = cfg.hidden_size
    if head.kind == "bert":
        return 2 * d * d + 2 * d * num_outputs + (2 * d if lte else 0)
    if head.kind != "attention":
        raise ValueError(f"unknown head kind {head.kind!r}")
    w, q = ATTENTION_HEAD_WIDTH, (1 if head.pooling == "cls" else n)
    return (2 * n * d * w + 4 * n * w * w + 4 * q * w * w + 4 * q * n * w + 2 * w * w
            + 2 * w * num_outputs + (2 * w if lte else 0))


def encoder_flops(cfg: EncoderConfig, tokens_per_layer: Sequence[int]) -> int:
    """Embedding (on the first count) + one layer per entry, each on its own token count."""
    if not tokens_per_layer:
        return 0
    return embedding_flops(cfg, tokens_per_layer[0]) + sum(
        layer_flops(cfg, n) for n in tokens_per_layer)


def full_model_flops(cfg: EncoderConfig, n: int, num_outputs: int,
                     head: HeadCost = BERT_HEAD) -> int:
    """The static model: embedding, all L layers, one head on the last layer."""
    return encoder_flops(cfg, [n] * cfg.num_layers) + head_flops(cfg, num_outputs, n=n, head=head)


def early_exit_flops(cfg: EncoderConfig, n: int, exit_layer: int, num_outputs: int,
                     lte: bool = False, head: HeadCost = BERT_HEAD) -> int:
    """A multi-exit model that ran layers 1..exit_layer and every one of their heads."""
    return (encoder_flops(cfg, [n] * exit_layer)
            + exit_layer * head_flops(cfg, num_outputs, lte, n, head))


def contribution_predictor_flops(cfg: EncoderConfig, n: int, hidden: int = 32) -> int:
    """One AdapLeR contribution predictor (dense D->hidden, dense hidden->1) on n tokens; the
    GELU and the softmax over tokens are not counted (as activations elsewhere)."""
    return n * (2 * cfg.hidden_size * hidden + 2 * hidden)


def token_drop_flops(cfg: EncoderConfig, n: int, tokens_per_layer: Sequence[int],
                     num_outputs: int, cp_hidden: int = 32, head: HeadCost = BERT_HEAD) -> int:
    """AdapLeR at inference on an n-token input: the embedding on n tokens, layer l on
    tokens_per_layer[l - 1], the contribution predictor in front of every layer (CP 0 on
    the n embedded tokens, CP l on the tokens layer l ran on) and the last layer's head."""
    if len(tokens_per_layer) != cfg.num_layers:
        raise ValueError(f"tokens_per_layer has {len(tokens_per_layer)} entries for "
                         f"{cfg.num_layers} layers")
    cp_inputs = [n] + list(tokens_per_layer[:-1])
    return (embedding_flops(cfg, n) + sum(layer_flops(cfg, k) for k in tokens_per_layer)
            + sum(contribution_predictor_flops(cfg, k, cp_hidden) for k in cp_inputs)
            + head_flops(cfg, num_outputs, n=tokens_per_layer[-1], head=head))


def speedup(full: Sequence[int] | int, adaptive: Sequence[int] | int) -> float:
    """FLOPs speed-up: total full-model FLOPs / total adaptive FLOPs (summed over examples)."""
    f = full if isinstance(full, (int, float)) else sum(full)
    a = adaptive if isinstance(adaptive, (int, float)) else sum(adaptive)
    return float(f) / float(a) if a else float("inf")
