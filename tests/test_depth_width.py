"""Depth and width in one model (`jaxit.methods.depth_width`) on the real MiniLM-L6 and SST-2
dev sentences: with η = 0 it is its early-exit half, with an exit rule that never fires its
AdapLeR half; the batch-1 runner and the batched engine agree on exits, kept tokens,
outputs and FLOPs; the FLOPs account by hand; training on the tiny task (both recipes)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit import flops
from jaxit.encoders import load_pretrained, load_tokenizer, make_encoder
from jaxit.encoders.config import EncoderConfig
from jaxit.inference import ConfidencePolicy, EarlyExitRunner, NeverExit, load_runner_examples
from jaxit.inference.buckets import batch_from_examples
from jaxit.inference.engine import BatchedEngine
from jaxit.inference.engine_results import example_flops
from jaxit.inference.token_drop import TokenDropRunner
from jaxit.methods.adapler import EVAL_LAMBDA, adapler_forward, tokens_per_layer
from jaxit.methods.depth_width import depth_width_forward, make_depth_width
from jaxit.methods.early_exit import all_layer_outputs

BUCKETS = (16, 32, 64)
POOLING = "mean"


def _scaled(tree, s):
    return jax.tree.map(lambda x: s * x, tree)


@pytest.fixture(scope="module")
def model(minilm_dir, data_dir):
    """MiniLM + random exit heads (spread so exits happen at every layer), an LTE module,
    random CPs (peaked enough to drop tokens) and η = 1; 48 SST-2 dev sentences."""
    cfg, enc_params = load_pretrained(minilm_dir)
    enc = make_encoder(cfg)
    examples, _ = load_runner_examples(load_tokenizer(minilm_dir), "sst2", "dev",
                                            max_length=64, data_dir=data_dir)
    m = make_depth_width(enc, 2, False, 10, 10, lte=True, pooling=POOLING)
    params = m.init(jax.random.PRNGKey(0), enc_params)
    h = params["heads"]
    h["exits"]["out"] = _scaled(h["exits"]["out"], 40.0)
    h["final"]["out"] = _scaled(h["final"]["out"], 40.0)
    h["lte"] = _scaled(h["lte"], 40.0)
    h["cp"] = _scaled(h["cp"], 15.0)
    h["eta"] = jnp.full((cfg.num_layers,), 1.0, jnp.float32)
    params = jax.tree.map(np.asarray, params)
    return cfg, enc, params, examples[:48]


def _halves(params):
    heads = params["heads"]
    exits = {"encoder": params["encoder"],
             "heads": {k: heads[k] for k in ("exits", "final", "lte")}}
    adapler = {"encoder": params["encoder"],
               "heads": {k: heads[k] for k in ("final", "cp", "eta", "theta")}}
    return exits, adapler


def _batch(examples, pad_id, t=64):
    return batch_from_examples(examples, pad_id, t)


def _threshold(enc, params, sub):
    """A confidence threshold that sends examples out at several layers (the midpoint of the
    widest gap among the middle half of the max-probabilities: none sits on it)."""
    out = depth_width_forward(enc, params, _batch(sub, enc.config.pad_token_id), EVAL_LAMBDA,
                              pooling=POOLING)
    v = np.unique(np.asarray(jax.nn.softmax(out["outputs"], -1)).max(-1).ravel())
    v = v[len(v) // 4: 3 * len(v) // 4]
    i = int(np.argmax(np.diff(v)))
    return float((v[i] + v[i + 1]) / 2)


def test_eta_zero_is_its_early_exit_half(model):
    cfg, enc, params, sub = model
    exits, _ = _halves(params)
    batch = _batch(sub, cfg.pad_token_id)
    zero = {**params, "heads": {**params["heads"], "eta": np.zeros(cfg.num_layers, np.float32)}}
    dw = depth_width_forward(enc, zero, batch, EVAL_LAMBDA, pooling=POOLING)
    ee = all_layer_outputs(enc, exits, batch, pooling=POOLING)
    np.testing.assert_allclose(dw["outputs"], ee.outputs, atol=2e-4, rtol=2e-4)
    np.testing.assert_allclose(dw["lte"], ee.lte, atol=1e-5)
    np.testing.assert_array_equal(tokens_per_layer(dw, batch.attention_mask),
                                  np.repeat(np.asarray(batch.attention_mask).sum(1)[:, None],
                                            cfg.num_layers, 1))
    policy = ConfidencePolicy(_threshold(enc, params, sub))
    ref = EarlyExitRunner(enc, exits, 2, False, buckets=BUCKETS, pooling=POOLING).run(sub, policy)
    res = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                        batch_sizes=(4, 8), devices=jax.local_devices()[:1], eta=0.0
                        ).run(sub, policy)
    assert len(set(ref.exit_layers.tolist())) >= 3
    np.testing.assert_array_equal(res.exit_layers, ref.exit_layers)
    np.testing.assert_allclose(res.outputs, ref.outputs, atol=2e-4, rtol=2e-4)


def test_never_exit_is_its_adapler_half(model):
    cfg, enc, params, sub = model
    _, adapler = _halves(params)
    batch = _batch(sub, cfg.pad_token_id)
    dw = depth_width_forward(enc, params, batch, EVAL_LAMBDA, pooling=POOLING)
    ad = adapler_forward(enc, adapler, batch, EVAL_LAMBDA, pooling=POOLING)
    np.testing.assert_allclose(dw["logits"], ad["logits"], atol=1e-5)
    np.testing.assert_array_equal(dw["masks"], ad["masks"])
    ref = TokenDropRunner(enc, adapler, 2, buckets=BUCKETS, pooling=POOLING).run(sub)
    assert ref.tokens_per_layer.mean() < 0.8 * np.mean([t.size for t, _ in sub])  # drops
    both = TokenDropRunner(enc, params, 2, buckets=BUCKETS, pooling=POOLING)
    never = both.run(sub, policy=NeverExit())
    np.testing.assert_array_equal(never.tokens_per_layer, ref.tokens_per_layer)
    np.testing.assert_allclose(never.outputs, ref.outputs, atol=2e-4, rtol=2e-4)
    engine = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                           batch_sizes=(8,), devices=jax.local_devices()[:1])
    res = engine.run(sub, NeverExit())
    np.testing.assert_array_equal(res.tokens_per_layer, ref.tokens_per_layer)
    np.testing.assert_allclose(res.outputs, ref.outputs, atol=2e-4, rtol=2e-4)
    # the hard-cut training forward keeps the same tokens as real dropping
    np.testing.assert_array_equal(tokens_per_layer(dw, batch.attention_mask),
                                  ref.tokens_per_layer)


def test_batched_engine_equals_the_batch1_runner(model):
    cfg, enc, params, sub = model
    policy = ConfidencePolicy(_threshold(enc, params, sub))
    ref = TokenDropRunner(enc, params, 2, buckets=BUCKETS, pooling=POOLING).run(sub, policy=policy)
    assert len(set(ref.exit_layers.tolist())) >= 3
    assert (ref.tokens_per_layer[:, 0] < [t.size for t, _ in sub]).any()
    for sizes in ((4, 8), (1,)):
        res = BatchedEngine(enc, params, 2, False, pooling=POOLING, buckets=BUCKETS,
                            batch_sizes=sizes, devices=jax.local_devices()[:1]).run(sub, policy)
        np.testing.assert_array_equal(res.exit_layers, ref.exit_layers)
        np.testing.assert_array_equal(res.tokens_per_layer, ref.tokens_per_layer)
        np.testing.assert_allclose(res.outputs, ref.outputs, atol=2e-4, rtol=2e-4)
        np.testing.assert_array_equal(res.flops, ref.flops)
    # the sweep's simulation (one soft-mask forward at λ = 1e20, exits replayed) agrees
    batch = _batch(sub, cfg.pad_token_id)
    out = depth_width_forward(enc, params, batch, EVAL_LAMBDA, pooling=POOLING)
    tpl = tokens_per_layer(out, batch.attention_mask)
    for i, e in enumerate(ref.exit_layers):
        np.testing.assert_array_equal(tpl[i, :e], ref.tokens_per_layer[i, :e])
        np.testing.assert_allclose(out["outputs"][e - 1, i], ref.outputs[i], atol=2e-4)


def test_flops_by_hand():
    """D 8, FFN 16, a 5-token input keeping 4 then 2 tokens, 2 classes, CP width 32."""
    cfg = EncoderConfig(model_type="bert", vocab_size=10, hidden_size=8, num_layers=2, num_heads=2,
                        intermediate_size=16)
    # layer on 4 tokens: 6·4·64 + 4·16·8 + 2·4·64 + 4·4·8·16 = 1536 + 512 + 512 + 2048
    # on 2: 768 + 128 + 256 + 1024; head 2·64 + 2·8·2 = 160; CP on n: n (2·8·32 + 2·32)
    assert flops.layer_flops(cfg, 4) == 4608 and flops.layer_flops(cfg, 2) == 2176
    # exit after layer 1: layer 1 on 4 tokens, its head, CP 0 on the 5 embedded tokens
    assert example_flops(cfg, 5, [4], 2, 1, False, 32) == 4608 + 160 + 5 * 576
    # never exit: both layers, both heads, CP 0 on 5 and CP 1 on the 4 that layer 1 ran on
    assert example_flops(cfg, 5, [4, 2], 2, 2, False, 32) == (4608 + 2176 + 2 * 160
                                                              + 5 * 576 + 4 * 576)
    # with LTE a D->1 unit per head run
    assert example_flops(cfg, 5, [4], 2, 1, True, 32) == 4608 + 160 + 16 + 5 * 576


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    """The tiny task: a fine-tuned multi-exit run (3 best checkpoints) and its saliencies."""
    from jaxit.configs import tiny_config
    from jaxit.interpret.saliency import extract_saliencies
    from jaxit.train.loop import train

    root = tmp_path_factory.mktemp("depth_width")
    c = tiny_config()
    c.method.name = "early_exit"
    c.train.num_steps = 6
    c.eval_every = 2
    c.save_every = 100
    c.keep_checkpoints = 1
    c.keep_best = 3
    train(c, root / "ft")
    extract_saliencies(root / "ft", root / "sal", ("train",), top_k=3, progress=False)
    return root


def _dw_config(root, source, **method):
    from jaxit.configs import tiny_config

    c = tiny_config()
    c.method.name = "depth_width"
    c.method.saliency_dir = str(root / "sal")
    c.init_from = str(root / source)
    c.train.num_steps = 4
    c.eval_every = 0
    c.save_every = 100
    for k, v in method.items():
        c.method[k] = v
    return c


@pytest.mark.standard_promotion  # optax's Adam bias correction in AdapLeR's η/θ optimizer
def test_joint_recipe_trains_everything_from_a_multi_exit_run(phases):
    from jaxit.train.init_from import load_run_params
    from jaxit.train.loop import train

    source = load_run_params(phases / "ft")
    result, state = train(_dw_config(phases, "ft", strategy="joint"), phases / "joint")
    assert np.isfinite(result["dev"]["accuracy"])
    heads = state.params["heads"]
    assert set(heads) == {"exits", "final", "cp", "eta", "theta"}
    moved = lambda a, b: not np.allclose(np.asarray(a), np.asarray(b))
    assert moved(heads["exits"]["out"]["kernel"], source["heads"]["exits"]["out"]["kernel"])
    assert any(moved(a, b) for a, b in zip(jax.tree.leaves(state.params["encoder"]),
                                           jax.tree.leaves(source["encoder"])))
    assert moved(heads["eta"], np.full_like(np.asarray(heads["eta"]), 0.25))
    rows = [r for r in _metrics(phases / "joint") if "train/loss_cp" in r]
    assert rows
    for r in rows:  # main = E (joint: Σ_l L_l) + γ L_CP; speed = L_CE(final) + φ L_LENGTH
        get = lambda k, r=r: r[f"train/{k}"]
        assert get("loss") == pytest.approx(get("loss_main") + 5e-3 * get("loss_cp"), rel=1e-5)
        assert get("loss_main") == pytest.approx(2 * get("loss_exits_mean"), rel=1e-5)
        assert get("loss_speed") == pytest.approx(get("loss_ce") + 5e-4 * get("loss_length"),
                                                  rel=1e-5)


@pytest.mark.standard_promotion
def test_two_stage_recipe_trains_only_the_exits_on_a_frozen_adapler_run(phases):
    from jaxit.train.init_from import load_run_params
    from jaxit.train.loop import train

    c = _dw_config(phases, "ft")
    c.method.name = "adapler"
    c.save_every, c.keep_checkpoints = 2, 2
    _, ad = train(c, phases / "adapler")
    c = _dw_config(phases, "adapler", strategy="two_stage", stage1_fraction=0.0, lte=True)
    c.init_from_checkpoint = "2"  # not the last: a chosen AdapLeR checkpoint
    _, state = train(c, phases / "exits_on_adapler")
    new, old = state.params, load_run_params(phases / "adapler", 2)
    assert not np.allclose(np.asarray(old["heads"]["eta"]), np.asarray(ad.params["heads"]["eta"]))
    for name in ("final", "cp", "eta", "theta"):
        for a, b in zip(jax.tree.leaves(new["heads"][name]), jax.tree.leaves(old["heads"][name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(new["encoder"]), jax.tree.leaves(old["encoder"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    from jaxit.train.pipeline import build_setup

    setup = build_setup(c)  # the exits and LTE start from the method's init and must move
    init = setup.method.init(jax.random.PRNGKey(c.train.seed + 1), setup.encoder_params)
    for name in ("exits", "lte"):
        moved = [not np.allclose(np.asarray(a), np.asarray(b)) for a, b in
                 zip(jax.tree.leaves(new["heads"][name]), jax.tree.leaves(init["heads"][name]))]
        assert any(moved), f"{name} did not train"


def test_bad_strategy_is_one_line(phases):
    from jaxit.errors import ConfigError
    from jaxit.train.pipeline import build_setup

    with pytest.raises(ConfigError, match="depth_width takes one of"):
        build_setup(_dw_config(phases, "ft", strategy="elbert"))


def _metrics(workdir):
    import json

    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.standard_promotion
def test_sweep_is_two_dimensional_and_the_engine_agrees(phases):
    """`jaxit sweep` on a depth + width run: threshold × η scale, the Pareto front, both
    single-axis curves; each operating point, run through the batched engine, has the FLOPs
    speed-up and score the sweep's simulation gave it."""
    from jaxit.configs import config_from_run
    from jaxit.sweep import sweep_checkpoint
    from jaxit.train.loop import train

    run = phases / "sweep_run"
    c = _dw_config(phases, "ft", strategy="alternating")
    c.train.num_steps = 8
    train(c, run)
    report = sweep_checkpoint(config_from_run(run), run, policies=["confidence"],
                              eta_scales=[0.0, 1.0, 4.0, 16.0], batch_size=8)
    assert (run / "sweep" / "depth_width.json").is_file()
    assert (run / "sweep" / "tradeoff.png").stat().st_size > 5000
    pts = report["points"]
    from jaxit.depth_width_sweep import KEPT_GAP, MAX_EXTRA_SCALES

    scales = sorted({p["eta_scale"] for p in pts})
    assert {0.0, 1.0, 4.0, 16.0} <= set(scales) and report["eta_scales"] == scales
    assert len(scales) <= 4 + MAX_EXTRA_SCALES
    kept = {p["eta_scale"]: p["kept_fraction"] for p in report["tokens_only"]}
    if len(scales) < 4 + MAX_EXTRA_SCALES:  # refinement stopped: the curve has no hole
        assert max(abs(kept[b] - kept[a]) for a, b in itertools.pairwise(scales)) <= KEPT_GAP
    full = [p for p in pts if p["eta_scale"] == 0.0 and p["threshold"] is None]
    assert len(full) == 1 and full[0]["kept_fraction"] == 1.0
    assert full[0]["avg_exit_layer"] == 2.0 and report["full_model_score"] == full[0]["score"]
    assert min(p["kept_fraction"] for p in report["tokens_only"]) < 0.9  # η scales drop tokens
    assert min(p["avg_exit_layer"] for p in report["exits_only"]) == 1.0  # thresholds span
    front = report["pareto"]
    speed = [p["flops_speedup"] for p in front]
    assert speed == sorted(speed)
    assert all(a["score"] > b["score"] for a, b in itertools.pairwise(front))
    for p in pts:  # nothing off the front beats it on both axes
        assert not any(q["flops_speedup"] > p["flops_speedup"] and q["score"] > p["score"]
                       for q in pts) or p not in front
    for name, point in report["operating_points"].items():
        assert point["score"] >= report["full_model_score"] - 0.01, name
        measured = point["batched"]
        assert measured["flops_speedup"] == pytest.approx(point["flops_speedup"], rel=1e-9)
        assert measured["accuracy"] == pytest.approx(point["score"])
        assert measured["avg_exit_layer"] == pytest.approx(point["avg_exit_layer"])
    # `jaxit predict` on the run starts at the sweep's fastest point: its rule and η scale
    from jaxit.inference.predictor import load_predictor

    best = max(report["operating_points"].values(), key=lambda p: p["flops_speedup"])
    pred = load_predictor(run, batch_size=8)
    assert pred.eta_scale == best["eta_scale"]
    if best["threshold"] is None:
        assert type(pred.policy).__name__ == "NeverExit"
    else:
        assert pred.policy.settings["threshold"] == pytest.approx(best["threshold"])
