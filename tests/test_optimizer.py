"""The trainer's optimizer (`jaxit.train.optim.make_optimizer`) against hand-computed numbers:
the warm-up/decay learning rate per step (one schedule, and one restarted per stage), the
weight-decay mask, global-norm clipping, and gated-off groups keeping their Adam moments."""

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.methods.dact import make_dact
from jaxit.methods.early_exit import make_early_exit
from jaxit.train.optim import make_optimizer

pytestmark = pytest.mark.standard_promotion  # optax's Adam bias correction

PEAK, NUM_STEPS = 1e-3, 10
CFG = EncoderConfig("bert", 40, 8, 2, 2, 16, max_position_embeddings=16)


def _tcfg(**kw):
    base = dict(learning_rate=PEAK, warmup_fraction=0.0, weight_decay=0.0, adam_b1=0.9,
                adam_b2=0.999, adam_eps=1e-8, grad_clip_norm=0.0)
    return SimpleNamespace(**{**base, **kw})


def _numpy_init(m, seed=0):
    """The method's param tree filled from numpy (no jax.random compiles)."""
    rng = np.random.default_rng(seed)
    k = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda: m.init(k, init_params(CFG, k)))
    return jax.tree.map(lambda s: (0.5 + rng.random(s.shape)).astype(np.float32), shapes)


@functools.cache
def _elbert():
    m = make_early_exit(make_encoder(CFG), 3, False, NUM_STEPS, strategy="elbert")
    return m, _numpy_init(m)


@functools.cache
def _dact(stage1_fraction=0.4):  # stage1_steps = 4
    m = make_dact(make_encoder(CFG), 3, False, NUM_STEPS, stage1_fraction=stage1_fraction)
    return m, _numpy_init(m, 1)


