"""The learning-rate multiplier each optimizer group actually receives, measured on the param
deltas of real training steps (`jaxit.train.step.make_update_fn` on the method's own loss
and `jaxit.train.optim.make_optimizer`), not on the methods' config values.

On a group's first Adam step the update is lr · scale · g / (|g| + eps) (m̂ = g, v̂ = g²), so
with eps = 1e-12, no weight decay and no warm-up every param with a nonzero gradient moves by
exactly lr_t · scale, whatever its gradient's size (and whatever the global-norm clipping,
which rescales all gradients alike). The tests read that |Δ| per group: FastBERT's distilled
exits (×10, vs DeeBERT's ×1 in the same stage), ELBERT's loss weights (×weights_lr_scale vs
the backbone and the shared classifier), the exits' `exits_lr_scale`, and AdapLeR's
`cp_lr_scale` (whose run has a group with its own optimizer: the other code path of
`make_optimizer`). Gated-off groups must not move at all (bit for bit)."""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.configs import base_config
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.methods.registry import make_method
from jaxit.train.optim import make_optimizer
from jaxit.train.state import init_state
from jaxit.train.step import make_update_fn

pytestmark = pytest.mark.standard_promotion  # optax's Adam bias correction

L = 4
PEAK = 1e-3
NUM_STEPS = 4  # stage1_fraction 0.5: stage 1 = steps 0, 1; stage 2 = steps 2, 3


@functools.cache
def _encoder():
    cfg = EncoderConfig("bert", 50, 16, L, 2, 32, max_position_embeddings=32)
    return make_encoder(cfg), jax.jit(lambda k: init_params(cfg, k))(jax.random.PRNGKey(0))


