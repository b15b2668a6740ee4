"""DACT-BERT: the recurrence, its scan, the halting bound, training stages, the runner."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.encoders.transformer import mask_bias_from
from jaxit.heads import exit_head
from jaxit.inference import EarlyExitRunner
from jaxit.inference.evaluate_exits import collect_layer_outputs, simulate_exits
from jaxit.inference.policies import DACTPolicy, dact_can_stop
from jaxit.methods.dact import accumulate, dact_forward, halting_value, make_dact
from jaxit.methods.early_exit import stacked_heads
from tests.rows import random_batch

L = 4


def make_model(num_outputs=3, regression=False, seed=0, halting_scale=30.0):
    cfg = EncoderConfig("bert", 100, 32, L, 2, 64, max_position_embeddings=64)
    enc = make_encoder(cfg)
    m = make_dact(enc, num_outputs, regression, 10, tau=0.01)
    params = m.init(jax.random.PRNGKey(seed), init_params(cfg, jax.random.PRNGKey(seed)))
    # spread the untrained heads and halting units so that halting happens at many layers
    scale = lambda t, s: jax.tree.map(lambda x: s * x, t)
    params["heads"]["exits"]["out"] = scale(params["heads"]["exits"]["out"], 30.0)
    params["heads"]["final"]["out"] = scale(params["heads"]["final"]["out"], 30.0)
    params["heads"]["halting"] = scale(params["heads"]["halting"], halting_scale)
    return enc, m, params


def make_batch(n=6, max_len=16, seed=0, regression=False, vary_first=False):
    """`vary_first` puts a random token (not 1) in position 0 so that the untrained model's
    first-token state, and so its halting values, differ per example."""
    return random_batch(n, max_len, seed=seed, regression=regression,
                        first_token=None if vary_first else 1)


def python_loop(enc, params, batch, regression=False):
    """The recurrence written out: layer by layer, example by example."""
    hidden = enc.embed(params["encoder"], batch)
    bias = mask_bias_from(jnp.asarray(batch.attention_mask))
    heads = stacked_heads(params["heads"])
    b = hidden.shape[0]
    a = [None] * b
    p = [1.0] * b
    out_a, out_p = [], []
    for n in range(L):
        hidden = enc.block(enc.layer_params(params["encoder"], n), hidden, bias)
        head = jax.tree.map(lambda x, n=n: x[n], heads)
        logits, _ = exit_head(head, hidden[:, 0])
        unit = jax.tree.map(lambda x, n=n: x[n], params["heads"]["halting"])
        h = np.asarray(halting_value(unit, hidden[:, 0]), np.float64)
        y = (np.asarray(logits, np.float64) if regression
             else np.asarray(jax.nn.softmax(logits, -1), np.float64))
        for i in range(b):
            prev = np.zeros_like(y[i]) if a[i] is None else a[i]
            a[i] = y[i] * p[i] + prev * (1 - p[i])
            p[i] = h[i] * p[i]
        out_a.append(np.stack(a))
        out_p.append(np.array(p))
    return np.stack(out_a), np.stack(out_p)


@pytest.mark.parametrize("regression", [False, True])
def test_scan_equals_python_loop(regression):
    enc, _, params = make_model(1 if regression else 3, regression)
    batch = make_batch(regression=regression)
    out = jax.jit(lambda p, b: dact_forward(enc, p, b, regression))(params, batch)
    a_ref, p_ref = python_loop(enc, params, batch, regression)
    np.testing.assert_allclose(np.asarray(out["a"]), a_ref, atol=2e-6)
    np.testing.assert_allclose(np.asarray(out["p"]), p_ref, atol=2e-6)


def test_a_is_a_distribution_and_p_non_increasing():
    for seed in range(3):
        enc, _, params = make_model(seed=seed)
        out = dact_forward(enc, params, make_batch(n=8, seed=seed), False)
        a, p = np.asarray(out["a"]), np.asarray(out["p"])
        assert (a >= 0).all()
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
        assert (np.diff(p, axis=0) <= 1e-7).all() and (p >= 0).all() and (p[0] <= 1).all()
        # a_1 = y_1
        np.testing.assert_allclose(a[0], jax.nn.softmax(out["outputs"][0], -1), atol=1e-6)


def test_accumulate_matches_forward():
    enc, _, params = make_model()
    out = dact_forward(enc, params, make_batch(), False)
    a, p = accumulate(jax.nn.softmax(out["outputs"], -1), out["h"])
    np.testing.assert_allclose(a, out["a"], atol=1e-6)
    np.testing.assert_allclose(p, out["p"], atol=1e-6)


def _set_halting(params, bias_per_layer):
    halting = {"kernel": jnp.zeros_like(params["heads"]["halting"]["kernel"]),
               "bias": jnp.asarray(bias_per_layer, jnp.float32)[:, None]}
    return {**params, "heads": {**params["heads"], "halting": halting}}


def test_all_h_one_is_the_last_layer_and_h1_zero_the_first():
    enc, _, params = make_model()
    batch = make_batch()
    ones = _set_halting(params, [60.0] * L)  # sigmoid(60) == 1 in float32
    out = dact_forward(enc, ones, batch, False)
    np.testing.assert_allclose(out["a"][-1], jax.nn.softmax(out["outputs"][-1], -1), atol=1e-6)
    first = _set_halting(params, [-60.0] + [0.0] * (L - 1))  # h_1 = 0: nothing after layer 1
    out = dact_forward(enc, first, batch, False)
    np.testing.assert_allclose(out["a"][-1], jax.nn.softmax(out["outputs"][0], -1), atol=1e-6)


def _random_sequences(rng, n, layers, classes):
    """(y [n, L, C], h [n, L]) including adversarial runs: confident early layers, then all
    later mass on another class."""
    y = rng.dirichlet(np.full(classes, 0.3), (n, layers))
    h = rng.uniform(0, 1, (n, layers)) ** rng.choice([0.3, 1.0, 3.0], (n, 1))
    adv = rng.uniform(size=n) < 0.5
    for i in np.where(adv)[0]:
        k = rng.integers(1, layers)
        y[i, :k] = np.eye(classes)[0] * 0.97 + 0.01
        y[i, k:] = np.eye(classes)[1]
    return y, h


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_halting_bound_is_never_wrong_on_random_sequences(classes):
    rng = np.random.default_rng(classes)
    layers = 8
    y, h = _random_sequences(rng, 3000, layers, classes)
    stops = 0
    for i in range(len(y)):
        a, p = np.zeros(classes), 1.0
        history = []
        for n in range(layers):
            a = y[i, n] * p + a * (1 - p)
            p = h[i, n] * p
            history.append((a.copy(), p))
        a_final = history[-1][0]
        for n, (a_n, p_n) in enumerate(history[:-1], start=1):
            if dact_can_stop(a_n, p_n, layers - n, False):
                stops += 1
                assert np.argmax(a_n) == np.argmax(a_final), (i, n)
    assert stops > 500  # the bound fires often enough for this to be a real check


def test_regression_bound_holds_for_values_in_range():
    rng = np.random.default_rng(0)
    layers, tol, vrange = 6, 0.1, 5.0
    fired = 0
    for _ in range(3000):
        y = rng.uniform(0, vrange, layers)
        h = rng.uniform(0, 1, layers) ** 3
        a, p, hist = 0.0, 1.0, []
        for n in range(layers):
            a = y[n] * p + a * (1 - p)
            p = h[n] * p
            hist.append((a, p))
        for n, (a_n, p_n) in enumerate(hist[:-1], start=1):
            if dact_can_stop(np.array([a_n]), p_n, layers - n, True, tol, vrange):
                fired += 1
                assert abs(hist[-1][0] - a_n) <= tol + 1e-12
    assert fired > 300


def test_policy_answers_from_the_accumulator():
    pol = DACTPolicy(3)
    from jaxit.inference.policies import layer_output

    assert not pol.update(1, layer_output([0.0, 0.1], halting=0.9))
    a1 = pol.a.copy()
    np.testing.assert_allclose(a1, np.exp([0.0, 0.1]) / np.exp([0.0, 0.1]).sum())
    assert pol.p == pytest.approx(0.9)
    pol.update(2, layer_output([5.0, 0.0], halting=0.01))
    y2 = np.exp([5.0, 0.0]) / np.exp([5.0, 0.0]).sum()
    np.testing.assert_allclose(pol.a, y2 * 0.9 + a1 * 0.1)
    np.testing.assert_allclose(np.exp(pol.answer()), pol.a, rtol=1e-6)
    with pytest.raises(ValueError, match="halting units"):
        DACTPolicy(3).update(1, layer_output([0.0, 1.0]))


@pytest.fixture(scope="module")
def runner_setup():
    enc, m, params = make_model(halting_scale=30.0)
    params["heads"]["halting"]["bias"] = params["heads"]["halting"]["bias"] - 3.0
    runner = EarlyExitRunner(enc, params, 3, False, buckets=(16, 32))
    with jax.numpy_dtype_promotion("strict"):  # the tests' mode (part of jit's cache key)
        runner.warmup()
    return enc, m, params, runner


def test_runner_early_answers_equal_full_depth_answers(runner_setup):
    """The halting bound on real runs: wherever the runner stops early, its answer is the
    argmax of a_L computed by running every layer."""
    enc, _, params, runner = runner_setup
    compiled = dict(runner.trace_counts)
    batch = make_batch(n=40, max_len=30, seed=3, vary_first=True)
    full = np.asarray(dact_forward(enc, params, batch, False)["a"][-1])
    res = runner.run(batch, DACTPolicy(L))
    early = res.exit_layers < L
    assert 5 <= early.sum() < len(early), res.exit_layers  # the check is not vacuous
    np.testing.assert_array_equal(res.predictions[early], full.argmax(-1)[early])
    # and the runner makes the same decisions as the policy simulated on stored outputs
    trace = collect_layer_outputs(enc, params, [batch], False)
    exits, outs = simulate_exits(trace, DACTPolicy(L))
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_allclose(res.outputs, outs, atol=1e-5)
    # a policy that never stops reproduces a_L exactly
    late = res.exit_layers == L
    np.testing.assert_allclose(np.exp(res.outputs[late]), full[late], atol=1e-5)
    # the fused path's float32 bound on the device stopped exactly where the host's did
    assert runner.fused_disagreements == 0
    # one host round trip per layer gives the same exits and answers
    examples = [(np.asarray(batch.input_ids)[i][np.asarray(batch.attention_mask)[i] == 1],
                 None) for i in range(40)]
    plain = [runner.run_one(ids, tt, DACTPolicy(L), fused=False) for ids, tt in examples]
    np.testing.assert_array_equal(res.exit_layers, [r.exit_layer for r in plain])
    np.testing.assert_allclose(res.outputs, np.stack([r.outputs for r in plain]), atol=1e-5)
    assert runner.trace_counts == compiled  # nothing compiled after warm-up


def _tiny_dact(tmp_path, **overrides):
    c = tiny_config()
    c.method.name = "dact"
    c.method.tau = 0.05
    c.train.num_steps = 6
    for k, v in overrides.items():
        target = c
        *path, leaf = k.split(".")
        for part in path:
            target = target[part]
        target[leaf] = v
    return c


@pytest.mark.standard_promotion
def test_stage_one_freezes_exits_and_halting(tmp_path):
    from jaxit.train.loop import train
    from jaxit.train.pipeline import build_setup

    c = _tiny_dact(tmp_path, **{"method.stage1_fraction": 0.5})
    setup = build_setup(c)
    init = setup.method.init(jax.random.PRNGKey(c.train.seed + 1), setup.encoder_params)
    _, s1 = train(c, tmp_path / "run", max_steps_this_run=3, setup=setup)  # stage 1 only
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(
        lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)))
    assert same(s1.params["heads"]["halting"], init["heads"]["halting"])
    assert same(s1.params["heads"]["exits"], init["heads"]["exits"])
    assert not same(s1.params["heads"]["final"], init["heads"]["final"])
    _, s2 = train(c, tmp_path / "run", setup=setup)  # resumes into stage 2
    assert not same(s2.params["heads"]["halting"], init["heads"]["halting"])
    assert not same(s2.params["heads"]["exits"], init["heads"]["exits"])


@pytest.mark.standard_promotion
def test_init_from_a_finetuned_run_and_sweep(tmp_path):
    from jaxit.sweep import run_sweep
    from jaxit.train.init_from import load_run_params
    from jaxit.train.loop import train

    ft = tiny_config()
    ft.train.num_steps = 4
    train(ft, tmp_path / "ft")
    source = load_run_params(tmp_path / "ft")

    c = _tiny_dact(tmp_path, **{"method.stage1_fraction": 0.0, "init_from": str(tmp_path / "ft"),
                                "train.num_steps": 1, "train.learning_rate": 1e-12})
    from jaxit.train.pipeline import build_setup

    setup = build_setup(c)
    _, state = train(c, tmp_path / "dact", setup=setup)
    for a, b in zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(source["encoder"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7, rtol=0)
    np.testing.assert_allclose(state.params["heads"]["final"]["out"]["kernel"],
                               source["heads"]["final"]["out"]["kernel"], atol=1e-7, rtol=0)

    # batch_size=0: no batched-engine throughput (nothing here reads it; test_cli and
    # test_engine cover the engine), which would compile every batch size for nothing
    report = run_sweep(setup, state.params, tmp_path / "sweep", policies=("confidence",),
                       wallclock_examples=5, batch_size=0)
    assert "dact" in report["sweeps"] and "dact_full_score" in report
    # the sweep's full-model score is a_L's, as the training loop's dev evaluation (the
    # method's own predict, not the sweep's trace and accumulation) scores it
    from jaxit.train.loop import evaluate

    assert report["dact_full_score"] == pytest.approx(evaluate(setup, state.params)["accuracy"])
    assert report["full_model_score"] == report["dact_full_score"]
    assert report["operating_points"]["dact"]["wallclock"]["avg_exit_layer"] >= 1


def test_init_from_rejects_a_different_encoder():
    from jaxit.train.init_from import transfer_params

    _enc, _m, params = make_model()
    other = {"encoder": {**params["encoder"],
                         "pooler": {"kernel": np.zeros((8, 8)), "bias": np.zeros(8)}}}
    with pytest.raises(ValueError, match="shape mismatch.*pooler"):
        transfer_params(params, other)
    with pytest.raises(ValueError, match="missing"):
        transfer_params(params, {"encoder": {"embeddings": params["encoder"]["embeddings"]}})


def test_bad_tau():
    enc, _, _ = make_model()
    with pytest.raises(ValueError, match="tau"):
        make_dact(enc, 2, False, 10, tau=-1.0)


def test_truncate_layers_keeps_the_first_layers(minilm_dir):
    """BERxiT's Limit baseline: the truncated encoder is the first N layers, unchanged."""
    from jaxit.encoders import load_pretrained
    from jaxit.train.pipeline import truncate_layers

    cfg, params = load_pretrained(minilm_dir)
    small_cfg, small = truncate_layers(cfg, params, 2)
    assert small_cfg.num_layers == 2
    np.testing.assert_array_equal(small["layers"]["qkv"]["kernel"],
                                  params["layers"]["qkv"]["kernel"][:2])
    batch = make_batch(n=3, seed=1)
    full = make_encoder(cfg).forward_all(params, batch)["hidden"]
    cut = make_encoder(small_cfg).forward_all(small, batch)["hidden"]
    np.testing.assert_allclose(cut, full[:2], atol=1e-5)
    with pytest.raises(ValueError, match="truncate_layers"):
        truncate_layers(cfg, params, 7)


