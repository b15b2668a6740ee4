"""DACT-BERT's training loss against a numpy hand computation on a 2-layer model: NLL of a_L,
tau * sum_{n<L} h_n (the implemented ponder penalty, see `jaxit.methods.dact`), the switch to
the DACT loss at `stage1_steps`, and the `expected_layers` metric 1 + sum_{n<L} p_n."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.encoders.transformer import mask_bias_from
from jaxit.methods.dact import make_dact

L, C, TAU, NUM_STEPS, STAGE1_FRACTION = 2, 3, 0.3, 10, 0.4  # stage1_steps = 4


def _numpy_init(m, cfg, seed=0):
    """Params of the method's tree structure filled from numpy (no jax.random compiles):
    N(0, 0.02) kernels and embeddings, N(0, 0.02) biases, LayerNorm scales 1."""
    rng = np.random.default_rng(seed)
    k = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda: m.init(k, init_params(cfg, k)))

    def fill(path, s):
        if getattr(path[-1], "key", None) == "scale":
            return np.ones(s.shape, np.float32)
        return (0.02 * rng.standard_normal(s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _model(regression=False):
    cfg = EncoderConfig("bert", 60, 16, L, 2, 32, max_position_embeddings=32)
    enc = make_encoder(cfg)
    c = 1 if regression else C
    m = make_dact(enc, c, regression, NUM_STEPS, tau=TAU, stage1_fraction=STAGE1_FRACTION)
    params = _numpy_init(m, cfg)
    heads = params["heads"]
    # spread the outputs and halting values, with a different halting bias per layer,
    # so that h_1 != h_2, neither is 0.5, and a_L differs from y_L and from y_1
    heads["exits"]["out"] = jax.tree.map(lambda x: 200.0 * x, heads["exits"]["out"])
    heads["final"]["out"] = jax.tree.map(lambda x: 200.0 * x, heads["final"]["out"])
    heads["halting"] = {"kernel": 40.0 * heads["halting"]["kernel"],
                        "bias": jnp.array([[0.7], [-1.2]], jnp.float32)}
    return enc, m, params


def _batch(regression=False, n=5, t=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, t), np.int32)
    mask = np.zeros((n, t), np.int32)
    for i, k in enumerate(rng.integers(3, t + 1, n)):
        ids[i, :k] = rng.integers(5, 60, k)
        mask[i, :k] = 1
    labels = (rng.uniform(0, 5, n).astype(np.float32) if regression
              else np.array([0, 1, 2, 1, 0], np.int64)[:n])
    return batch_from_ids(ids, mask, np.zeros_like(ids), labels)


def _np_dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _cls_states(enc, enc_params, batch):
    """Every layer's [CLS] state [L, B, D], block by block (the encoder is not under test)."""

    @jax.jit
    def run(p, b):
        hidden = enc.embed(p, b)
        bias = mask_bias_from(jnp.asarray(b.attention_mask))
        states = []
        for layer in range(L):
            hidden = enc.block(enc.layer_params(p, layer), hidden, bias)
            states.append(hidden[:, 0])
        return jnp.stack(states)

    return run(enc_params, batch)


def _hand(enc, params, batch, regression=False):
    """Per layer: the [CLS] state from the encoder blocks, then heads, halting, recurrence
    and the losses all in float64 numpy."""
    heads = params["heads"]
    labels = np.asarray(batch.labels)
    states = np.asarray(_cls_states(enc, params["encoder"], batch), np.float64)  # [L, B, D]
    n = states.shape[1]
    ys, hs, outs = [], [], []
    for layer in range(L):
        cls = states[layer]
        head = (heads["final"] if layer == L - 1
                else jax.tree.map(lambda x, i=layer: x[i], heads["exits"]))
        out = _np_dense(head["out"], np.tanh(_np_dense(head["pooler"], cls)))
        z = cls @ np.asarray(heads["halting"]["kernel"][layer], np.float64)[:, 0] \
            + float(heads["halting"]["bias"][layer, 0])
        hs.append(1.0 / (1.0 + np.exp(-z)))
        outs.append(out)
        if regression:
            ys.append(out)
        else:
            e = np.exp(out - out.max(-1, keepdims=True))
            ys.append(e / e.sum(-1, keepdims=True))
    a, p = np.zeros_like(ys[0]), np.ones(n)
    ps = []
    for y, h in zip(ys, hs):
        a = y * p[:, None] + a * (1.0 - p)[:, None]
        p = h * p
        ps.append(p)
    rows = np.arange(n)
    if regression:
        task = np.mean((a[:, 0] - labels) ** 2)
        last = np.mean((outs[-1][:, 0] - labels) ** 2)
    else:
        task = np.mean(-np.log(np.maximum(a[rows, labels], 1e-8)))
        z = outs[-1] - outs[-1].max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        last = np.mean(-logp[rows, labels])
    ponder = np.mean(np.sum(hs[:-1], axis=0))          # sum over n < L, mean over the batch
    expected = 1.0 + np.mean(np.sum(ps[:-1], axis=0))  # 1 + sum_{n<L} p_n
    return {"a": a, "y_last": ys[-1], "h": np.stack(hs), "task": task, "last": last,
            "ponder": ponder, "expected": expected}


