"""The batch-1 runner's device gate for entropy, normalised entropy and LTE: the fused run
(all layers in one dispatch, stopping on the device) and the pipelined path stop exactly
where the host's policy does (zero disagreements, as tests/test_runner.py and
tests/test_dact.py assert for confidence and DACT); and ELBERT's stateful rule (no device
gate: one round trip per layer) through the runner equals the rule replayed on the host."""

import jax
import numpy as np
import pytest

from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.inference import EarlyExitRunner, LTEPolicy
from jaxit.inference.evaluate_exits import collect_layer_outputs, simulate_exits
from jaxit.inference.policies import (
    ELBERTPolicy,
    EntropyPolicy,
    NormalizedEntropyPolicy,
    device_gate,
    elbert_exit,
    normalized_entropy,
)
from jaxit.methods.early_exit import make_early_exit
from tests.rows import random_batch

L = 4
C = 3
N = 32
BUCKETS = (16, 32)


def make_model(seed=0):
    cfg = EncoderConfig("bert", 100, 32, L, 2, 64, max_position_embeddings=64)
    enc = make_encoder(cfg)
    m = make_early_exit(enc, C, False, 10, "joint", lte=True)
    params = m.init(jax.random.PRNGKey(seed), init_params(cfg, jax.random.PRNGKey(seed)))
    # spread the untrained heads' outputs so that exits happen at different layers
    scale = lambda t: jax.tree.map(lambda x: 30.0 * x, t)
    for name in ("exits", "final"):
        params["heads"][name]["out"] = scale(params["heads"][name]["out"])
    params["heads"]["lte"] = scale(params["heads"]["lte"])
    # and sharpen attention and the word embeddings, so that examples' [CLS] states differ
    enc_p = params["encoder"]
    enc_p["layers"]["qkv"]["kernel"] = 30.0 * enc_p["layers"]["qkv"]["kernel"]
    enc_p["embeddings"]["word"] = 30.0 * enc_p["embeddings"]["word"]
    return enc, params


def make_data(n, seed=0, max_len=32):
    return random_batch(n, max_len, seed=seed, num_classes=C)


@pytest.fixture(scope="module")
def setup():
    enc, params = make_model()
    runner = EarlyExitRunner(enc, params, C, False, buckets=BUCKETS)
    with jax.numpy_dtype_promotion("strict"):  # the tests' mode (part of jit's cache key)
        runner.warmup(static=False)
    data = make_data(N)
    trace = collect_layer_outputs(enc, params, [data], False)
    examples = [(np.asarray(data.input_ids)[i][np.asarray(data.attention_mask)[i] == 1], None)
                for i in range(N)]
    return runner, data, trace, examples


def between(values, q, width=0.1):
    """A threshold in the widest gap between observed values near their q-quantile, so
    that no example sits within float32 rounding (or bucket padding) of it."""
    v = np.unique(np.asarray(values, np.float64).ravel())
    lo = max(int((q - width) * (len(v) - 1)), 0)
    hi = min(int((q + width) * (len(v) - 1)), len(v) - 1)
    i = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
    return float((v[i] + v[i + 1]) / 2)


