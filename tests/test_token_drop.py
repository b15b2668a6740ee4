"""AdapLeR inference with real token dropping: the batch-1 runner agrees with the full model
(η = 0), with hand-made predictors whose drops are known, and with the soft-mask forward at
very large λ; FLOPs follow the kept counts; compiled shapes stay within the bucket set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit import flops
from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.encoders.transformer import MASK_MIN
from jaxit.heads import exit_head
from jaxit.inference.buckets import examples_from_batch
from jaxit.inference.token_drop import TokenDropRunner
from jaxit.inference.token_drop_timing import compare_with_static, static_bucket_times
from jaxit.methods.adapler import EVAL_LAMBDA, adapler_forward
from tests.rows import random_batch

L, D, C = 3, 32, 3
BUCKETS = (8, 16, 32)


def make_params(cfg, seed=0, cp_scale=1.0, eta=0.25):
    """A hand-built AdapLeR params tree (the `jaxit.methods.adapler` layout), drawn with
    numpy (no compilation): normal(0.02) kernels and tables, unit LayerNorm scales, zero
    biases; CP kernels normal(cp_scale); the head's output scaled up so that logits differ."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))

    def draw(path, x):
        name = getattr(path[-1], "key", "")
        if name == "scale":
            return np.ones(x.shape, np.float32)
        if name == "bias":
            return np.zeros(x.shape, np.float32)
        return (0.02 * rng.standard_normal(x.shape)).astype(np.float32)

    layers, d = cfg.num_layers, cfg.hidden_size
    normal = lambda shape, scale: (scale * rng.standard_normal(shape)).astype(np.float32)
    cp = {"hidden": {"kernel": normal((layers, d, 32), cp_scale),
                     "bias": np.zeros((layers, 32), np.float32)},
          "out": {"kernel": normal((layers, 32, 1), cp_scale),
                  "bias": np.zeros((layers, 1), np.float32)}}
    head = {"pooler": {"kernel": normal((d, d), 0.02), "bias": np.zeros(d, np.float32)},
            "out": {"kernel": normal((d, C), 0.6), "bias": np.zeros(C, np.float32)}}
    return {"encoder": jax.tree_util.tree_map_with_path(draw, shapes),
            "heads": {"final": head, "cp": cp, "eta": np.full(layers, eta, np.float32),
                      "theta": np.ones(layers, np.float32)}}


def make_data(n, seed=0, max_len=32, vocab=100):
    return random_batch(n, max_len, min_len=2, seed=seed, vocab=vocab, labels=False)


def soft_forward(enc, params, batch, eta):
    """The soft-mask forward at λ = 1e20 (`adapler_forward`) with η overridden. Returns
    (logits [B, C], kept [L, B, T]: the tokens layer l + 1 attends to). At this λ a token's
    accumulated mask is either ~0 (kept: |M| < 1e-6) or at the clip MASK_MIN (removed), so
    any threshold in between gives the same sets: we check that, then use M > -1."""
    params = {**params, "heads": {**params["heads"], "eta": jnp.asarray(eta, jnp.float32)}}
    out = adapler_forward(enc, params, batch, EVAL_LAMBDA)
    masks = np.asarray(out["masks"])
    real = np.asarray(batch.attention_mask)[None] > 0
    m = masks[np.broadcast_to(real, masks.shape)]
    assert np.all((m > -1e-6) | (m <= MASK_MIN + 1e-3)), "soft mask is not a hard cut"
    return out["logits"], (masks > -1.0) & real


@pytest.fixture(scope="module")
def model():
    cfg = EncoderConfig("bert", 100, D, L, 2, 64, max_position_embeddings=64)
    return cfg, make_encoder(cfg)


@pytest.fixture(scope="module")
def shared(model):
    """One runner (one set of compilations) for the random-model tests; η is set per test."""
    cfg, enc = model
    params = make_params(cfg, seed=1, cp_scale=0.3)
    return params, TokenDropRunner(enc, params, C, buckets=BUCKETS)


