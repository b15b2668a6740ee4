"""The FLOPs formula (DESIGN §6) against XLA's own count of the compiled computation."""

import jax
import jax.numpy as jnp
import pytest

from jaxit import flops
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.heads import exit_head, init_exit_head
from jaxit.methods.early_exit import init_lte, lte_certainty

# MiniLM-L6 / BERT-style widths. XLA also counts element-wise work (bias adds, LayerNorm,
# GELU, softmax, scaling) that the formula leaves out, so XLA's count is a little higher:
# the formula must be within [XLA / (1 + TOL), XLA] with TOL = 5% at these widths
# (measured: ~3% for D=384, F=1536).
TOL = 0.05
MINILM = EncoderConfig("bert", 128, 384, 6, 12, 1536, max_position_embeddings=256)


def xla_flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
        cost = cost[0]
    return float(cost["flops"])


@pytest.mark.parametrize("n", [16, 128])
def test_layer_flops_match_xla(n):
    cfg = MINILM
    enc = make_encoder(cfg)
    lp = enc.layer_params(init_params(cfg, jax.random.PRNGKey(0)), 0)
    hidden = jnp.ones((1, n, cfg.hidden_size))
    bias = jnp.zeros((1, n))
    xla = xla_flops(lambda lp, h, m: enc.block(lp, h, m), lp, hidden, bias)
    formula = flops.layer_flops(cfg, n)
    assert formula <= xla <= formula * (1 + TOL), (formula, xla, xla / formula)
    assert sum(flops.layer_flops_breakdown(cfg, n).values()) == formula


def test_head_and_lte_flops_match_xla():
    cfg = MINILM
    for c in (1, 2, 3):
        head = init_exit_head(jax.random.PRNGKey(1), cfg.hidden_size, c)
        lte = init_lte(jax.random.PRNGKey(2), cfg.hidden_size)
        cls = jnp.ones((1, cfg.hidden_size))

        def both(head, lte, cls):
            out, pooled = exit_head(head, cls)
            return out, lte_certainty(lte, pooled)

        xla = xla_flops(lambda h, x: exit_head(h, x)[0], head, cls)
        formula = flops.head_flops(cfg, c)
        assert formula <= xla <= formula * (1 + TOL), (c, formula, xla)
        xla = xla_flops(both, head, lte, cls)
        formula = flops.head_flops(cfg, c, lte=True)
        assert formula <= xla <= formula * (1 + TOL), (c, formula, xla)


def test_totals_and_speedup():
    cfg = MINILM
    n, c = 20, 2
    layer, head = flops.layer_flops(cfg, n), flops.head_flops(cfg, c)
    assert flops.full_model_flops(cfg, n, c) == cfg.num_layers * layer + head
    assert flops.early_exit_flops(cfg, n, 2, c) == 2 * (layer + head)
    assert flops.early_exit_flops(cfg, n, 2, c, lte=True) == 2 * (
        layer + flops.head_flops(cfg, c, lte=True))
    assert flops.encoder_flops(cfg, [n, n // 2]) == layer + flops.layer_flops(cfg, n // 2)
    assert flops.speedup([10, 10], [5, 5]) == 2.0
    # the formula's terms: QKV 6nD^2, attention 4n^2D, output 2nD^2, FFN 4nDF
    d, f = 4, 16
    tiny = EncoderConfig("bert", 10, d, 1, 1, f)
    assert flops.layer_flops(tiny, 3) == 6 * 3 * d * d + 4 * 9 * d + 2 * 3 * d * d + 4 * 3 * d * f
    albert = EncoderConfig("albert", 10, 8, 2, 2, 16, embedding_size=4)
    assert flops.embedding_flops(albert, 5) == 2 * 5 * 4 * 8
