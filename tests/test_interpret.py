"""Interpretability: Integrated Gradients (exact on analytic functions, complete on a DACT
model), heatmap rendering, exit histogram, attention entropy, pruning never-used layers."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.inference.evaluate_exits import collect_layer_outputs
from jaxit.interpret import (
    attention_entropy,
    exit_histogram,
    heatmap_html,
    integrated_gradients,
    make_dact_attributor,
    path_coefficients,
    prune_unused_layers,
    pruning_check,
    write_exit_histogram,
    write_heatmap_png,
)
from jaxit.methods.dact import dact_forward, make_dact

L = 4
RULES = ("trapezoid", "midpoint", "gauss_legendre")


@functools.cache
def _model(seed):
    cfg = EncoderConfig("bert", 100, 32, L, 2, 64, max_position_embeddings=64)
    enc = make_encoder(cfg)
    m = make_dact(enc, 3, False, 10)
    params = m.init(jax.random.PRNGKey(seed), init_params(cfg, jax.random.PRNGKey(seed)))
    scale = lambda t, s: jax.tree.map(lambda x: s * x, t)
    heads = params["heads"]
    heads["exits"]["out"] = scale(heads["exits"]["out"], 30.0)
    heads["final"]["out"] = scale(heads["final"]["out"], 30.0)
    heads["halting"] = scale(heads["halting"], 30.0)
    return enc, params


def make_model(seed=0):
    """A tiny random 4-layer DACT model whose heads and halting units are spread out (so
    outputs depend strongly on the input). Fresh containers: tests may edit them."""
    enc, params = _model(seed)
    return enc, jax.tree.map(lambda x: x, params)


def random_examples(n, seed=0, max_len=14):
    rng = np.random.default_rng(seed)
    return [(rng.integers(5, 100, k).astype(np.int32), np.zeros(k, np.int32))
            for k in rng.integers(3, max_len + 1, n)]


# ----------------------------------------------------------------------------- IG, analytic


def test_path_coefficients():
    for rule in RULES:
        a, w = path_coefficients(7, rule)
        assert np.isclose(w.sum(), 1.0) and (a >= 0).all() and (a <= 1).all()
    a, w = path_coefficients(4, "trapezoid")
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(w, [0.125, 0.25, 0.25, 0.25, 0.125])
    with pytest.raises(ValueError, match="rule"):
        path_coefficients(4, "simpson")
    with pytest.raises(ValueError, match="steps"):
        path_coefficients(0)


@pytest.mark.parametrize("rule", RULES)
def test_ig_exact_for_linear_and_quadratic(rule):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    lin = jax.jit(lambda x, b: integrated_gradients(lambda v: jnp.sum(w * v) + 2.0, x, b,
                                                    steps=3, rule=rule))(x, b)
    np.testing.assert_allclose(lin.attributions, w * (x - b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.delta, 0.0, atol=1e-5)
    # f = v^T A v, zero baseline: grad is linear along the path, so IG_i = x_i (A x)_i exactly
    a = rng.normal(size=(12, 12))
    a = jnp.asarray(a + a.T, jnp.float32)
    v = x.reshape(-1)
    quad = integrated_gradients(lambda u: u @ a @ u, v, steps=2, rule=rule)
    np.testing.assert_allclose(quad.attributions, v * (a @ v), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(quad.value, v @ a @ v, rtol=1e-5)
    assert quad.baseline_value == 0.0


@pytest.mark.parametrize("steps", [3, 10])
def test_ig_quadrature_error_on_a_cubic(steps):
    """f = x0 x1 x2, baseline 0: the true IG is x0 x1 x2 / 3 per input; the integrand is
    3 x0 x1 x2 alpha^2 / x_i, so the trapezoid rule adds exactly 1/(6 m^2), the midpoint
    rule subtracts 1/(12 m^2), and 2-point Gauss-Legendre is exact."""
    x = jnp.array([1.5, -2.0, 0.7], jnp.float32)
    f = lambda v: v[0] * v[1] * v[2]
    prod = float(np.prod(np.asarray(x, np.float64)))
    expect = {"trapezoid": prod * (1 / 3 + 1 / (6 * steps ** 2)),
              "midpoint": prod * (1 / 3 - 1 / (12 * steps ** 2)),
              "gauss_legendre": prod / 3}
    for rule, value in expect.items():
        res = integrated_gradients(f, x, steps=steps if rule != "gauss_legendre" else 2,
                                   rule=rule)
        np.testing.assert_allclose(res.attributions, np.full(3, value), rtol=2e-6)


def test_ig_vector_outputs_and_chunks():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(5,)), jnp.float32)

    def f(v):
        return jnp.stack([jnp.sum(jnp.sin(v)), jnp.prod(v)])

    ig = jax.jit(integrated_gradients, static_argnums=0, static_argnames=("steps", "chunk_size"))
    vec = ig(f, x, b, steps=16)
    assert vec.attributions.shape == (2, 5) and vec.delta.shape == (2,)
    for k in range(2):
        one = ig(lambda v, k=k: f(v)[k], x, b, steps=16)
        np.testing.assert_allclose(vec.attributions[k], one.attributions, rtol=1e-5, atol=1e-7)
    chunked = ig(f, x, b, steps=16, chunk_size=5)
    np.testing.assert_allclose(chunked.attributions, vec.attributions, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="float"):
        integrated_gradients(lambda v: v.sum(), jnp.arange(3))


# ----------------------------------------------------------------------------- IG, DACT


def test_embed_accepts_word_embeddings():
    enc, params = make_model()
    batch = batch_from_ids(np.array([[1, 7, 9, 0]]), np.array([[1, 1, 1, 0]]))
    words = jnp.take(params["encoder"]["embeddings"]["word"], batch.input_ids, axis=0)
    np.testing.assert_array_equal(enc.embed(params["encoder"], batch),
                                  enc.embed(params["encoder"], batch, word_embeddings=words))
    with pytest.raises(ValueError, match="word_embeddings"):
        enc.embed(params["encoder"], batch, word_embeddings=words[:, :3])


@pytest.fixture(scope="module")
def dact_ig():
    enc, params = make_model()
    attribute = make_dact_attributor(enc, False, steps=64, buckets=(16,))
    return enc, params, attribute


def test_dact_ig_completeness(dact_ig):
    """Completeness within 1e-4 (trapezoid, 64 steps) for the output a_L[c] and every
    halting value h_l, on inputs whose values move far from the baseline's."""
    enc, params, attribute = dact_ig
    ids = np.array([1, 23, 57, 8, 91, 40, 2], np.int32)
    att = attribute(params, ids)
    batch = batch_from_ids(ids[None])
    out = dact_forward(enc, params, batch, False)
    a_last = np.asarray(out["a"][-1, 0])
    assert att.target == int(a_last.argmax())
    np.testing.assert_allclose(att.output_value, a_last[att.target], atol=1e-6)
    np.testing.assert_allclose(att.halting_values, np.asarray(out["h"][:, 0]), atol=1e-6)
    assert att.output.shape == (7,) and att.halting.shape == (L, 7)
    # non-vacuous: the attributed quantities really change along the path
    assert abs(att.output_value - att.output_baseline) > 0.01
    assert np.abs(att.halting_values - att.halting_baseline).max() > 0.1
    np.testing.assert_allclose(att.output.sum() - (att.output_value - att.output_baseline),
                               att.output_delta, atol=1e-6)
    assert abs(att.output_delta) < 1e-4
    np.testing.assert_allclose(att.halting.sum(1), att.halting_values - att.halting_baseline,
                               atol=1e-4)
    # a chosen class works the same way
    other = (att.target + 1) % 3
    att2 = attribute(params, ids, target=other)
    assert att2.target == other and abs(att2.output_delta) < 1e-4
    np.testing.assert_allclose(att2.output_value, a_last[other], atol=1e-6)