def _leaves(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _name(path):
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _adam(opt_state, group):
    """The ScaleByAdamState of one group inside the multi_transform state."""
    is_mt = lambda x: isinstance(x, optax.MultiTransformState)
    mt = [s for s in jax.tree.leaves(opt_state, is_leaf=is_mt) if is_mt(s)]
    assert len(mt) == 1
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
    found = [s for s in jax.tree.leaves(mt[0].inner_states[group], is_leaf=is_adam)
             if is_adam(s)]
    assert len(found) == 1, group
    return found[0]


def _run_steps(tx, params, grads_per_step):
    state = tx.init(params)
    update = jax.jit(tx.update)
    ups = []
    for g in grads_per_step:
        u, state = update(g, state, params)
        ups.append(u)
    return ups, state


# ----------------------------------------------------------------------------- schedule


def test_warmup_then_linear_decay():
    """warmup_fraction 0.2 of 10 steps: 2 warm-up steps 0 -> peak, then 8 steps peak -> 0.
    With a constant gradient Adam's direction is g / (|g| + eps) = 1, so |update| = lr_t
    (times the group's lr scale: ELBERT's loss weights have 500)."""
    m, params = _elbert()
    assert m.stage_starts == ()
    tx, _ = make_optimizer(_tcfg(warmup_fraction=0.2), m, params, NUM_STEPS)
    ones = jax.tree.map(jnp.ones_like, params)
    ups, _ = _run_steps(tx, params, [ones] * NUM_STEPS)
    want = PEAK * np.array([0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    got = np.array([-float(u["encoder"]["embeddings"]["word"][0, 0]) for u in ups])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12)
    got_t = np.array([-float(u["heads"]["loss_weights"][0]) for u in ups])
    np.testing.assert_allclose(got_t, 500.0 * want, rtol=1e-4, atol=1e-12)


def test_each_stage_has_its_own_warmup_and_decay():
    """DACT with stage1_steps = 4 of 10, warmup_fraction 0.25: stage 1 (4 steps) warms up
    over round(1.0) = 1 step and decays over 3; stage 2 (6 steps) over round(1.5) = 2 and 4."""
    m, params = _dact()
    assert m.stage_starts == (4,)
    tx, _ = make_optimizer(_tcfg(warmup_fraction=0.25), m, params, NUM_STEPS)
    ones = jax.tree.map(jnp.ones_like, params)
    ups, _ = _run_steps(tx, params, [ones] * NUM_STEPS)
    want = PEAK * np.array([0, 1, 2 / 3, 1 / 3, 0, 0.5, 1, 0.75, 0.5, 0.25])
    got = np.array([-float(u["encoder"]["layers"]["qkv"]["kernel"][1, 0, 0]) for u in ups])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12)


# ----------------------------------------------------------------------------- weight decay


def test_no_weight_decay_on_biases_layernorm_and_loss_weights():
    """Zero gradients: Adam's part is 0, so a decayed leaf moves by exactly -lr * scale *
    wd * p and an exempt one (bias, LayerNorm scale, ELBERT's t) does not move at all."""
    m, params = _elbert()
    wd = 0.1
    tx, labels = make_optimizer(_tcfg(weight_decay=wd, grad_clip_norm=1.0), m, params,
                                NUM_STEPS)
    zeros = jax.tree.map(jnp.zeros_like, params)
    (upd,), _ = _run_steps(tx, params, [zeros])
    exempt, decayed = [], []
    for (path, u), p, g in zip(_leaves(upd), jax.tree.leaves(params), jax.tree.leaves(labels)):
        name = _name(path)
        if name.endswith(("/bias", "/scale")) or "loss_weights" in name:
            exempt.append(name)
            assert np.all(np.asarray(u) == 0.0), name
        else:
            decayed.append(name)
            want = -PEAK * m.lr_scale.get(g, 1.0) * wd * np.asarray(p)
            np.testing.assert_allclose(np.asarray(u), want, rtol=1e-5, err_msg=name)
    # the check covered each kind of leaf
    assert "heads/loss_weights" in exempt
    assert "encoder/embeddings/ln/scale" in exempt and "encoder/layers/ffn_ln/scale" in exempt
    assert "encoder/layers/qkv/bias" in exempt and "heads/final/out/bias" in exempt
    assert "encoder/embeddings/word" in decayed and "heads/final/out/kernel" in decayed


# ----------------------------------------------------------------------------- clipping


def test_global_norm_clipping():
    """A huge gradient is rescaled to global norm 1 before Adam: the first moment is
    (1 - b1) * g_clipped and, with adam_eps = 1 (so Adam does not normalise the size
    away), the first update is -lr * g_c / (|g_c| + 1)."""
    m, params = _elbert()
    tx, _ = make_optimizer(_tcfg(grad_clip_norm=1.0, adam_eps=1.0), m, params, NUM_STEPS)
    rng = np.random.default_rng(0)
    grads = jax.tree.map(jnp.zeros_like, params)
    big = (1e4 * rng.standard_normal((40, 8))).astype(np.float32)
    small = rng.standard_normal((3,)).astype(np.float32)
    grads["encoder"]["embeddings"]["word"] = jnp.asarray(big)
    grads["heads"]["final"]["out"]["bias"] = jnp.asarray(small)
    norm = np.sqrt((big.astype(np.float64) ** 2).sum() + (small.astype(np.float64) ** 2).sum())
    assert norm > 1e5
    (upd,), state = _run_steps(tx, params, [grads])
    for leaf, path, grp in ((big, ("encoder", "embeddings", "word"), "backbone"),
                            (small, ("heads", "final", "out", "bias"), "final")):
        gc = leaf.astype(np.float64) / norm
        u = functools.reduce(lambda t, k: t[k], path, upd)
        np.testing.assert_allclose(np.asarray(u), -PEAK * gc / (np.abs(gc) + 1.0),
                                   rtol=1e-4, atol=1e-12)
        mu = functools.reduce(lambda t, k: t[k], path, _adam(state, grp).mu)
        np.testing.assert_allclose(np.asarray(mu), 0.1 * gc, rtol=1e-4, atol=1e-12)
    # the clipped gradient's global norm is the clip: |mu| over all groups = (1 - b1) * 1
    total = sum(float(jnp.sum(jnp.square(x))) for g in ("backbone", "final", "loss_weights")
                for x in jax.tree.leaves(_adam(state, g).mu))
    np.testing.assert_allclose(np.sqrt(total), 0.1, rtol=1e-4)


# ----------------------------------------------------------------------------- gates


def test_gated_off_groups_keep_their_adam_moments():
    """DACT's exits and halting units are gated off in stage 1 (steps 0..3). Fed nonzero
    gradients there, they get exactly zero updates and their Adam state stays at init; at
    step 4 their first update is a fresh Adam step (bias-corrected at count 1), while the
    backbone's moments carry all five gradients."""
    m, params = _dact()
    b1, b2, eps = 0.9, 0.999, 1.0  # a large eps keeps the update sensitive to the moments
    tx, labels = make_optimizer(_tcfg(adam_eps=eps), m, params, NUM_STEPS)
    rng = np.random.default_rng(1)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                          params) for _ in range(5)]
    state = tx.init(params)
    update = jax.jit(tx.update)
    gated = ("exits", "halting")
    init_moments = {g: jax.device_get(_adam(state, g)) for g in gated}
    flat_labels = jax.tree.leaves(labels)
    for step in range(4):
        u, state = update(grads[step], state, params)
        for (path, x), g in zip(_leaves(u), flat_labels):
            if g in gated:
                assert np.all(np.asarray(x) == 0.0), (step, _name(path))
        for g in gated:
            now = _adam(state, g)
            for a, b in zip(jax.tree.leaves(now), jax.tree.leaves(init_moments[g])):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # step 4 = the start of stage 2: lr = peak (warmup_fraction 0)
    u, state = update(grads[4], state, params)
    for (path, x), g4, g in zip(_leaves(u), jax.tree.leaves(grads[4]), flat_labels):
        if g in gated:
            g4 = np.asarray(g4, np.float64)
            np.testing.assert_allclose(np.asarray(x), -PEAK * g4 / (np.abs(g4) + eps),
                                       rtol=1e-4, atol=1e-12, err_msg=_name(path))
    for g in gated:
        mu = jax.tree.leaves(_adam(state, g).mu)
        want = [(1 - b1) * np.asarray(x) for x, lab in zip(jax.tree.leaves(grads[4]), flat_labels)
                if lab == g]
        for a, b in zip(mu, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-12)
    # the always-trained backbone's first moment holds all five gradients
    mu = _adam(state, "backbone").mu["encoder"]["embeddings"]["word"]
    want = sum((1 - b1) * b1 ** (4 - k) * np.asarray(grads[k]["encoder"]["embeddings"]["word"],
                                                     np.float64) for k in range(5))
    np.testing.assert_allclose(np.asarray(mu), want, rtol=1e-4, atol=1e-7)
    del b2
