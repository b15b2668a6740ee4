"""Exit evaluation: layer-wise scores, threshold sweeps, wall clock, JSON + PNG report."""

import json

import jax
import numpy as np
import pytest

from jaxit import flops
from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.inference import ConfidencePolicy, EarlyExitRunner, FixedLayerPolicy
from jaxit.inference.buckets import examples_from_batch
from jaxit.inference.evaluate_exits import (
    accuracy,
    collect_layer_outputs,
    evaluate_policy,
    exit_report,
    layerwise_scores,
    mcc,
    measure_wallclock,
    pearson,
    spearman,
    threshold_sweep,
)
from jaxit.methods.early_exit import make_early_exit

L = 3


@pytest.fixture(scope="module")
def setup():
    cfg = EncoderConfig("bert", 60, 16, L, 2, 32, max_position_embeddings=32)
    enc = make_encoder(cfg)
    m = make_early_exit(enc, 2, False, 10, "joint")
    params = m.init(jax.random.PRNGKey(0), init_params(cfg, jax.random.PRNGKey(0)))
    params["heads"]["exits"]["out"] = jax.tree.map(lambda x: 40 * x, params["heads"]["exits"]["out"])
    rng = np.random.default_rng(0)
    n, t = 30, 16
    lens = rng.integers(2, t + 1, n)
    mask = (np.arange(t)[None] < lens[:, None]).astype(np.int32)
    ids = rng.integers(1, 60, (n, t)) * mask
    labels = rng.integers(0, 2, n)
    batches = [batch_from_ids(ids[:16], mask[:16], labels=labels[:16]),
               batch_from_ids(np.pad(ids[16:], ((0, 2), (0, 0))),  # two padding rows
                              np.pad(mask[16:], ((0, 2), (0, 0))),
                              labels=np.pad(labels[16:], (0, 2)))]
    trace = collect_layer_outputs(enc, params, batches, False)
    return cfg, enc, m, params, batches, trace, labels


def test_collect_and_layerwise(setup):
    cfg, _enc, _m, _params, _batches, trace, labels = setup
    assert trace.outputs.shape == (L, 30, 2) and trace.lte is None
    np.testing.assert_array_equal(trace.labels, labels)
    scores = layerwise_scores(trace)
    assert len(scores) == L
    for l in range(1, L + 1):
        assert scores[l - 1] == accuracy(trace.outputs[l - 1].argmax(-1), labels)
    # forced exit at layer l = FixedLayerPolicy(l)
    for l in range(1, L + 1):
        r = evaluate_policy(cfg, trace, FixedLayerPolicy(l))
        assert r["score"] == scores[l - 1] and r["avg_exit_layer"] == l


def test_sweep_spans_exit_at_once_to_full_depth(setup):
    cfg, _enc, _m, _params, _batches, trace, _labels = setup
    pts = threshold_sweep(cfg, trace, ConfidencePolicy, [0.0, 0.7, 0.9, 1.01])
    assert pts[0]["avg_exit_layer"] == 1.0 and pts[-1]["avg_exit_layer"] == L
    assert [p["threshold"] for p in pts] == [0.0, 0.7, 0.9, 1.01]
    layers = [p["avg_exit_layer"] for p in pts]
    assert layers == sorted(layers)
    assert pts[-1]["score"] == layerwise_scores(trace)[-1]
    assert sum(pts[1]["exit_histogram"]) == 30
    # never exiting costs the heads of every layer: a little slower than the static model
    full = sum(flops.full_model_flops(cfg, int(k), 2) for k in trace.num_tokens)
    adaptive = sum(flops.early_exit_flops(cfg, int(k), L, 2) for k in trace.num_tokens)
    assert pts[-1]["flops_speedup"] == pytest.approx(full / adaptive)
    assert pts[-1]["flops_speedup"] < 1 < pts[0]["flops_speedup"]


def test_report_json_png_and_wallclock(setup, tmp_path):
    cfg, enc, _m, params, batches, trace, labels = setup
    runner = EarlyExitRunner(enc, params, 2, False, buckets=(16,))
    runner.warmup()
    examples = [e for b in batches for e in examples_from_batch(b)]
    wall = measure_wallclock(runner, examples[:6], {"c0.9": ConfidencePolicy(0.9)},
                             labels=labels[:6])
    for k in ("wall_speedup", "flops_speedup", "wall_over_flops", "avg_exit_layer", "accuracy"):
        assert k in wall["c0.9"]
    report = exit_report(cfg, trace, {"confidence": (ConfidencePolicy, [0.6, 0.9, 1.01])},
                         tmp_path, title="tiny", wallclock=wall)
    saved = json.loads((tmp_path / "exits.json").read_text())
    assert saved["layerwise"] == report["layerwise"] and len(saved["sweeps"]["confidence"]) == 3
    png = (tmp_path / "tradeoff.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_metrics():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0, 1, 0, 0, 1])
    assert accuracy(p, y) == 0.8
    assert mcc(y, y) == pytest.approx(1.0)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert spearman(x, x ** 3) == pytest.approx(1.0)
