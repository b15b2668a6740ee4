"""The batch-1 adaptive runner: exits, outputs, FLOPs and no recompilation."""

import jax
import numpy as np
import pytest

from jaxit import flops
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.inference import (
    ConfidencePolicy,
    EarlyExitRunner,
    FixedLayerPolicy,
    LTEPolicy,
    NeverExit,
    PatiencePolicy,
)
from jaxit.inference.evaluate_exits import collect_layer_outputs, simulate_exits
from jaxit.methods.early_exit import make_early_exit
from tests.rows import random_batch

L = 4
BUCKETS = (16, 32)


def make_model(regression=False, lte=False, seed=0):
    cfg = EncoderConfig("bert", 100, 32, L, 2, 64, max_position_embeddings=64)
    enc = make_encoder(cfg)
    c = 1 if regression else 3
    m = make_early_exit(enc, c, regression, 10, "joint", lte=lte)
    params = m.init(jax.random.PRNGKey(seed), init_params(cfg, jax.random.PRNGKey(seed)))
    # spread the untrained heads' outputs so that exits happen at different layers
    scale = lambda t: jax.tree.map(lambda x: 30.0 * x, t)
    params["heads"]["exits"]["out"] = scale(params["heads"]["exits"]["out"])
    params["heads"]["final"]["out"] = scale(params["heads"]["final"]["out"])
    if lte:
        params["heads"]["lte"] = scale(params["heads"]["lte"])
    return enc, m, params


def make_data(n, pairs=False, regression=False, seed=0, max_len=32):
    return random_batch(n, max_len, seed=seed, regression=regression, pairs=pairs)


@pytest.fixture(scope="module")
def cls_setup():
    enc, m, params = make_model()
    runner = EarlyExitRunner(enc, params, 3, False, buckets=BUCKETS)
    runner.warmup()
    data = make_data(24)
    trace = collect_layer_outputs(enc, params, [data], False)
    return enc, m, params, runner, data, trace


def midpoint_threshold(values, q=0.5):
    """A threshold between two distinct observed values (no example sits on it)."""
    v = np.unique(np.asarray(values).ravel())
    i = int(q * (len(v) - 1))
    return float((v[i] + v[i + 1]) / 2)