@pytest.mark.parametrize("regression", [False, True])
def test_dact_loss_matches_hand_computation(regression):
    enc, m, params = _model(regression)
    batch = _batch(regression)
    ref = _hand(enc, params, batch, regression)
    # the test is informative: h_1, h_2 are spread and a_L is not the last head's answer
    assert np.ptp(ref["h"]) > 0.2 and not np.allclose(ref["h"][0], ref["h"][1], atol=0.05)
    assert np.abs(ref["a"] - ref["y_last"]).max() > 0.05
    loss = jax.jit(m.loss)
    value, metrics = loss(params, batch, None, jnp.asarray(NUM_STEPS - 1))
    want = ref["task"] + TAU * ref["ponder"]
    np.testing.assert_allclose(float(value), want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["loss_dact_task"]), ref["task"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["ponder"]), ref["ponder"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["loss_last"]), ref["last"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["expected_layers"]), ref["expected"], rtol=2e-5)
    # the ponder term leaves out h_L (it forms only p_L, which nothing uses)
    with_h_last = ref["task"] + TAU * np.mean(ref["h"].sum(0))
    assert abs(float(value) - with_h_last) > 1e-3
    # predict answers from a_L: log-probabilities (classification) or the value
    pred = np.asarray(jax.jit(m.predict)(params, batch), np.float64)
    want_pred = ref["a"][:, 0] if regression else np.log(np.maximum(ref["a"], 1e-8))
    np.testing.assert_allclose(pred, want_pred, rtol=2e-5, atol=2e-6)


def test_loss_switches_to_dact_at_stage1_steps():
    enc, m, params = _model()
    batch = _batch()
    ref = _hand(enc, params, batch)
    s1 = round(STAGE1_FRACTION * NUM_STEPS)
    assert m.stage_starts == (s1,)
    dact = ref["task"] + TAU * ref["ponder"]
    assert abs(dact - ref["last"]) > 1e-2  # the two losses are told apart
    loss = jax.jit(m.loss)
    for step in (0, s1 - 1, s1, s1 + 1, NUM_STEPS - 1):
        value, metrics = loss(params, batch, None, jnp.asarray(step))
        want = ref["last"] if step < s1 else dact
        np.testing.assert_allclose(float(value), want, rtol=2e-5, atol=1e-6, err_msg=str(step))
        # the metrics are reported in both stages
        np.testing.assert_allclose(float(metrics["expected_layers"]), ref["expected"], rtol=2e-5)
    # the exits and halting units are gated off exactly in stage 1
    for g in ("exits", "halting"):
        assert not bool(m.gates[g](jnp.asarray(s1 - 1))) and bool(m.gates[g](jnp.asarray(s1)))


def test_expected_layers_extremes():
    """All h = 1: p_1 = 1, so E[exit layer] = 2 = L; all h = 0: p_1 = 0, E = 1."""
    _, m, params = _model()
    batch = _batch()
    for b, want in ((60.0, 2.0), (-60.0, 1.0)):
        p = {**params, "heads": {**params["heads"], "halting": {
            "kernel": jnp.zeros_like(params["heads"]["halting"]["kernel"]),
            "bias": jnp.full_like(params["heads"]["halting"]["bias"], b)}}}
        _, metrics = jax.jit(m.loss)(p, batch, None, jnp.asarray(NUM_STEPS - 1))
        np.testing.assert_allclose(float(metrics["expected_layers"]), want, atol=1e-6)
        np.testing.assert_allclose(float(metrics["ponder"]), (L - 1) * (want - 1.0), atol=1e-6)