def test_pool_features():
    from jaxit.heads import pool_features

    h = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(pool_features(h, mask, "cls"), h[:, 0])
    np.testing.assert_allclose(pool_features(h, mask, "mean"),
                               jnp.stack([h[0, :2].mean(0), h[1, 0]]))
    np.testing.assert_allclose(pool_features(h[None], mask, "mean")[0],
                               pool_features(h, mask, "mean"))
    with pytest.raises(ValueError, match="pooling"):
        pool_features(h, mask, "max")


def test_mean_pooling_in_scan_runner_and_trace():
    """pooling="mean": the training scan, the batch-1 runner and the trace agree, and the
    heads really read the token mean (a different answer from [CLS])."""
    enc, _, params = make_model()
    params["heads"]["halting"]["bias"] = params["heads"]["halting"]["bias"] - 3.0
    batch = make_batch(n=24, max_len=30, seed=5)
    scan = dact_forward(enc, params, batch, False, pooling="mean")
    trace = collect_layer_outputs(enc, params, [batch], False, pooling="mean")
    np.testing.assert_allclose(trace.outputs, scan["outputs"], atol=1e-5)
    np.testing.assert_allclose(trace.halting, scan["h"], atol=1e-6)
    cls_trace = collect_layer_outputs(enc, params, [batch], False)
    assert np.abs(cls_trace.outputs - trace.outputs).max() > 1e-2
    runner = EarlyExitRunner(enc, params, 3, False, buckets=(16, 32), pooling="mean")
    res = runner.run(batch, DACTPolicy(L))
    exits, outs = simulate_exits(trace, DACTPolicy(L))
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_allclose(res.outputs, outs, atol=1e-5)
    static = runner.run_static(batch)
    np.testing.assert_allclose(static.outputs, trace.outputs[-1], atol=1e-4)