def test_eta_zero_keeps_everything_and_equals_full_model(model, shared):
    cfg, enc = model
    params, runner = shared
    runner.set_eta(0.0)
    data = make_data(12)
    res = runner.run(data, fused=False)
    n = np.asarray(data.attention_mask).sum(1)
    np.testing.assert_array_equal(res.tokens_per_layer, np.repeat(n[:, None], L, 1))
    fused = runner.run(data, fused=True)
    np.testing.assert_array_equal(fused.tokens_per_layer, res.tokens_per_layer)
    full = enc.forward_all(params["encoder"], data)["cls"][-1]
    ref, _ = exit_head(params["heads"]["final"], full)
    np.testing.assert_allclose(res.outputs, ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(fused.outputs, ref, atol=1e-4, rtol=1e-4)
    static = runner.run_static(data)
    np.testing.assert_allclose(static.outputs, ref, atol=1e-4, rtol=1e-4)
    # with every token kept, AdapLeR costs the full model plus its CPs
    cps = sum(flops.contribution_predictor_flops(cfg, int(k)) * L for k in n)
    assert res.flops.sum() == res.full_flops.sum() + cps
    assert res.flops_speedup < 1.0


def test_hand_made_predictor_drops_the_tokens_it_should(model):
    """CP 0 reads a marker that only "important" word ids carry (dimension 0 of their word
    embedding): its softmax puts ~all mass on them, so with η^0 = 0.5 exactly [CLS] and the
    important tokens survive; η = 0 afterwards keeps that set to the end."""
    cfg, enc = model
    params = make_params(cfg)
    word = np.array(params["encoder"]["embeddings"]["word"])
    for table in ("word", "position", "token_type"):
        t = np.array(params["encoder"]["embeddings"][table])
        t[:, 0] = 0.0
        params["encoder"]["embeddings"][table] = t
    important = np.arange(50, 60)
    word = np.array(params["encoder"]["embeddings"]["word"])
    word[important, 0] = 1.0
    params["encoder"]["embeddings"]["word"] = word
    hk = np.zeros((L, D, 32), np.float32)
    hk[:, 0, 0] = 1.0
    ok = np.zeros((L, 32, 1), np.float32)
    ok[:, 0, 0] = 3.0
    params["heads"]["cp"]["hidden"]["kernel"] = hk
    params["heads"]["cp"]["out"]["kernel"] = ok
    eta = np.array([0.5, 0.0, 0.0], np.float32)
    runner = TokenDropRunner(enc, params, C, buckets=BUCKETS, eta=eta)
    ids = np.array([1, 7, 52, 8, 9, 55, 11, 12, 59, 13, 14, 2], np.int32)
    r = runner.run_one(ids, None, return_scores=True)
    expected = np.isin(ids, important)
    expected[0] = True
    for l in range(L):
        np.testing.assert_array_equal(r.kept[l], expected)
    np.testing.assert_array_equal(r.tokens_per_layer, [4, 4, 4])
    assert np.all(np.isnan(r.scores[1:, ~expected]))  # dropped tokens are not scored again
    out, kept = soft_forward(enc, params, batch_from_ids(ids[None]), jnp.asarray(eta))
    np.testing.assert_array_equal(np.asarray(kept)[:, 0], r.kept)
    np.testing.assert_allclose(r.outputs, out[0], atol=1e-4, rtol=1e-4)


def test_hard_dropping_equals_soft_mask_at_large_lambda(model, shared):
    """Kept sets per layer and logits of the runner == the soft-mask forward at λ = 1e20."""
    _, enc = model
    params, runner = shared
    eta = np.array([0.3, 0.5, 0.6], np.float32)
    runner.set_eta(eta)
    data = make_data(16, seed=2)
    res = runner.run(data, return_scores=True)
    fused = runner.run(data, fused=True)  # one call per example: same counts and outputs
    np.testing.assert_array_equal(fused.tokens_per_layer, res.tokens_per_layer)
    np.testing.assert_allclose(fused.outputs, res.outputs, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(fused.flops, res.flops)
    out, kept = soft_forward(enc, params, data, eta)
    kept = np.asarray(kept)
    mask = np.asarray(data.attention_mask).astype(bool)
    for i, r in enumerate(res.examples):
        np.testing.assert_array_equal(r.kept, kept[:, i, mask[i]], err_msg=f"example {i}")
    np.testing.assert_array_equal(res.tokens_per_layer, kept.sum(-1).T)
    np.testing.assert_allclose(res.outputs, out, atol=1e-4, rtol=1e-4)
    # the test means something: tokens drop, by different amounts, at every layer
    n = mask.sum(1)
    assert (res.tokens_per_layer[:, 0] < n).mean() > 0.5
    assert (np.diff(res.tokens_per_layer, axis=1) < 0).any(0).all()
    assert len(np.unique(res.tokens_per_layer[:, -1])) > 2


def test_flops_follow_the_kept_counts(model, shared):
    cfg, _ = model
    _, runner = shared
    runner.set_eta(0.5)
    data = make_data(10, seed=3)
    res = runner.run(data)
    for r in res.examples:
        counts = [int(k) for k in r.tokens_per_layer]
        cp_in = [r.num_tokens] + counts[:-1]
        expected = (flops.encoder_flops(cfg, counts) + flops.head_flops(cfg, C)
                    + sum(2 * k * (D * 32 + 32) for k in cp_in))
        assert r.flops == expected
        assert r.flops == flops.token_drop_flops(cfg, r.num_tokens, counts, C)
    assert res.flops_speedup == pytest.approx(res.full_flops.sum() / res.flops.sum())
    assert res.flops_speedup > 1.0
    with pytest.raises(ValueError, match="entries"):
        flops.token_drop_flops(cfg, 5, [5, 5], C)


def test_compiled_shapes_stay_within_buckets_on_sst2_dev(data_dir, minilm_dir):
    """The whole SST-2 dev set (real tokenizer; a tiny random model: the check is shapes)."""
    import csv

    from jaxit.encoders import load_tokenizer

    tok = load_tokenizer(minilm_dir)
    examples = []
    with open(data_dir / "SST-2" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        si = next(rows).index("sentence")
        for row in rows:
            examples.append((np.asarray(tok.encode(row[si]).ids[:128], np.int32), None))
    assert len(examples) == 872
    cfg = EncoderConfig("bert", tok.get_vocab_size(), 16, 2, 2, 32, max_position_embeddings=64)
    enc = make_encoder(cfg)
    buckets = (8, 16, 32, 64)  # SST-2 dev: 4 to 55 tokens (MiniLM's WordPiece)
    runner = TokenDropRunner(enc, make_params(cfg, seed=4, cp_scale=0.3), C, buckets=buckets,
                             eta=0.5)
    runner.warmup(static=False)  # the static model is checked in another test
    warm = dict(runner.trace_counts)
    assert set(warm) == {"first", "layer", "last", "fused"}
    assert all(v == len(buckets) for v in warm.values()), warm
    res = runner.run(examples)  # fused: one call per example
    host = runner.run(examples[:200], fused=False)
    np.testing.assert_array_equal(host.tokens_per_layer, res.tokens_per_layer[:200])
    assert runner.trace_counts == warm
    # lengths and kept counts span several buckets
    first = {runner.bucket(int(n)) for n in res.num_tokens}
    kept = {runner.bucket(int(k)) for k in res.tokens_per_layer.ravel()}
    assert len(first) >= 3 and len(kept) >= 3
    assert (res.tokens_per_layer[:, -1] < res.num_tokens).mean() > 0.5
    with pytest.raises(ValueError, match="largest length bucket"):
        runner.run_one(np.ones(65, np.int32))


def test_compare_with_static_reports_side_by_side(shared):
    _, runner = shared
    runner.set_eta(0.3)
    data = make_data(6, seed=5)
    examples = [(ids, None) for ids, _ in examples_from_batch(data)]
    labels = np.zeros(6, np.int64)
    times = static_bucket_times(runner, repeats=2)
    assert set(times) == set(BUCKETS)
    m = compare_with_static(runner, examples,
                            {"drop": 0.6, "all": 0.0, "host": {"eta": 0.6, "fused": False}},
                            repeats=2, labels=labels, bucket_times=times)
    assert m["drop"]["fused"] and not m["host"]["fused"]
    assert m["host"]["flops_speedup"] == m["drop"]["flops_speedup"]
    np.testing.assert_allclose(runner.eta, 0.3)  # restored
    assert m["all"]["flops_speedup"] < 1.0 < m["drop"]["flops_speedup"]
    assert m["all"]["agreement_with_static"] == 1.0
    assert m["all"]["length_time_speedup"] == pytest.approx(1.0)
    for k in ("drop", "all"):
        r = m[k]
        assert r["wall_over_flops"] == pytest.approx(r["wall_speedup"] / r["flops_speedup"])
        assert len(r["avg_tokens_per_layer"]) == L and 0 <= r["accuracy"] <= 1