# The update step is compiled once per method (~10 s each on 2 busy cores at XLA's default
# optimisation level, ~5 s at these settings); the numbers checked do not depend on them.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _batch(b=8, t=8, seed=0, token_targets=False):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (b, t))
    mask = (np.arange(t)[None] < rng.integers(4, t + 1, (b, 1))).astype(np.int32)
    batch = batch_from_ids(ids * mask, mask, labels=np.array([0, 1] * (b // 2), np.int32))
    if token_targets:  # AdapLeR's saliencies: positive on real tokens, 0 on padding
        batch = batch._replace(token_targets=(rng.uniform(0.1, 1.0, (b, t)) * mask)
                               .astype(np.float32))
    return batch


def _method(name, **options):
    """The method as a run builds it: the registry on the run config's method options
    (defaults such as weights_lr_scale = 500 and distill_lr_scale = 10 included)."""
    mcfg = ml_collections.ConfigDict(base_config().method.to_dict())
    mcfg.name = name
    for k, v in options.items():
        mcfg[k] = v
    enc, p = _encoder()
    m = make_method(mcfg, enc, 2, False, NUM_STEPS, steps_per_epoch=NUM_STEPS)
    return m, jax.jit(m.init)(jax.random.PRNGKey(1), p)


def _train(method, params, batch, num_steps=NUM_STEPS):
    """Params before and after each real update step; the run's optimizer settings with no
    warm-up (lr_t = PEAK on each stage's first step), no weight decay and a tiny Adam eps."""
    tcfg = base_config().train
    tcfg.learning_rate, tcfg.warmup_fraction = PEAK, 0.0
    tcfg.weight_decay, tcfg.adam_eps = 0.0, 1e-12
    assert tcfg.grad_clip_norm > 0  # the run's clipping stays on
    tx, labels = make_optimizer(tcfg, method, params, NUM_STEPS)
    state = init_state(params, tx, 0)
    lowered = jax.jit(make_update_fn(method, tx, labels)).lower(state, batch)
    try:
        update = lowered.compile(compiler_options=FAST_COMPILE)
    except jax.errors.JaxRuntimeError:  # an XLA without these options: the default
        update = lowered.compile()
    history = [jax.device_get(state.params)]
    for _ in range(num_steps):
        state, _ = update(state, batch)
        history.append(jax.device_get(state.params))
    return history, labels


def _group_deltas(before, after, labels):
    """{group: |after - before| of all its params, flattened (float64)}."""
    out = {}
    for a, b, g in zip(jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(labels)):
        d = np.abs(np.asarray(b, np.float64) - np.asarray(a, np.float64)).ravel()
        out[g] = np.concatenate([out[g], d]) if g in out else d
    return out


def _step_size(deltas, group):
    """The size of a first Adam step in `group`: |Δ| of its moved params (they all move by
    the same lr · scale; checked with the max and the median)."""
    moved = deltas[group][deltas[group] > 0]
    assert moved.size > 0.5 * deltas[group].size, f"{group}: most params did not move"
    size = float(np.median(moved))
    assert float(moved.max()) == pytest.approx(size, rel=1e-3), group
    return size


def test_fastbert_exits_move_ten_times_as_far_as_the_final_head():
    """FastBERT: stage 1 (steps 0, 1) trains the backbone and the final head at 1×, stage 2
    (steps 2, 3) only the exits, at distill_lr_scale = 10×. Step 0 is the final head's
    first Adam step and step 2 the exits' (the gate kept their moments at init), both at
    the peak of their stage's schedule: |Δ final| = PEAK, |Δ exits| = 10 · PEAK. A group
    that is gated off does not change by a single bit."""
    m, params = _method("fastbert", stage1_fraction=0.5)
    assert base_config().method.distill_lr_scale == 10.0
    hist, labels = _train(m, params, _batch())
    assert set(jax.tree.leaves(labels)) == {"backbone", "final", "exits"}
    d = [_group_deltas(hist[s], hist[s + 1], labels) for s in range(NUM_STEPS)]
    for s in range(NUM_STEPS):
        on = ("backbone", "final") if s < 2 else ("exits",)
        for g in ("backbone", "final", "exits"):
            assert np.any(d[s][g]) == (g in on), (s, g)
    for g in ("backbone", "final"):
        assert _step_size(d[0], g) == pytest.approx(PEAK, rel=1e-3), g
    exits = _step_size(d[2], "exits")
    assert exits == pytest.approx(10 * PEAK, rel=1e-3)
    assert exits / _step_size(d[0], "final") == pytest.approx(10.0, rel=1e-3)


def test_elbert_loss_weights_move_weights_lr_scale_times_as_far():
    """ELBERT trains every group from step 0: the backbone and the shared classifier move
    by PEAK and the loss-weight logits t by weights_lr_scale · PEAK (the config's 500)."""
    m, params = _method("elbert")
    scale = base_config().method.weights_lr_scale
    assert scale == 500.0
    hist, labels = _train(m, params, _batch(), num_steps=1)
    assert set(jax.tree.leaves(labels)) == {"backbone", "final", "loss_weights"}
    d = _group_deltas(hist[0], hist[1], labels)
    assert d["loss_weights"].size == L - 1 and np.all(d["loss_weights"] > 0)
    for g in ("backbone", "final"):
        assert _step_size(d, g) == pytest.approx(PEAK, rel=1e-3), g
    t = _step_size(d, "loss_weights")
    assert t == pytest.approx(scale * PEAK, rel=1e-3)
    assert t / _step_size(d, "final") == pytest.approx(scale, rel=1e-3)


def test_berxit_exits_lr_scale_and_alternating_gate():
    """BERxiT with exits_lr_scale 3: the exits are gated off on even steps, so step 0 leaves
    them bit for bit as they were while the final head moves by PEAK; step 1 is then the
    exits' first Adam step, at 3 · lr_1 (lr_1 = PEAK · 3/4: linear decay, no warm-up)."""
    m, params = _method("berxit", exits_lr_scale=3.0)
    hist, labels = _train(m, params, _batch(), num_steps=2)
    d0 = _group_deltas(hist[0], hist[1], labels)
    d1 = _group_deltas(hist[1], hist[2], labels)
    assert not np.any(d0["exits"])
    assert _step_size(d0, "final") == pytest.approx(PEAK, rel=1e-3)
    assert _step_size(d1, "exits") == pytest.approx(3 * PEAK * (1 - 1 / NUM_STEPS), rel=1e-3)


def test_adapler_cp_lr_scale_with_a_group_optimizer():
    """AdapLeR's η/θ have their own optimizer, so `make_optimizer` applies the run's schedule
    inside each group instead (its other code path): the CPs must still get cp_lr_scale ·
    lr (here 7×) and the encoder and final head 1×."""
    m, params = _method("adapler", cp_lr_scale=7.0, saliency_dir="unused")
    assert "speed" in m.group_optimizers
    hist, labels = _train(m, params, _batch(token_targets=True), num_steps=1)
    assert set(jax.tree.leaves(labels)) == {"main", "cp", "speed"}
    d = _group_deltas(hist[0], hist[1], labels)
    assert _step_size(d, "main") == pytest.approx(PEAK, rel=1e-3)
    assert _step_size(d, "cp") == pytest.approx(7 * PEAK, rel=1e-3)
    assert np.any(d["speed"])