def test_sweep_patience_on_regression_uses_a_value_delta():
    from jaxit.sweep import REGRESSION_PATIENCE_DELTA, policy_for

    pol = policy_for("patience", 2, 6, is_regression=True)
    assert pol.settings["regression_threshold"] == REGRESSION_PATIENCE_DELTA
    assert policy_for("dact", 0.2, 6).tolerance == 0.2


def test_regression_runner_fused_bound_equals_round_trip():
    """Regression DACT through the runner: the device's float32 rule p*d*range <= tol
    stops where the host's does, and the fused run equals one round trip per layer."""
    enc, _, params = make_model(num_outputs=1, regression=True, seed=2)
    params["heads"]["halting"]["bias"] = params["heads"]["halting"]["bias"] + 3.0
    runner = EarlyExitRunner(enc, params, 1, True, buckets=(16,))
    batch = make_batch(n=30, max_len=16, seed=5, regression=True, vary_first=True)
    trace = collect_layer_outputs(enc, params, [batch], True)
    policy = DACTPolicy(L, tolerance=0.4, value_range=5.0)
    exits, outs = simulate_exits(trace, policy)
    assert 1 < len(set(exits.tolist())), exits  # the check is not vacuous
    res = runner.run(batch, policy)
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_allclose(res.outputs, outs, atol=1e-5)
    assert runner.fused_disagreements == 0
    ids = np.asarray(batch.input_ids)
    mask = np.asarray(batch.attention_mask) == 1
    plain = [runner.run_one(ids[i][mask[i]], None, policy, fused=False) for i in range(30)]
    np.testing.assert_array_equal(exits, [r.exit_layer for r in plain])
    # |a_n - a_L| <= tolerance wherever it stopped early
    full = np.asarray(dact_forward(enc, params, batch, True)["a"][-1])[:, 0]
    early = res.exit_layers < L
    inside = (np.abs(trace.outputs[..., 0]) <= 5.0).all(0)  # the bound assumes the range
    assert (early & inside).sum() >= 5
    assert (np.abs(res.outputs[early & inside, 0] - full[early & inside]) <= 0.4 + 1e-5).all()
