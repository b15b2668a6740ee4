"""FastBERT's own exit heads (`jaxit.heads.attention_head`): the classifier computed by hand,
padding invariance, the parameter count, FLOPs against XLA's count, the default per strategy,
and the batch-1 runner and the batched engine on such a model against the training forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit import flops
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.errors import ConfigError
from jaxit.heads import (
    ATTENTION_HEAD_WIDTH as W,
)
from jaxit.heads import (
    attention_head,
    head_cost,
    head_kind,
    head_outputs,
    init_attention_head,
)
from jaxit.methods.early_exit import all_layer_outputs, make_early_exit

D, C = 32, 3
CFG = EncoderConfig("bert", 64, D, 3, 2, 64, max_position_embeddings=64)


def _np_head(p, x, keep, pooling):
    """FastBERT's `Classifier.forward` the long way, in float64 numpy: every token's query,
    UER's multi-head attention with BERT's additive -10000 mask, then the pooling."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    lin = lambda q, t: t @ q["kernel"] + q["bias"]
    h = np.tanh(lin(p["proj"], x))  # [T, W]
    q = lin(p["attn"]["query"], h)
    k, v = np.split(lin(p["attn"]["key_value"], h), 2, axis=-1)
    dh = W // 2
    ctx = []
    for i in range(2):
        s = q[:, i * dh:(i + 1) * dh] @ k[:, i * dh:(i + 1) * dh].T / np.sqrt(dh)
        s = s + (1.0 - keep)[None] * -10000.0
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx.append(a @ v[:, i * dh:(i + 1) * dh])
    att = lin(p["attn"]["out"], np.concatenate(ctx, -1))
    feats = att[0] if pooling == "cls" else (att * keep[:, None]).sum(0) / keep.sum()
    return lin(p["out"], np.tanh(lin(p["pooler"], feats)))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_attention_head_is_fastberts_classifier(pooling):
    p = init_attention_head(jax.random.PRNGKey(0), D, C)
    p = jax.tree.map(lambda a: a * 20.0, p)  # weights large enough for non-uniform attention
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 7, D)), np.float32)
    keep = np.array([[1] * 7, [1] * 4 + [0] * 3], np.float32)
    out, pooled = attention_head(p, jnp.asarray(x), jnp.asarray(keep), pooling)
    assert out.shape == (2, C) and pooled.shape == (2, W) and out.dtype == jnp.float32
    for b in range(2):
        np.testing.assert_allclose(out[b], _np_head(p, x[b], keep[b], pooling), rtol=2e-4,
                                   atol=2e-5)
    # padding changes nothing: row 1 on its 4 real tokens alone gives the same output
    alone, _ = attention_head(p, jnp.asarray(x[1:, :4]), jnp.ones((1, 4)), pooling)
    np.testing.assert_allclose(alone[0], out[1], rtol=1e-5, atol=1e-6)
    # and its padded tokens do matter when they are kept (a test that could fail)
    kept_all, _ = attention_head(p, jnp.asarray(x[1:]), jnp.ones((1, 7)), pooling)
    assert np.abs(np.asarray(kept_all[0] - out[1])).max() > 1e-3


def test_head_outputs_dispatch_on_the_params():
    p = init_attention_head(jax.random.PRNGKey(0), D, C)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 5, D))  # [L, B, T, D]
    mask = jnp.ones((2, 5))
    out, pooled = head_outputs(p, x, mask)
    assert head_kind(p) == "attention" and out.shape == (4, 2, C) and pooled.shape == (4, 2, W)
    # outputs ≈ 1e-4 here: atol at 1e-3 of that (the vmapped and direct matmuls round apart)
    np.testing.assert_allclose(out[2], attention_head(p, x[2], mask)[0], rtol=1e-6, atol=1e-7)
    assert np.abs(np.asarray(out[1] - out[2])).max() > 1e-6  # layers differ


def test_fastbert_defaults_to_attention_heads_and_counts_its_parameters():
    enc = make_encoder(CFG)
    ep = init_params(CFG, jax.random.PRNGKey(0))
    fb = make_early_exit(enc, C, False, 10, "fastbert")
    params = fb.init(jax.random.PRNGKey(1), ep)
    per_head = (D * W + W) + (W * W + W) + (W * 2 * W + 2 * W) + (W * W + W) + (W * W + W) \
        + (W * C + C)
    n = sum(x.size for x in jax.tree.leaves(params["heads"]))
    assert n == CFG.num_layers * per_head
    assert head_kind(params["heads"]["final"]) == "attention"
    bert = make_early_exit(enc, C, False, 10, "fastbert", head="bert").init(
        jax.random.PRNGKey(1), ep)
    assert head_kind(bert["heads"]["final"]) == "bert"
    deebert = make_early_exit(enc, C, False, 10, "two_stage").init(jax.random.PRNGKey(1), ep)
    assert head_kind(deebert["heads"]["final"]) == "bert"
    # LTE reads the attention head's W-wide pooled state
    lte = make_early_exit(enc, C, False, 10, "fastbert", lte=True)
    lp = lte.init(jax.random.PRNGKey(1), ep)
    assert lp["heads"]["lte"]["kernel"].shape == (W, 1)
    batch = _batch()
    out = all_layer_outputs(enc, lp, batch)
    assert out.outputs.shape == (3, 3, C) and out.lte.shape == (3, 3)