def test_dact_ig_mean_pooling_is_padding_invariant_and_checks_input(dact_ig):
    enc, params, attribute = dact_ig
    ids = np.array([1, 33, 12, 2], np.int32)
    small = make_dact_attributor(enc, False, steps=64, buckets=(8,), pooling="mean")(params,
                                                                                   ids)
    large = make_dact_attributor(enc, False, steps=64, buckets=(32,), pooling="mean")(params,
                                                                                    ids)
    np.testing.assert_allclose(small.output, large.output, atol=1e-5)
    np.testing.assert_allclose(small.halting, large.halting, atol=1e-5)
    ref = dact_forward(enc, params, batch_from_ids(ids[None]), False, pooling="mean")
    np.testing.assert_allclose(small.halting_values, np.asarray(ref["h"][:, 0]), atol=1e-6)
    assert abs(small.output_delta) < 1e-4 and np.abs(small.halting_delta).max() < 1e-4
    cls = attribute(params, ids)  # the model read through [CLS] answers differently
    assert np.abs(cls.halting_values - small.halting_values).max() > 1e-3
    with pytest.raises(ValueError, match="no tokens"):
        attribute(params, np.array([], np.int32))
    with pytest.raises(ValueError, match="DACT"):
        attribute({"encoder": params["encoder"], "heads": {"final": params["heads"]["final"]}},
                  ids)
    with pytest.raises(ValueError, match="target"):
        attribute(params, ids, target=3)