def _entropy(probs):
    p = np.asarray(probs, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _scores(trace, kind):
    """[L, N] the gate's score at every layer, computed on the host from the trace."""
    if kind == "entropy":
        return _entropy(trace.probs)
    if kind == "normalized_entropy":
        return _entropy(trace.probs) / np.log(C)
    return np.asarray(trace.lte, np.float64)


POLICIES = {"entropy": EntropyPolicy, "normalized_entropy": NormalizedEntropyPolicy,
            "lte": LTEPolicy}


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_fused_device_gate_agrees_with_the_host_rule(setup, kind):
    runner, data, trace, examples = setup
    compiled = dict(runner.trace_counts)
    scores = _scores(trace, kind)
    varied = 0
    for q in (0.3, 0.5, 0.7):
        policy = POLICIES[kind](between(scores, q))
        gate = device_gate(policy)
        assert gate is not None and gate[0] != 4  # a score gate, not the layer gate
        exits, outs = simulate_exits(trace, policy)
        varied += len(set(exits.tolist())) > 1
        before = runner.fused_disagreements
        res = runner.run(data, policy)
        np.testing.assert_array_equal(res.exit_layers, exits)
        np.testing.assert_allclose(res.outputs, outs, atol=1e-4, rtol=1e-4)
        # the float32 gate on the device stopped where the host's policy did, every time
        assert runner.fused_disagreements == before
        # pipelined: layer l + 1 queued before the host reads layer l; never re-run
        reruns = runner.reruns
        piped = [runner.run_one(ids, tt, policy, pipeline=True, fused=False)
                 for ids, tt in examples]
        np.testing.assert_array_equal([r.exit_layer for r in piped], exits)
        assert runner.reruns == reruns
    assert varied >= 2, "the test needs thresholds whose exits vary between examples"
    assert runner.trace_counts == compiled  # a threshold is an argument: nothing recompiled


@pytest.mark.parametrize("kind", sorted(POLICIES))
def test_gate_disagreement_would_be_counted(setup, kind):
    """The check above is not vacuous: the same host rule under a gate of the opposite
    direction makes the fused run disagree (and the host still decides)."""
    runner, data, trace, _ = setup
    scores = _scores(trace, kind)
    base = POLICIES[kind](between(scores, 0.5))

    class Flipped(type(base)):
        def device_gate(self):
            k, t, d = super().device_gate()
            return (k, t, -d)

    policy = Flipped(base.settings["threshold"])
    exits, _ = simulate_exits(trace, base)
    # where the flipped gate stops on the device: the first layer where it holds, else L
    t, direction = base.settings["threshold"], base.gate_direction
    flipped = scores < t if direction > 0 else scores >= t  # [L, N]
    flipped[-1] = True
    device_exits = flipped.argmax(0) + 1
    differ = int((device_exits != exits).sum())
    assert differ > 0
    before = runner.fused_disagreements
    res = runner.run(data, policy)
    np.testing.assert_array_equal(res.exit_layers, exits)  # the host decides
    # every example whose device exit differs from the host's is counted, once
    assert runner.fused_disagreements - before == differ


def _host_elbert(trace, **settings):
    """ELBERT replayed from the stored per-layer outputs with the bare rule function."""
    exits = np.full(trace.outputs.shape[1], L, np.int32)
    for i in range(len(exits)):
        history = []
        for layer in range(1, L + 1):
            history.append(trace.layer_output(layer, i))
            if elbert_exit(history, **settings):
                exits[i] = layer
                break
    return exits


@pytest.mark.parametrize("criterion", [1, 2, 3])
def test_elbert_through_the_runner_equals_the_host_rule(setup, criterion):
    runner, _data, trace, examples = setup
    nent = np.array([[normalized_entropy(p) for p in layer] for layer in trace.probs])
    pc = trace.probs.max(-1)
    settings = dict(delta=between(nent, 0.3), window=2, criterion=criterion, margin=0.0,
                    max_range=between(np.abs(np.diff(pc, axis=0)), 0.5))
    policy = ELBERTPolicy(**settings)
    assert device_gate(policy) is None  # stateful: one host round trip per layer
    exits = _host_elbert(trace, **settings)
    assert len(set(exits.tolist())) > 1, exits  # the check is not vacuous
    sim, outs = simulate_exits(trace, ELBERTPolicy(**settings))
    np.testing.assert_array_equal(sim, exits)
    for fused, pipeline in ((True, True), (False, False)):
        res = [runner.run_one(ids, tt, policy, pipeline=pipeline, fused=fused)
               for ids, tt in examples]
        np.testing.assert_array_equal([r.exit_layer for r in res], exits)
        np.testing.assert_allclose(np.stack([r.outputs for r in res]), outs, atol=1e-4,
                                   rtol=1e-4)
    # the window matters: some example exits in stage 2 (not by puzzlement alone)
    stage1 = np.array([np.float32(nent[e - 1, i]) < np.float32(settings["delta"])
                       for i, e in enumerate(exits)])
    assert (~stage1 & (exits < L)).any() or criterion == 2, (exits, stage1)