def test_config_head_attention_only_for_early_exit_methods():
    from jaxit.configs import base_config
    from jaxit.train.validate import check_config

    c = base_config()
    c.method.name = "dact"
    c.method.head = "attention"
    with pytest.raises(ConfigError, match="BERT-style heads only"):
        check_config(c, 1)
    c.method.name = "fastbert"
    check_config(c, 1)
    c.method.head = "bart"
    with pytest.raises(ConfigError, match="method.head"):
        check_config(c, 1)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_attention_head_flops_match_xla(pooling):
    cfg = EncoderConfig("bert", 128, 384, 6, 12, 1536)
    p = init_attention_head(jax.random.PRNGKey(0), cfg.hidden_size, 2)
    for n in (16, 64):
        x, m = jnp.ones((1, n, cfg.hidden_size)), jnp.ones((1, n))
        cost = jax.jit(lambda p, x, m: attention_head(p, x, m, pooling)[0]).lower(
            p, x, m).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        formula = flops.head_flops(cfg, 2, n=n, head=flops.HeadCost("attention", pooling))
        assert formula <= cost["flops"] <= formula * 1.08, (n, formula, cost["flops"])
    # an attention head costs more than a BERT head, and more with more tokens
    assert flops.head_flops(cfg, 2, n=64, head=head_cost(p)) > flops.head_flops(
        cfg, 2, n=16, head=head_cost(p)) > flops.head_flops(cfg, 2)


def _batch():
    from tests.rows import random_batch

    return random_batch(3, 9, min_len=4, vocab=CFG.vocab_size, num_classes=C)


def test_runner_and_engine_equal_the_training_forward_on_a_fastbert_model():
    from jaxit.inference.engine import BatchedEngine
    from jaxit.inference.policies import FixedLayerPolicy, NormalizedEntropyPolicy
    from jaxit.inference.runner import EarlyExitRunner

    enc = make_encoder(CFG)
    fb = make_early_exit(enc, C, False, 10, "fastbert")
    params = fb.init(jax.random.PRNGKey(1), init_params(CFG, jax.random.PRNGKey(0)))
    batch = _batch()
    ref = np.asarray(all_layer_outputs(enc, params, batch).outputs)  # [L, B, C]
    lengths = np.asarray(batch.attention_mask).sum(1)
    examples = [(np.asarray(batch.input_ids)[i, :n], np.asarray(batch.token_type_ids)[i, :n])
                for i, n in enumerate(lengths)]
    runner = EarlyExitRunner(enc, params, C, False, buckets=(16,))
    hc = flops.HeadCost("attention")
    for i, (ids, tt) in enumerate(examples):
        for layer in (1, 2, 3):
            r = runner.run_one(ids, tt, FixedLayerPolicy(layer))
            np.testing.assert_allclose(r.outputs, ref[layer - 1, i], rtol=2e-4, atol=2e-5)
            assert r.flops == flops.early_exit_flops(CFG, int(lengths[i]), layer, C, head=hc)
        s = runner.run_static_one(ids, tt)
        np.testing.assert_allclose(s.outputs, ref[-1, i], rtol=2e-4, atol=2e-5)
        assert s.flops == flops.full_model_flops(CFG, int(lengths[i]), C, hc)
    eng = BatchedEngine(enc, params, C, False, buckets=(16,), batch_sizes=(2,))
    res = eng.run(examples, NormalizedEntropyPolicy(0.5))
    single = [runner.run_one(ids, tt, NormalizedEntropyPolicy(0.5)) for ids, tt in examples]
    for i, r in enumerate(single):
        assert res.exit_layers[i] == r.exit_layer
        np.testing.assert_allclose(res.outputs[i], r.outputs, rtol=2e-4, atol=2e-5)
        assert res.flops[i] == r.flops


@pytest.mark.standard_promotion
def test_a_fastbert_run_trains_sweeps_predicts_and_refuses_export(tmp_path):
    """A tiny FastBERT run end to end: training moves the attention heads, the sweep's
    normalised-entropy curve counts the attention heads' FLOPs, `load_predictor` runs it,
    and `jaxit export` refuses it in one line (Hugging Face has no such head)."""
    from jaxit.configs import tiny_config
    from jaxit.export import export_run
    from jaxit.inference.predictor import load_predictor
    from jaxit.inference.trained_run import RunError, load_trained_run
    from jaxit.sweep import run_sweep
    from jaxit.train.loop import train
    from jaxit.train.pipeline import build_setup

    c = tiny_config()
    c.method.name = "fastbert"
    c.train.num_steps = 6
    setup = build_setup(c)
    init = setup.method.init(jax.random.PRNGKey(c.train.seed), setup.encoder_params)
    _, state = train(c, tmp_path / "run", setup=setup)
    heads = state.params["heads"]
    assert head_kind(heads["final"]) == "attention"
    for group in ("final", "exits"):  # stage 1 trains the final head, stage 2 the exits
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), heads[group],
                             init["heads"][group])
        assert min(jax.tree.leaves(moved)) > 0, group
    from jaxit.sweep import dev_examples

    report = run_sweep(setup, state.params, tmp_path / "sweep", ["normalized_entropy"],
                       wallclock_examples=4)
    cfg, n_out = setup.method.encoder.config, setup.method.num_outputs
    expected = sum(flops.full_model_flops(cfg, len(ids), n_out, flops.HeadCost("attention"))
                   for ids, _ in dev_examples(setup, 4))
    assert report["wallclock_static"]["flops"] == expected
    assert len(report["sweeps"]["normalized_entropy"]) > 1
    recs = load_predictor(tmp_path / "run", checkpoint="latest")(["a b c", "d e"])
    assert len(recs) == 2 and "label" in recs[0]
    with pytest.raises(RunError, match="FastBERT's attention head"):
        export_run(load_trained_run(tmp_path / "run", "latest"), tmp_path / "export")
