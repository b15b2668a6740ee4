"""The batched engine on the real MiniLM-L6 checkpoint and real SST-2 dev sentences: for every
method family (multi-exit with every policy, DACT, AdapLeR token dropping, exits + CPs) its
predictions, exit layers and kept tokens equal the batch-1 runners' (or, for exits + CPs, a
plain per-example loop), for any batch sizes, arrival order and number of devices; nothing
compiles after warm-up over all of SST-2 dev; FLOPs follow the account."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit import flops
from jaxit.batch import Batch
from jaxit.encoders import load_pretrained, load_tokenizer, make_encoder
from jaxit.encoders.transformer import mask_bias_from
from jaxit.heads import exit_head, init_halting, pool_features, stacked_heads
from jaxit.inference import (
    ConfidencePolicy,
    DACTPolicy,
    EarlyExitRunner,
    ELBERTPolicy,
    EntropyPolicy,
    FixedLayerPolicy,
    LTEPolicy,
    NeverExit,
    NormalizedEntropyPolicy,
    PatiencePolicy,
    layer_output,
    load_runner_examples,
)
from jaxit.inference.buckets import batch_from_examples
from jaxit.inference.engine import BatchedEngine
from jaxit.inference.engine_results import example_flops
from jaxit.inference.evaluate_exits import collect_layer_outputs
from jaxit.inference.token_drop import TokenDropRunner
from jaxit.methods.adapler import contribution_scores, cp_layer, hard_keep, init_cp
from jaxit.methods.early_exit import make_early_exit

BUCKETS = (16, 32, 64)  # SST-2 dev: 4 to 55 MiniLM tokens
N_SUB = 96  # examples for the per-policy comparisons (all 872 in the compile-count test)
POOLING = "mean"


@pytest.fixture(scope="module")
def minilm(minilm_dir, data_dir):
    cfg, enc_params = load_pretrained(minilm_dir)
    enc = make_encoder(cfg)
    examples, _labels = load_runner_examples(load_tokenizer(minilm_dir), "sst2", "dev",
                                            max_length=64, data_dir=data_dir)
    assert len(examples) == 872
    return cfg, enc, enc_params, examples


def _scaled(tree, s):
    return jax.tree.map(lambda x: s * x, tree)


@pytest.fixture(scope="module")
def depth(minilm):
    """Multi-exit MiniLM with LTE and DACT halting units (random heads, spread so that exits
    happen at every layer), its batch-1 runner and the per-layer trace on the subset."""
    cfg, enc, enc_params, examples = minilm
    m = make_early_exit(enc, 2, False, 10, "joint", lte=True, pooling=POOLING)
    params = m.init(jax.random.PRNGKey(0), enc_params)
    heads = params["heads"]
    heads["exits"]["out"] = _scaled(heads["exits"]["out"], 40.0)
    heads["final"]["out"] = _scaled(heads["final"]["out"], 40.0)
    heads["lte"] = _scaled(heads["lte"], 40.0)
    heads["halting"] = _scaled(init_halting(jax.random.PRNGKey(1), cfg.num_layers,
                                            cfg.hidden_size), 60.0)
    params = jax.tree.map(np.asarray, params)
    runner = EarlyExitRunner(enc, params, 2, False, buckets=BUCKETS, pooling=POOLING)
    sub = examples[:N_SUB]
    trace = collect_layer_outputs(enc, params, [_batch(sub, cfg.pad_token_id)], False,
                                  pooling=POOLING)
    return enc, params, runner, sub, trace


def _batch(examples, pad_id, t=64):
    return batch_from_examples(examples, pad_id, t)


def safe_threshold(values, lo=0.25, hi=0.75):
    """The midpoint of the widest gap between observed values in the [lo, hi] quantile range:
    no example sits within rounding of it."""
    v = np.unique(np.asarray(values, np.float64).ravel())
    v = v[int(lo * (len(v) - 1)):int(hi * (len(v) - 1)) + 1]
    i = int(np.argmax(np.diff(v)))
    return float((v[i] + v[i + 1]) / 2)


def depth_policies(trace):
    probs = trace.probs  # [L, N, C]
    ent = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1)
    return [
        ConfidencePolicy(safe_threshold(probs.max(-1))),
        EntropyPolicy(safe_threshold(ent)),
        NormalizedEntropyPolicy(safe_threshold(ent / np.log(2))),
        LTEPolicy(safe_threshold(trace.lte)),
        PatiencePolicy(1), PatiencePolicy(2), FixedLayerPolicy(3),
        ELBERTPolicy(safe_threshold(ent / np.log(2), 0.05, 0.3), window=2, criterion=1),
        ELBERTPolicy(0.0, window=3, criterion=2, margin=0.05, max_range=0.3),
        ELBERTPolicy(0.0, window=2, criterion=3, margin=0.1),
    ]


def assert_same(ref, res, tokens=False):
    np.testing.assert_array_equal(res.exit_layers, ref.exit_layers)
    np.testing.assert_allclose(res.outputs, ref.outputs, atol=2e-4, rtol=2e-4)
    np.testing.assert_array_equal(res.predictions, ref.predictions)
    np.testing.assert_array_equal(res.flops, ref.flops)
    if tokens:
        np.testing.assert_array_equal(res.tokens_per_layer, ref.tokens_per_layer)


def test_depth_every_policy_equals_batch1_any_batch_and_order(depth):
    enc, params, runner, sub, trace = depth
    engine = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                           batch_sizes=(16,), devices=jax.local_devices()[:1])
    other = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                          batch_sizes=(3,), devices=jax.local_devices()[:1])
    order = np.random.default_rng(0).permutation(len(sub))
    seen_layers = set()
    for policy in depth_policies(trace):
        ref = runner.run(sub, policy)
        res = engine.run(sub, policy)
        assert_same(ref, res)
        assert (res.tokens_per_layer[:, 0] == res.num_tokens).all()
        shuffled = other.run([sub[i] for i in order], policy)
        np.testing.assert_array_equal(shuffled.exit_layers, ref.exit_layers[order])
        np.testing.assert_allclose(shuffled.outputs, ref.outputs[order], atol=2e-4, rtol=2e-4)
        seen_layers |= set(res.exit_layers.tolist())
    assert runner.fused_disagreements == 0
    assert seen_layers == set(range(1, 7)), "the policies should exit at every layer"


def test_dact_halting_bound_equals_batch1(depth):
    enc, params, runner, sub, _ = depth
    engine = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                           batch_sizes=(8, 16), devices=jax.local_devices()[:1])
    for tol in (0.0, 0.3):
        policy = DACTPolicy(6, tolerance=tol)
        ref = runner.run(sub, policy)
        res = engine.run(sub, policy)
        assert len(set(ref.exit_layers.tolist())) >= 3, ref.exit_layers
        assert_same(ref, res)


def adapler_params(cfg, enc_params, seed=2, eta=1.0, heads=None):
    """MiniLM + random contribution predictors (normal(0.3) kernels) and η."""
    cp = _scaled(init_cp(jax.random.PRNGKey(seed), cfg.num_layers, cfg.hidden_size), 15.0)
    base = heads if heads is not None else {
        "final": {"pooler": enc_params["pooler"],
                  "out": {"kernel": 0.8 * jax.random.normal(jax.random.PRNGKey(seed + 1),
                                                            (cfg.hidden_size, 2)),
                          "bias": jnp.zeros((2,))}}}
    return jax.tree.map(np.asarray, {"encoder": enc_params, "heads": {
        **base, "cp": cp, "eta": np.full(cfg.num_layers, eta, np.float32)}})


def test_token_dropping_equals_batch1_runner(minilm):
    cfg, enc, enc_params, examples = minilm
    params = adapler_params(cfg, enc_params)
    sub = examples[:N_SUB]
    ref = TokenDropRunner(enc, params, 2, buckets=BUCKETS).run(sub)
    kept = ref.kept_fraction
    assert kept[0] < 0.95 and kept[-1] < 0.6, kept  # tokens drop and move between buckets
    engine = BatchedEngine(enc, params, 2, False, buckets=BUCKETS, batch_sizes=(4, 16),
                           devices=jax.local_devices()[:1])
    res = engine.run(sub)
    np.testing.assert_array_equal(res.tokens_per_layer, ref.tokens_per_layer)
    np.testing.assert_allclose(res.outputs, ref.outputs, atol=2e-4, rtol=2e-4)
    np.testing.assert_array_equal(res.flops, ref.flops)
    assert (res.exit_layers == 6).all()
    order = np.random.default_rng(1).permutation(len(sub))
    shuffled = BatchedEngine(enc, params, 2, False, buckets=BUCKETS, batch_sizes=(5,),
                             devices=jax.local_devices()[:1]).run([sub[i] for i in order])
    np.testing.assert_array_equal(shuffled.tokens_per_layer, ref.tokens_per_layer[order])


def reference_exits_and_cps(enc, params, examples, policy, pooling, t=64):
    """Exits + CPs one example at a time, without the engine (padded to t tokens, the kept
    tokens compacted on the host): CP 0 picks layer 1's tokens; after layer l the exit head
    reads the pooled kept tokens and `policy` decides; else CP l picks layer l + 1's tokens.
    Returns (exit layers, outputs, tokens per layer)."""
    heads = params["heads"]
    stacked = stacked_heads(heads)
    enc_p = params["encoder"]
    L = enc.config.num_layers
    embed = jax.jit(lambda ids, m: enc.embed(enc_p, Batch(ids, jnp.zeros_like(ids), m, None)))
    block = jax.jit(lambda lp, h, v: enc.block(lp, h, mask_bias_from(v)))
    head = jax.jit(lambda hp, h, v: exit_head(hp, pool_features(h, v, pooling))[0])
    keep = jax.jit(lambda cp, eta, h, v: hard_keep(contribution_scores(cp, h, v), v, eta))

    def compact(h, k):
        idx = np.flatnonzero(np.asarray(k[0]) > 0)
        out = np.zeros(h.shape, np.float32)
        out[0, :idx.size] = np.asarray(h)[0, idx]
        return jnp.asarray(out), (jnp.arange(t) < idx.size)[None].astype(jnp.float32)

    exits, outs, tokens = [], [], np.zeros((len(examples), L), np.int32)
    for i, (tok, _) in enumerate(examples):
        ids = np.zeros((1, t), np.int32)
        ids[0, :tok.size] = tok
        valid = (jnp.arange(t) < tok.size)[None].astype(jnp.float32)
        h = embed(jnp.asarray(ids), valid.astype(jnp.int32))
        h, valid = compact(h, keep(cp_layer(heads["cp"], 0), heads["eta"][0], h, valid))
        policy.reset()
        for layer in range(1, L + 1):
            tokens[i, layer - 1] = int(valid.sum())
            h = block(enc.layer_params(enc_p, layer - 1), h, valid)
            out = np.asarray(head(jax.tree.map(lambda x, j=layer - 1: x[j], stacked), h,
                                  valid)[0], np.float32)
            if policy.update(layer, layer_output(out)) or layer == L:
                exits.append(layer)
                outs.append(out)
                break
            h, valid = compact(h, keep(cp_layer(heads["cp"], layer), heads["eta"][layer], h,
                                       valid))
    return np.array(exits), np.stack(outs), tokens


def test_exits_and_token_dropping_together(minilm, depth):
    """A model with exit heads on every layer AND contribution predictors."""
    cfg, enc, enc_params, examples = minilm
    _, dparams, _, _, trace = depth
    heads = {k: dparams["heads"][k] for k in ("exits", "final")}
    params = adapler_params(cfg, enc_params, eta=1.0, heads=heads)
    sub = examples[:48]
    policy = ConfidencePolicy(safe_threshold(trace.probs.max(-1), 0.4, 0.9))
    exits, outs, tokens = reference_exits_and_cps(enc, params, sub, policy, POOLING)
    assert len(set(exits.tolist())) >= 3 and (tokens[:, 0] < [t.size for t, _ in sub]).any()
    engine = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                           batch_sizes=(4, 8), devices=jax.local_devices()[:1])
    res = engine.run(sub, policy)
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_array_equal(res.tokens_per_layer, tokens)
    np.testing.assert_allclose(res.outputs, outs, atol=2e-4, rtol=2e-4)
    # FLOPs: layers actually run x tokens actually kept, a head per layer run, the CP in
    # front of every layer that ran
    for i, (tok, _) in enumerate(sub):
        e, n = int(exits[i]), tok.size
        kept = tokens[i, :e].tolist()
        hand = (sum(flops.layer_flops(cfg, k) for k in kept)
                + e * flops.head_flops(cfg, 2)
                + sum(flops.contribution_predictor_flops(cfg, k) for k in [n] + kept[:-1]))
        assert res.flops[i] == hand


def test_several_devices_give_the_same_answers(minilm, depth):
    assert jax.local_device_count() >= 4, "conftest sets 4 fake CPU devices"
    cfg, enc, enc_params, _examples = minilm
    _, dparams, _runner, sub, trace = depth
    policy = ConfidencePolicy(safe_threshold(trace.probs.max(-1)))
    one = BatchedEngine(enc, dparams, 2, False, pooling=POOLING, buckets=BUCKETS,
                        batch_sizes=(4,), devices=jax.local_devices()[:1]).run(sub, policy)
    four = BatchedEngine(enc, dparams, 2, False, pooling=POOLING, buckets=BUCKETS,
                         batch_sizes=(4,), devices=jax.local_devices()[:4]).run(sub, policy)
    assert_same(one, four)
    params = adapler_params(cfg, enc_params)
    a = BatchedEngine(enc, params, 2, False, buckets=BUCKETS, batch_sizes=(4,),
                      devices=jax.local_devices()[:1]).run(sub)
    b = BatchedEngine(enc, params, 2, False, buckets=BUCKETS, batch_sizes=(4,),
                      devices=jax.local_devices()[:4]).run(sub)
    assert_same(a, b, tokens=True)


def test_nothing_compiles_after_warmup_over_all_of_sst2_dev(minilm, depth):
    cfg, enc, _enc_params, examples = minilm
    _, dparams, _, _, trace = depth
    policy = ConfidencePolicy(safe_threshold(trace.probs.max(-1)))
    sizes = (4, 32)
    engine = BatchedEngine(enc, dparams, 2, False, pooling=POOLING, buckets=BUCKETS,
                           batch_sizes=sizes, devices=jax.local_devices()[:1])
    engine.warmup(policy, PatiencePolicy(2), ConfidencePolicy(0.5))
    warm = dict(engine.trace_counts)
    # per rule kind: (first, layer) x buckets x batch sizes; the static model: buckets x sizes
    # (ELBERT's three criteria share one executable: the criterion is a parameter)
    assert len(warm) == (2 * 2 + 1) * len(BUCKETS) * len(sizes), warm
    assert all(v == 1 for v in warm.values()), warm
    res = engine.run(examples, policy)
    engine.run(examples, PatiencePolicy(2))
    engine.run(examples, ConfidencePolicy(0.99))  # another threshold: same executables
    static = engine.run_static(examples)
    assert engine.trace_counts == warm
    assert len(set(res.exit_layers.tolist())) >= 4
    assert {int(engine.bucket_index(len(t))) for t, _ in examples} == {0, 1, 2}
    assert res.stats["padded_rows"] < 0.05 * res.stats["rows"]
    np.testing.assert_array_equal(static.exit_layers, 6)
    full = np.asarray(make_early_exit(enc, 2, False, 10, "joint", pooling=POOLING).predict(
        dparams, _batch(examples[:64], cfg.pad_token_id)))
    np.testing.assert_allclose(static.outputs[:64], full, atol=2e-4, rtol=2e-4)
    assert static.flops_speedup == 1.0 and res.flops_speedup > 1.0


def test_flops_account_matches_the_single_axis_formulas(minilm):
    cfg = minilm[0]
    for n, e in ((7, 1), (20, 4), (55, 6)):
        assert example_flops(cfg, n, [n] * e, 2, e, True, None) == flops.early_exit_flops(
            cfg, n, e, 2, lte=True)
    kept = [30, 21, 12, 9, 5, 3]
    assert example_flops(cfg, 40, kept, 2, 1, False, 32) == flops.token_drop_flops(
        cfg, 40, kept, 2)


def test_bad_inputs_are_clear_errors(depth):
    enc, params, _, sub, _ = depth
    engine = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=(16,),
                           batch_sizes=(4,), devices=jax.local_devices()[:1])
    with pytest.raises(ValueError, match="empty input at example 1"):
        engine.run([sub[0], (np.zeros(0, np.int32), None)])
    with pytest.raises(ValueError, match="exceed the largest length bucket 16"):
        engine.run([(np.ones(17, np.int32), None)])
    with pytest.raises(ValueError, match="no device rule"):
        engine.run(sub[:2], object())
    with pytest.raises(ValueError, match="num_layers=4"):
        engine.run(sub[:2], DACTPolicy(4))
    with pytest.raises(ValueError, match="contribution predictors"):
        engine.set_eta(0.5)
    with pytest.raises(ValueError, match="positive sizes"):
        BatchedEngine(enc, params, 2, False, batch_sizes=(0,))
    assert engine.run([], NeverExit()).outputs.shape == (0, 2)
