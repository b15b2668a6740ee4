"""Figure 5's baselines (`jaxit.interpret.rationale_baselines`): raw attention, [CLS]
attention and attention rollout recomputed by hand from the encoder's attention
probabilities, saliency at layer 0 equal to AdapLeR's phase-2 saliency, padding invariance,
and the evaluation's label check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig
from jaxit.encoders.transformer import mask_bias_from
from jaxit.interpret.rationale_baselines import (
    evaluate_baselines,
    example_baseline_scores,
    layer_baseline_scores,
)

CFG = EncoderConfig("bert", 50, 32, 3, 4, 64, max_position_embeddings=32)


@pytest.fixture(scope="module")
def model(peaked_classifier):
    return peaked_classifier(CFG)


def _batch(n=7, t=None, label=1):
    rng = np.random.default_rng(0)
    t = t or n
    ids = np.zeros((1, t), np.int32)
    ids[0, :n] = rng.integers(5, 50, n)
    mask = (np.arange(t) < n).astype(np.int32)[None]
    return batch_from_ids(ids, mask, np.zeros_like(ids), np.array([label], np.int32))


def test_attention_baselines_by_hand(model):
    enc, params = model
    b = _batch()
    out = {k: np.asarray(v[:, 0], np.float64)
           for k, v in layer_baseline_scores(enc, params, b).items()}
    h = enc.embed(params["encoder"], b)
    bias = mask_bias_from(b.attention_mask, jnp.float32)
    roll = np.eye(7)
    for l in range(CFG.num_layers):
        h, p = enc.block(enc.layer_params(params["encoder"], l), h, bias, return_attention=True)
        a = np.asarray(p[0], np.float64).mean(0)  # [T, T] head mean
        np.testing.assert_allclose(out["cls_attention"][l], a[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out["attention"][l], a.mean(0), rtol=1e-4, atol=1e-6)
        r = 0.5 * a + 0.5 * np.eye(7)
        roll = (r / r.sum(-1, keepdims=True)) @ roll
        np.testing.assert_allclose(out["rollout"][l], roll[0] / roll[0].sum(), rtol=1e-4,
                                   atol=1e-6)
        received = roll.sum(0)
        np.testing.assert_allclose(out["rollout_received"][l], received / received.sum(),
                                   rtol=1e-4, atol=1e-6)
    for v in out.values():
        np.testing.assert_allclose(v.sum(-1), 1.0, rtol=1e-5)
    # the layers differ (a test that indexes one layer for all would fail)
    assert np.abs(out["rollout"][0] - out["rollout"][-1]).max() > 1e-3


def test_saliency_at_layer_zero_is_adaplers_phase_two(model):
    from jaxit.interpret.saliency import embedding_saliency

    enc, params = model
    b = _batch()
    ours = np.asarray(layer_baseline_scores(enc, params, b)["saliency"][0, 0])
    ref = np.asarray(embedding_saliency(enc, params, b)[0])
    np.testing.assert_allclose(ours, ref / ref.sum(), rtol=1e-4, atol=1e-7)
    # the gold class matters: the other class's gradient gives other scores
    other = np.asarray(layer_baseline_scores(enc, params, _batch(label=0))["saliency"][0, 0])
    assert np.abs(other - ours).max() > 1e-4


def test_attention_only_needs_no_labels_and_no_backward(model):
    enc, params = model
    b = _batch()
    full = layer_baseline_scores(enc, params, b)
    no_labels = batch_from_ids(b.input_ids, b.attention_mask, b.token_type_ids, None)
    names = ("attention", "rollout")
    part = layer_baseline_scores(enc, params, no_labels, names=names)
    assert set(part) == set(names)
    for k in names:
        np.testing.assert_allclose(np.asarray(part[k]), np.asarray(full[k]), rtol=1e-6)

    def flops(fn, x):
        cost = jax.jit(fn).lower(params, x).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    with_grad = flops(lambda p, x: layer_baseline_scores(enc, p, x), b)
    without = flops(lambda p, x: layer_baseline_scores(enc, p, x, names=names), no_labels)
    assert without < 0.6 * with_grad  # the backward pass (≈ 2× the forward) is not traced
    with pytest.raises(ValueError, match="gold labels"):
        layer_baseline_scores(enc, params, no_labels)


def test_padding_changes_no_score(model):
    enc, params = model
    fn = jax.jit(lambda p, b: layer_baseline_scores(enc, p, b))
    b = _batch()
    ids, tt = np.asarray(b.input_ids[0]), np.asarray(b.token_type_ids[0])
    alone = example_baseline_scores(fn, params, ids, tt, 1)
    padded = example_baseline_scores(fn, params, ids, tt, 1, pad_to=16)
    for k in alone:
        assert padded[k].shape == alone[k].shape == (CFG.num_layers, 7)
        np.testing.assert_allclose(padded[k], alone[k], rtol=2e-4, atol=1e-6)


def test_evaluate_baselines_checks_the_labels(model):
    from jaxit.data.rationales import Rationale
    from jaxit.interpret.rationales import EncodedRationale

    enc, params = model
    b = _batch()
    words = tuple(f"w{i}" for i in range(5))

    def encoded(label):
        r = Rationale("g", words, np.array([1, 0, 0, 1, 0]), label, ((0, 1), (3, 4)))
        return EncodedRationale(r, np.asarray(b.input_ids[0]), np.asarray(b.token_type_ids[0]),
                                np.array([-1, 0, 1, 2, 3, 4, -1]), np.array([0, 1, 0, 0, 1, 0, 0]))

    reps = evaluate_baselines(enc, params, [encoded(1), encoded(0)], ("rollout", "saliency"))
    assert set(reps) == {"rollout", "saliency"}
    for rep in reps.values():
        assert rep.num_examples == 2 and rep.map.shape == (CFG.num_layers,)
        assert np.all((rep.map >= 0) & (rep.map <= 1))
        assert np.all(rep.fpr == 1.0)  # nothing dropped: only the 1/n level is informative
        assert not rep.settings["drops_tokens"]
    with pytest.raises(ValueError, match="not classes"):
        evaluate_baselines(enc, params, [encoded(2)], ("saliency",))
    with pytest.raises(ValueError, match="unknown rationale baseline"):
        evaluate_baselines(enc, params, [encoded(1)], ("gradcam",))
