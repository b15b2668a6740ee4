"""AdapLeR (seed 002): soft removal (eq. 4), CP scores, [CLS] amplification and the dummy
θ_d gradient (appendix B), the η -> 0 limit, hard keep vs the soft mask, both objectives'
gradients, and the η/θ optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.encoders.transformer import MASK_MIN, mask_bias_from
from jaxit.heads import exit_head
from jaxit.methods import adapler as A
from jaxit.methods.finetune import make_finetune
from tests.rows import random_batch

L = 3


def make_model(seed=0, num_steps=10, spread=300.0, **kw):
    cfg = EncoderConfig("bert", 100, 32, L, 2, 64, max_position_embeddings=64)
    enc = make_encoder(cfg)
    m = A.make_adapler(enc, 3, False, num_steps, steps_per_epoch=5, **kw)
    params = m.init(jax.random.PRNGKey(seed), init_params(cfg, jax.random.PRNGKey(seed)))
    # spread the untrained CP logits so that scores differ between tokens
    params["heads"]["cp"]["out"]["kernel"] = params["heads"]["cp"]["out"]["kernel"] * spread
    params["heads"]["cp"]["hidden"]["kernel"] = params["heads"]["cp"]["hidden"]["kernel"] * 10.0
    return enc, m, params


def make_batch(n=5, max_len=12, seed=0, saliency=True):
    return random_batch(n, max_len, min_len=4, seed=seed, saliency=saliency)


# ----------------------------------------------------------------------------- eq. 4


def test_soft_removal_zones():
    lam, beta, delta = 30.0, 0.1, 0.25
    s = jnp.array([[0.0, 0.1, 0.2, 0.25, 0.5, 1.0]])
    m = np.asarray(A.soft_removal(s, delta, lam, beta))[0]
    for x, v in zip(np.asarray(s)[0], m):
        if x < delta:  # zone 1: steep, lambda_adj = lambda / delta
            assert v == pytest.approx(lam / delta * (x - delta) - beta / lam, rel=1e-6)
        else:  # zone 2: almost flat, reaches 0 at S = 1
            assert v == pytest.approx((x - 1) * beta / ((1 - delta) * lam), rel=1e-6, abs=1e-9)
    assert np.all(m <= 0) and m[-1] == 0.0
    assert np.all(np.diff(m) > 0)  # increasing in the score


def test_soft_removal_is_continuous_at_delta():
    for lam, delta in [(10.0, 0.25), (1e3, 0.05), (3.0, 0.5)]:
        d = jnp.float32(delta)
        at = float(A.soft_removal(jnp.array([[d]]), d, lam)[0, 0])
        assert at == pytest.approx(-0.1 / lam, rel=1e-5)  # both zones give -beta/lambda
        gaps = []
        for h in (1e-2, 1e-3, 1e-4):
            s = jnp.array([[d - h, d + h]], jnp.float32)
            left, right = (float(v) for v in A.soft_removal(s, d, lam)[0])
            step = float(d - s[0, 0])
            assert abs(left - at) <= 1.01 * lam / delta * step + 1e-7
            assert abs(right - at) <= 1.01 * 0.1 / ((1 - delta) * lam) * h + 1e-7
            gaps.append(abs(left - at))
        assert gaps[0] > gaps[1] > gaps[2]  # -> 0 as S -> delta from below


def test_soft_removal_limits_as_lambda_grows():
    delta = jnp.float32(0.2)
    below, above = jnp.array([[0.1]]), jnp.array([[0.6]])
    lams = [1.0, 10.0, 1e2, 1e3, 1e5]
    low = [float(A.soft_removal(below, delta, lam)[0, 0]) for lam in lams]
    high = [float(A.soft_removal(above, delta, lam)[0, 0]) for lam in lams]
    assert np.all(np.diff(low) < 0) and low[-1] < -1e4  # removal zone -> -inf
    assert np.all(np.diff(np.abs(high)) < 0) and abs(high[-1]) < 1e-5  # kept zone -> 0
    # the evaluation lambda is a hard cut and stays finite
    hard = A.soft_removal(jnp.array([[0.0, 0.19, 0.2, 0.21, 1.0]]), delta, A.EVAL_LAMBDA)
    assert np.all(np.isfinite(hard))
    assert np.all(np.asarray(hard[0, :2]) < MASK_MIN) and np.all(np.abs(hard[0, 2:]) < 1e-15)


def test_soft_removal_gradients_are_finite_at_the_edges():
    g = jax.grad(lambda d, s: A.soft_removal(s, d, 10.0).sum(), argnums=(0, 1))
    for delta in (1e-4, 0.5, 1.0, 2.0):
        gd, gs = g(jnp.float32(delta), jnp.array([[0.0, 0.5, 1.0]]))
        assert np.isfinite(gd) and np.all(np.isfinite(gs))


def test_lambda_schedule():
    assert float(A.lambda_at(0, 100)) == 10.0
    assert float(A.lambda_at(99, 100)) == 10.0
    assert float(A.lambda_at(100, 100)) == 100.0
    assert float(A.lambda_at(450, 100)) == pytest.approx(1e5)
    assert float(A.lambda_at(120, 100, base=1.0, growth=50.0)) == 50.0


# ----------------------------------------------------------------------------- CP scores


def test_contribution_scores_softmax_over_kept_tokens():
    enc, _, params = make_model()
    batch = make_batch(saliency=False)
    h = enc.embed(params["encoder"], batch)
    cp = A.cp_layer(params, 1)
    assert cp["hidden"]["kernel"].shape == (32, A.CP_HIDDEN)
    keep = np.asarray(batch.attention_mask, np.float32).copy()
    keep[:, 2] = 0.0  # removed
    keep[:, 0] = 0.0  # [CLS] takes part whatever keep says
    keep[:, 1] = 0.5  # soft
    s = np.asarray(A.contribution_scores(cp, h, jnp.asarray(keep)))
    np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-5)
    assert np.all(s[:, 2] == 0) and np.all(s[np.asarray(batch.attention_mask) == 0] == 0)
    assert np.all(s[:, 0] > 0)
    # the authors' formula: softmax over all positions, times [1, keep[1:]], renormalised
    z = np.asarray(A.contribution_logits(cp, h), np.float64)
    w = np.exp(z - z.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True) * np.concatenate([np.ones((len(z), 1)), keep[:, 1:]], 1)
    np.testing.assert_allclose(s, w / w.sum(-1, keepdims=True), rtol=2e-5, atol=1e-7)
    # cp_layer also takes the "cp" sub-tree
    assert np.array_equal(A.cp_layer(params["heads"]["cp"], 1)["out"]["kernel"],
                          cp["out"]["kernel"])


def test_hard_keep_rule():
    scores = jnp.array([[0.01, 0.5, 0.05, 0.3, 0.14, 0.0]])
    keep = jnp.array([[1.0, 1, 1, 1, 1, 0]])  # 5 kept tokens, [CLS] included -> delta = eta/5
    new = np.asarray(A.hard_keep(scores, keep, 0.5))  # delta = 0.1
    np.testing.assert_array_equal(new, [[1, 1, 0, 1, 1, 0]])  # [CLS] kept despite 0.01
    assert float(A.keep_threshold(0.5, 5)) == pytest.approx(0.1)
    # a removed token stays removed, whatever its score
    again = np.asarray(A.hard_keep(jnp.array([[0.1, 0.1, 0.6, 0.1, 0.1, 0.0]]), new, 0.01))
    assert again[0, 2] == 0 and again[0, 1] == 1
    # eta -> 0 keeps everything that was kept
    np.testing.assert_array_equal(np.asarray(A.hard_keep(scores, keep, 1e-9)), np.asarray(keep))


# ----------------------------------------------------------------------------- appendix B


def test_amplify_cls_is_eq7():
    s = jnp.array([[0.1, 0.2, 0.3, 0.4, 0.0]])
    out = np.asarray(A.amplify_cls(s, 3.0))
    np.testing.assert_allclose(out, np.array([[0.3, 0.2, 0.3, 0.4, 0.0]]) / 1.2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(A.amplify_cls(s, 1.0)), np.asarray(s), rtol=1e-6)
    sal = jnp.array([[2.0, 1.0, 1.0, 0.0]])
    tgt = np.asarray(A.saliency_targets(sal, jnp.array([[1, 1, 1, 0]]), 2.0))
    np.testing.assert_allclose(tgt, [[4 / 6, 1 / 6, 1 / 6, 0]], rtol=1e-6)


def test_dummy_variable_gradient_eq11():
    """∂S̃_i/∂θ_d at θ_d = 1 is S̃_1((1 - S̃_1)1[i=1] - S̃_i 1[i>1]) (eq. 11)."""
    s = jnp.array([[0.15, 0.35, 0.2, 0.3]])
    jac = np.asarray(jax.jacfwd(lambda t: A.amplify_cls(s, t))(jnp.float32(1.0)))[0]
    s0 = np.asarray(s)[0]
    expect = np.concatenate([[s0[0] * (1 - s0[0])], -s0[0] * s0[1:]])
    np.testing.assert_allclose(jac, expect, rtol=1e-5)


def _eq7_np(sal, theta):
    """Eq. 7 in float64 numpy: normalise, scale [CLS] by theta, renormalise."""
    s = sal / sal.sum()
    s = np.concatenate([[theta * s[0]], s[1:]])
    return s / s.sum()


def _soft_removal_np(s, delta, lam, beta=0.1):
    return np.where(s < delta, lam / delta * (s - delta) - beta / lam,
                    (s - 1) * beta / ((1 - delta) * lam))


def test_dummy_gradient_over_theta_matches_finite_difference_of_eq7():
    """With S̃ = Ŝ(θ) (the CPs' fit), (1/θ) ∂/∂θ_d of a loss of S̃'(θ_d) equals the central
    finite difference in θ (float64) of the same loss of the analytic Ŝ(θ) (eqs. 12-14)."""
    sal = np.array([0.5, 2.0, 1.0, 3.0, 0.7])
    w = np.array([0.3, -1.0, 2.0, 0.5, -0.2])  # any downstream function of the scores

    def f_np(scores):
        return float(w @ scores + np.exp(_soft_removal_np(scores, 0.2, 3.0)).sum())

    def f(scores):
        return jnp.sum(jnp.asarray(w, jnp.float32) * scores[0]) + jnp.sum(
            jnp.exp(A.soft_removal(scores, 0.2, 3.0)))

    mask = jnp.ones((1, 5), jnp.float32)
    for theta in (0.5, 1.0, 2.5):
        s_tilde = A.saliency_targets(jnp.asarray(sal[None], jnp.float32), mask, theta)
        g_dummy = float(jax.grad(lambda td, s=s_tilde: f(A.amplify_cls(s, td)))(
            jnp.float32(1.0)))
        eps = 1e-6
        fd = (f_np(_eq7_np(sal, theta + eps)) - f_np(_eq7_np(sal, theta - eps))) / (2 * eps)
        assert g_dummy / theta == pytest.approx(fd, rel=1e-4, abs=1e-6)
        # and the Jacobians themselves (eq. 14): (1/θ) ∂S̃'/∂θ_d = ∂Ŝ/∂θ
        j_dummy = np.asarray(jax.jacfwd(lambda td, s=s_tilde: A.amplify_cls(s, td))(
            1.0))[0] / theta
        j_fd = (_eq7_np(sal, theta + eps) - _eq7_np(sal, theta - eps)) / (2 * eps)
        np.testing.assert_allclose(j_dummy, j_fd, rtol=1e-4, atol=1e-7)


@pytest.mark.standard_promotion
def test_grads_split_the_two_objectives():
    """main params: ∂(CE + γ CP); η: ∂(CE + φ length); θ: ∂(CE + φ length)/∂θ_d / θ."""
    enc, m, params = make_model(spread=10.0)
    params["heads"]["theta"] = jnp.array([0.5, 2.0, 4.0], jnp.float32)
    batch = make_batch()
    step = jnp.int32(2)  # epoch 0: lambda = 10
    gamma, phi = 5e-3, 5e-4
    loss, metrics, grads = jax.jit(m.grads)(params, batch, None, step)

    @jax.jit
    def reference(params):
        def obj(p, td):
            return A.adapler_objectives(enc, p, td, batch, A.lambda_at(step, 5))[0]

        ones = jnp.ones((L,), jnp.float32)
        def main_loss(p):
            ce, cp, _ = obj(p, ones)
            return ce + gamma * cp

        def speed_loss(p, td):
            ce, _, length = obj(p, td)
            return ce + phi * length

        main = jax.grad(main_loss)(params)
        speed = jax.grad(speed_loss, argnums=(0, 1))(params, ones)
        return main, speed, obj(params, ones)

    main, (speed_eta, g_td), o = reference(params)
    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)

    jax.tree.map(close, grads["encoder"], main["encoder"])
    jax.tree.map(close, grads["heads"]["cp"], main["heads"]["cp"])
    jax.tree.map(close, grads["heads"]["final"], main["heads"]["final"])
    close(grads["heads"]["eta"], speed_eta["heads"]["eta"])
    close(grads["heads"]["theta"] * params["heads"]["theta"], g_td)  # eq. 14
    assert np.any(np.abs(np.asarray(grads["heads"]["eta"])) > 0)
    assert np.any(np.abs(np.asarray(grads["heads"]["theta"])) > 0)
    assert np.any(np.abs(np.asarray(grads["heads"]["cp"]["out"]["kernel"])) > 0)
    assert float(loss) == pytest.approx(float(o[0] + gamma * o[1]), rel=1e-5)
    assert float(metrics["lambda"]) == 10.0


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("spread,eta", [(10.0, 1e-7), (300.0, 0.0)])
def test_eta_to_zero_is_the_plain_model(spread, eta):
    """η -> 0: nothing is dropped, and the soft-mask forward equals encoder + head. (With
    very peaked CPs some scores underflow below any δ > 0: there η = 0 is the limit.)"""
    enc, m, params = make_model(spread=spread)
    params["heads"]["eta"] = jnp.full((L,), eta, jnp.float32)
    batch = make_batch(saliency=False)
    plain = make_finetune(enc, 3, False).predict(
        {"encoder": params["encoder"], "heads": {"final": params["heads"]["final"]}}, batch)
    lengths = np.asarray(batch.attention_mask).sum(-1)
    for lam in (A.EVAL_LAMBDA, 1e6):
        out = A.adapler_forward(enc, params, batch, lam)
        np.testing.assert_allclose(out["logits"], plain, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(A.tokens_per_layer(out, batch.attention_mask),
                                      np.repeat(lengths[:, None], L, 1))
        np.testing.assert_allclose(out["n_kept"], np.repeat(lengths[None], L, 0), rtol=1e-5)
    # the method's predict is that forward at the evaluation lambda
    np.testing.assert_allclose(m.predict(params, batch), plain, atol=1e-5, rtol=1e-5)


def _hard_drop_logits(enc, params, ids, n):
    """Batch-1 inference with real dropping: the next layer runs on the kept tokens only."""
    heads = params["heads"]
    b = batch_from_ids(ids[None, :n])
    h = enc.embed(params["encoder"], b)
    keep = jnp.ones((1, n), jnp.float32)
    counts = []
    block = jax.jit(enc.block)
    score = jax.jit(lambda cp, h, k, eta: A.hard_keep(A.contribution_scores(cp, h, k), k, eta))
    for layer in range(L):
        keep = score(A.cp_layer(params, layer), h, keep, heads["eta"][layer])
        idx = np.flatnonzero(np.asarray(keep[0]) > 0)
        h, keep = h[:, idx], keep[:, idx]
        counts.append(len(idx))
        h = block(enc.layer_params(params["encoder"], layer), h,
                  mask_bias_from(jnp.ones((1, len(idx)), jnp.int32)))
    logits, _ = exit_head(heads["final"], h[:, 0])
    return np.asarray(logits[0]), counts


def test_soft_mask_at_eval_lambda_equals_hard_dropping():
    enc, _, params = make_model(seed=1)
    params["heads"]["eta"] = jnp.array([0.9, 0.6, 1.0], jnp.float32)
    batch = make_batch(n=3, seed=3, saliency=False)
    out = A.adapler_forward(enc, params, batch, A.EVAL_LAMBDA)
    tpl = A.tokens_per_layer(out, batch.attention_mask)
    lengths = np.asarray(batch.attention_mask).sum(-1)
    assert np.any(tpl < lengths[:, None])  # something was dropped
    for i in range(3):
        logits, counts = _hard_drop_logits(enc, params, np.asarray(batch.input_ids[i]),
                                           int(lengths[i]))
        assert counts == list(tpl[i])
        np.testing.assert_allclose(np.asarray(out["logits"][i]), logits, atol=2e-5, rtol=1e-4)


def test_soft_forward_masks_and_counts():
    enc, _, params = make_model()
    batch = make_batch(saliency=False)
    out = jax.jit(lambda p, b: A.adapler_forward(enc, p, b, 10.0))(params, batch)
    masks = np.asarray(out["masks"])
    real = np.asarray(batch.attention_mask) > 0
    assert np.all(masks[:, :, 0] == 0)  # [CLS] never masked
    assert np.all(masks[:, ~real] == MASK_MIN)  # pads stay at BERT's pad value
    assert np.all(masks >= MASK_MIN) and np.all(masks <= 0)
    assert np.all(np.diff(masks, axis=0) <= 0)  # accumulated: only ever decreases
    np.testing.assert_allclose(out["n_kept"], np.exp(masks).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["scores"]).sum(-1), 1.0, rtol=1e-5)
    # delta of layer l uses the count before it: eta / (1 + real tokens) at layer 0
    np.testing.assert_allclose(out["deltas"][0], 0.25 / real.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(out["deltas"][1:], 0.25 / np.asarray(out["n_kept"][:-1]),
                               rtol=1e-5)


def test_cp_loss_weights_and_kl():
    p = jnp.array([[0.5, 0.5, 0.0]])
    q = jnp.array([[0.25, 0.75, 0.0]])
    kl = float(A.kl_divergence(p, q, jnp.array([[1, 1, 0]]))[0])
    assert kl == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), rel=1e-5)
    np.testing.assert_array_equal(A.layer_weights(4), [4, 3, 2, 1])


def test_training_needs_saliencies():
    enc, m, params = make_model()
    with pytest.raises(ValueError, match="saliency"):
        m.loss(params, make_batch(saliency=False), None, 0)
    with pytest.raises(ValueError, match="regression"):
        A.make_adapler(enc, 1, True, 10, 5)
    with pytest.raises(ValueError, match="beta"):
        A.make_adapler(enc, 3, False, 10, 5, beta=0.0)


# ----------------------------------------------------------------------------- optimizer


@pytest.mark.standard_promotion
def test_speed_optimizer_and_eta_projection():
    from jaxit.configs import base_config
    from jaxit.train.optim import make_optimizer

    _, m, params = make_model(num_steps=100)
    tcfg = base_config().train
    tx, labels = make_optimizer(tcfg, m, params, 100)
    assert labels["heads"]["eta"] == "speed" and labels["heads"]["theta"] == "speed"
    assert labels["heads"]["cp"]["out"]["kernel"] == "cp"
    assert labels["heads"]["final"]["out"]["kernel"] == "main"
    state = tx.init(params)
    # huge gradients: the speed group clips on its own (its step is ~ lr), eta lands in range
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["heads"]["eta"] = jnp.array([-1e3, 1e3, 0.0], jnp.float32)  # push up, down, none
    grads["heads"]["theta"] = jnp.array([1.0, -1.0, 0.0], jnp.float32)
    grads["encoder"]["pooler"]["bias"] = jnp.full_like(grads["encoder"]["pooler"]["bias"], 1e3)
    p = params
    p = {**p, "heads": {**p["heads"], "eta": jnp.array([0.999, 0.0105, 0.5], jnp.float32)}}
    update = jax.jit(tx.update)
    for _ in range(10):
        upd, state = update(grads, state, p)
        p = optax.apply_updates(p, upd)
    eta = np.asarray(p["heads"]["eta"])
    assert eta[0] == pytest.approx(1.0) and eta[1] == pytest.approx(0.01) and eta[2] == 0.5
    theta = np.asarray(p["heads"]["theta"])
    # 10 steps of the warm-up (6 steps to 5e-4, then decay): Adam moves ~lr per step
    assert 1e-3 < 1.0 - theta[0] < 5e-3 and 1e-3 < theta[1] - 1.0 < 5e-3 and theta[2] == 1.0
    # the main group's step is its own lr (2e-5 schedule), unaffected by the speed grads
    moved = np.abs(np.asarray(p["encoder"]["pooler"]["bias"] - params["encoder"]["pooler"]["bias"]))
    assert np.all(moved < 10 * 2e-5) and np.all(moved > 0)


def test_evaluate_soft_mask_counts_kept_tokens():
    enc, _, params = make_model(seed=1)
    params["heads"]["eta"] = jnp.array([0.9, 0.6, 1.0], jnp.float32)
    batch = make_batch(n=4, seed=3, saliency=False)
    valid = np.array([True, True, True, False])
    none = A.evaluate_soft_mask(enc, params, [(batch, valid)], eta=0.0)
    assert none["flops_speedup"] == 1.0 and none["flops_speedup_with_cps"] < 1.0  # CPs cost
    np.testing.assert_array_equal(none["tokens_per_layer"],
                                  np.repeat(none["num_tokens"][:, None], L, 1))
    red = A.evaluate_soft_mask(enc, params, [(batch, valid)])
    assert red["flops_speedup"] > 1.0 and red["predictions"].shape == (3,)
    assert np.all(red["kept_fraction"] <= 1.0) and red["kept_fraction"][-1] < 1.0