def test_runner_output_equals_forward_at_exit_layer(cls_setup):
    enc, _m, _params, runner, data, trace = cls_setup
    for layer in range(1, L + 1):
        res = runner.run(data, FixedLayerPolicy(layer))
        assert (res.exit_layers == layer).all()
        np.testing.assert_allclose(res.outputs, trace.outputs[layer - 1], atol=1e-4, rtol=1e-4)
    # a policy whose exits vary: runner decisions == decisions simulated from the forward
    th = midpoint_threshold(trace.probs[0].max(-1), 0.5)
    res = runner.run(data, ConfidencePolicy(th))
    exits, outs = simulate_exits(trace, ConfidencePolicy(th))
    assert len(set(exits.tolist())) > 1, "the test needs exits at several layers"
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_allclose(res.outputs, outs, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(res.predictions, outs.argmax(-1))
    # FLOPs: real tokens only, heads at every layer run
    for k, e, f in zip(res.num_tokens, res.exit_layers, res.flops):
        assert f == flops.early_exit_flops(enc.config, int(k), int(e), 3)
    np.testing.assert_array_equal(res.num_tokens, np.asarray(data.attention_mask).sum(1))


def test_threshold_that_never_fires_reproduces_full_model(cls_setup):
    _enc, m, params, runner, data, _trace = cls_setup
    full = np.asarray(jax.jit(m.predict)(params, data))
    for policy in (ConfidencePolicy(1.01), NeverExit(), PatiencePolicy(0)):
        res = runner.run(data, policy)
        assert (res.exit_layers == L).all()
        np.testing.assert_allclose(res.outputs, full, atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(res.predictions, full.argmax(-1))
    static = runner.run_static(data)
    np.testing.assert_allclose(static.outputs, full, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(static.flops, runner.full_flops(static.num_tokens))


def test_no_recompilation_after_warmup(cls_setup):
    _enc, _m, _params, runner, _data, _trace = cls_setup
    # warm up under this test's jax config (dtype promotion mode is part of jit's cache key)
    runner.warmup()
    before = dict(runner.trace_counts)
    runner.warmup()
    assert runner.trace_counts == before
    many = make_data(40, pairs=True, seed=1)  # lengths 3..32: every bucket, many shapes
    runner.run(many, ConfidencePolicy(0.6))
    runner.run(many, PatiencePolicy(1))
    runner.run_static(many)
    assert runner.trace_counts == before
    assert runner.bucket(3) == 16 and runner.bucket(16) == 16 and runner.bucket(17) == 32
    with pytest.raises(ValueError, match="largest length bucket"):
        runner.run_one(np.ones(33, np.int32), None, NeverExit())


def test_regression_exits_with_lte_and_patience():
    """STS-B-shaped data: sentence pairs (token types), float labels in [0, 5]."""
    enc, _m, params = make_model(regression=True, lte=True, seed=1)
    data = make_data(20, pairs=True, regression=True, seed=2)
    runner = EarlyExitRunner(enc, params, 1, True, buckets=(32,))
    trace = collect_layer_outputs(enc, params, [data], True)
    assert trace.probs is None and trace.lte.shape == (L, 20)
    th = midpoint_threshold(trace.lte[0], 0.5)
    res = runner.run(data, LTEPolicy(th))
    exits, outs = simulate_exits(trace, LTEPolicy(th))
    assert len(set(exits.tolist())) > 1
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_allclose(res.outputs, outs, atol=1e-4, rtol=1e-4)
    assert res.predictions.dtype.kind == "f" and res.outputs.shape == (20, 1)
    # the LTE unit's FLOPs are counted
    assert res.flops[0] == flops.early_exit_flops(enc.config, int(res.num_tokens[0]),
                                                  int(res.exit_layers[0]), 1, lte=True)
    deltas = np.abs(np.diff(trace.outputs[..., 0], axis=0))
    th = midpoint_threshold(deltas[0], 0.5)
    res = runner.run(data, PatiencePolicy(1, regression_threshold=th))
    exits, outs = simulate_exits(trace, PatiencePolicy(1, regression_threshold=th))
    assert len(set(exits.tolist())) > 1 and exits.min() >= 2
    np.testing.assert_array_equal(res.exit_layers, exits)
    np.testing.assert_allclose(res.outputs, outs, atol=1e-4, rtol=1e-4)


class _GateOverride(ConfidencePolicy):
    """Host rule = confidence; device gate forced to a different rule (layer >= k)."""

    def __init__(self, threshold, gate_layer):
        super().__init__(threshold)
        self.gate_layer = gate_layer

    def device_gate(self):
        from jaxit.inference.policies import GATE_GE, GATE_LAYER

        return (GATE_LAYER, float(self.gate_layer), GATE_GE)


def test_pipelined_and_fused_equal_round_trip_even_when_device_gate_disagrees(cls_setup):
    _enc, _m, _params, runner, data, trace = cls_setup
    th = midpoint_threshold(trace.probs[0].max(-1), 0.5)
    ref = runner.run(data, ConfidencePolicy(th))
    examples = [(np.asarray(data.input_ids)[i][np.asarray(data.attention_mask)[i] == 1], None)
                for i in range(24)]
    plain = [runner.run_one(ids, tt, ConfidencePolicy(th), pipeline=False, fused=False)
             for ids, tt in examples]
    np.testing.assert_array_equal(ref.exit_layers, [r.exit_layer for r in plain])
    # the fused run's device exits agreed with the host's policy on every example
    assert runner.fused_disagreements == 0
    # device gate stops at layer 1 while the host goes on: every later layer is re-run
    # device gate never stops while the host exits: the speculative layers are wasted
    for fused in (False, True):
        for gate_layer in (1, 10**6):
            before = runner.fused_disagreements
            res = [runner.run_one(ids, tt, _GateOverride(th, gate_layer), fused=fused)
                   for ids, tt in examples]
            np.testing.assert_array_equal(ref.exit_layers, [r.exit_layer for r in res])
            np.testing.assert_allclose(ref.outputs, np.stack([r.outputs for r in res]),
                                       atol=1e-5)
            if fused:  # every example whose host exit differs from the gate's is counted
                differ = int((ref.exit_layers != min(gate_layer, L)).sum())
                assert runner.fused_disagreements - before == differ > 0


def test_empty_input_is_a_clear_error(cls_setup):
    runner = cls_setup[3]
    with pytest.raises(ValueError, match="empty input"):
        runner.run_one(np.zeros((0,), np.int32), None, ConfidencePolicy(0.9))


def test_load_runner_examples_reads_sst2_dev(minilm_dir):
    from jaxit.encoders import load_tokenizer
    from jaxit.inference import load_runner_examples

    examples, labels = load_runner_examples(load_tokenizer(minilm_dir), "sst2", "dev", limit=5)
    assert len(examples) == 5 and labels.tolist() == [1, 0, 1, 1, 0]
    for ids, tt in examples:  # [CLS] ... [SEP], one segment
        assert ids[0] == 101 and ids[-1] == 102 and (tt == 0).all() and len(ids) == len(tt)