# ----------------------------------------------------------------------------- rendering


def test_heatmap_html_escapes_and_colours(tmp_path):
    tokens = ["[CLS]", "<b>", "a&b", '"q"', "$x$", "[SEP]"]
    rows = np.array([[0.5, -1.0, 0.25, 0.0, 2.0, -0.1], [0.0] * 6])
    page = heatmap_html(tokens, rows, ["output", "h_1 <all zero>"], title="t <1>")
    assert "&lt;b&gt;" in page and "a&amp;b" in page and "&quot;q&quot;" in page
    assert "<b>" not in page and "&lt;all zero&gt;" in page and "t &lt;1&gt;" in page
    assert "rgba(0, 160, 0, 1.000)" in page  # the row's largest positive value: full green
    assert "rgba(210, 0, 0, 0.500)" in page  # -1.0 of max 2.0: half red
    assert page.count("<tr>") == 2
    png = write_heatmap_png(tokens, rows, tmp_path / "h.png", ["output", "h_1"], title="$1")
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="tokens"):
        heatmap_html(tokens[:3], rows)
    with pytest.raises(ValueError, match="no tokens"):
        heatmap_html([], np.zeros((1, 0)))


# ----------------------------------------------------------------------------- analyses


def test_exit_histogram(tmp_path):
    exits = np.array([1, 1, 3, 2, 1, 3, 3, 3])
    counts = exit_histogram(exits, 4)
    np.testing.assert_array_equal(counts, [3, 1, 4, 0])
    report = write_exit_histogram(exits, 4, tmp_path)
    assert sum(report["counts"].values()) == len(exits) == report["num_examples"]
    assert report["max_exit_layer"] == 3
    assert json.loads((tmp_path / "exit_histogram.json").read_text()) == report
    assert (tmp_path / "exit_histogram.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="1..4"):
        exit_histogram([0, 2], 4)


def test_attention_entropy_uniform_is_log_n():
    enc, params = make_model()
    layers = dict(params["encoder"]["layers"])
    layers["qkv"] = {"kernel": jnp.zeros_like(layers["qkv"]["kernel"]),
                     "bias": jnp.zeros_like(layers["qkv"]["bias"])}  # q = k = 0: uniform rows
    flat = {**params["encoder"], "layers": layers}
    mask = np.zeros((3, 12), np.int32)
    for i, n in enumerate((5, 9, 1)):
        mask[i, :n] = 1
    batch = batch_from_ids(np.where(mask, 7, 0), mask)
    res = attention_entropy(enc, flat, [batch])
    expect = (5 * np.log(5) + 9 * np.log(9) + 1 * 0.0) / 15
    np.testing.assert_allclose(res["per_layer"], np.full(L, expect), rtol=1e-5)
    np.testing.assert_allclose(res["per_head"], np.full((L, 2), expect), rtol=1e-5)
    assert res["num_tokens"] == 15


def test_attention_entropy_matches_direct_computation():
    enc, params = make_model()
    ex = random_examples(4, seed=2)
    mask = np.zeros((4, 16), np.int32)
    ids = np.zeros((4, 16), np.int32)
    for i, (x, _) in enumerate(ex):
        ids[i, :len(x)], mask[i, :len(x)] = x, 1
    batch = batch_from_ids(ids, mask)
    res = attention_entropy(enc, params["encoder"], [batch])
    from jaxit.encoders.transformer import mask_bias_from

    h = enc.embed(params["encoder"], batch)
    bias = mask_bias_from(jnp.asarray(mask))
    for l in range(L):
        h, probs = enc.block(enc.layer_params(params["encoder"], l), h, bias,
                             return_attention=True)
        ents = []
        for i in range(4):
            n = mask[i].sum()
            p = np.asarray(probs[i, :, :n, :n], np.float64)  # real queries x real keys
            p = p / p.sum(-1, keepdims=True)
            ents.append(-(p * np.log(p)).sum(-1))  # [H, n]
        per_head = np.concatenate(ents, axis=1).mean(1)
        np.testing.assert_allclose(res["per_head"][l], per_head, rtol=1e-4)


def test_prune_slices_layers_heads_and_halting():
    enc, params = make_model()
    batch = batch_from_ids(np.array([[1, 5, 9, 13, 2, 0]]), np.array([[1, 1, 1, 1, 1, 0]]))
    full = collect_layer_outputs(enc, params, [batch], False)
    for depth in (1, 3):
        enc_p, params_p = prune_unused_layers(enc, params, depth)
        assert enc_p.config.num_layers == depth
        assert params_p["heads"]["halting"]["kernel"].shape[0] == depth
        pr = collect_layer_outputs(enc_p, params_p, [batch], False)
        np.testing.assert_allclose(pr.outputs, full.outputs[:depth], atol=1e-5)
        np.testing.assert_allclose(pr.halting, full.halting[:depth], atol=1e-6)
    assert prune_unused_layers(enc, params, L)[1]["heads"]["final"] is params["heads"]["final"]
    with pytest.raises(ValueError, match="depth"):
        prune_unused_layers(enc, params, 0)
    with pytest.raises(ValueError, match="not a DACT model"):
        prune_unused_layers(enc, {"encoder": params["encoder"], "heads": {}}, 2)


def test_pruning_at_the_deepest_exit_keeps_predictions():
    """Halting values that stop every example by layer 3 (h_3 ~ 0, so p_3 ~ 0); the heads'
    differing confidence spreads the exits over layers 1-3. The model pruned to its deepest
    exit layer answers identically."""
    enc, params = make_model(seed=0)
    params["heads"]["halting"] = {  # h = 0.03, 0.5, ~0, 0.5 for every example
        "kernel": jnp.zeros_like(params["heads"]["halting"]["kernel"]),
        "bias": jnp.asarray([-3.5, 0.0, -30.0, 0.0], jnp.float32)[:, None]}
    examples = random_examples(40, seed=3)
    report = pruning_check(enc, params, examples, False, buckets=(16,))
    full = report.pop("_full")
    exits = full.exit_layers
    assert exits.max() == report["depth"] == 3 < L  # pruning removes a layer ...
    assert len(set(exits.tolist())) == 3  # ... and exits are spread out
    assert report["identical_predictions"] and report["num_changed"] == 0
    assert report["encoder_params_pruned"] < report["encoder_params_full"]
    pruned = report.pop("_pruned")
    assert (pruned.exit_layers <= exits).all()
    json.dumps(report)  # the rest is JSON-able


# ----------------------------------------------------------------------------- end to end


def test_interpret_run_writes_every_output(tmp_path):
    """`jaxit interpret`'s work on an untrained tiny DACT model (the CLI only adds
    restoring the checkpoint), and its refusal of a non-DACT run."""
    from jaxit.configs import tiny_config
    from jaxit.interpret.report import interpret_checkpoint, interpret_run
    from jaxit.train.pipeline import build_setup

    c = tiny_config()
    c.method.name = "dact"
    c.data.synthetic_dev = 12
    setup = build_setup(c)
    params = setup.method.init(jax.random.PRNGKey(0), setup.encoder_params)
    summary = interpret_run(setup, params, tmp_path, num_examples=2, ig_steps=8)
    for name in ("exit_histogram.png", "exit_histogram.json", "attention_entropy.png",
                 "attention_entropy.json", "pruning.json", "attributions.html",
                 "attributions_0.png", "attributions_1.png", "attributions.json",
                 "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert summary["exit_histogram"]["num_examples"] == 12
    assert len(summary["attention_entropy_per_layer"]) == 2
    assert summary["pruning"]["identical_predictions"]
    att = json.loads((tmp_path / "attributions.json").read_text())["examples"]
    assert len(att) == 2 and len(att[0]["halting"]["attributions"]) == 2
    assert len(att[0]["tokens"]) == len(att[0]["output"]["attributions"])
    assert att[0]["tokens"][0] == "[CLS]"
    page = (tmp_path / "attributions.html").read_text()
    assert page.count("halting h_2") == 2 and "[CLS]" in page
    c.method.name = "finetune"
    with pytest.raises(ValueError, match="DACT"):
        interpret_checkpoint(c, tmp_path / "nothing")


@pytest.mark.standard_promotion
def test_interpret_elbert_run_writes_its_decision_figures(tmp_path):
    """`jaxit interpret` on an ELBERT run: per example, cumulative [CLS] attention rows
    (running means: each sums to 1), the shared classifier's probabilities per layer equal
    the layer-wise trace's, and the exit layer equals the batch-1 runner's ELBERT exit."""
    from jaxit.configs import tiny_config
    from jaxit.inference.policies import make_policy
    from jaxit.inference.runner import EarlyExitRunner
    from jaxit.interpret.elbert_view import cumulative_attention
    from jaxit.interpret.report import interpret_checkpoint
    from jaxit.sweep import dev_examples, dev_trace
    from jaxit.train.evaluate import restore_params
    from jaxit.train.loop import train

    np.testing.assert_allclose(cumulative_attention(np.array([[0.2, 0.8], [0.6, 0.4]])),
                               [[0.2, 0.8], [0.4, 0.6]])
    c = tiny_config()
    c.method.name = "elbert"
    c.train.num_steps = 16
    train(c, tmp_path / "run")
    summary = interpret_checkpoint(c, tmp_path / "run", num_examples=6)
    out = tmp_path / "run" / "interpret"
    assert summary["delta"] == 0.5 and summary["examples"] == 6
    assert all((out / f"elbert_{i}.png").stat().st_size > 2000 for i in range(6))
    assert "cumulative [CLS] attention" in (out / "elbert.html").read_text()
    recs = json.loads((out / "elbert.json").read_text())["records"]
    setup, params = restore_params(c, tmp_path / "run")
    trace = dev_trace(setup, params)
    runner = EarlyExitRunner(setup.method.encoder, params, 2, False, buckets=(16, 32))
    for i, (ids, tt) in enumerate(dev_examples(setup, 6)):
        r = recs[i]
        cum = np.asarray(r["cumulative_attention"])
        assert cum.shape == (2, ids.size)
        np.testing.assert_allclose(cum.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(r["probabilities"], trace.probs[:, i], atol=1e-5)
        assert r["exit_layer"] == runner.run_one(ids, tt, make_policy("elbert", 0.5)).exit_layer
