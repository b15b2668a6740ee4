"""Multi-exit methods: losses, optimizer groups and gates per training strategy, LTE."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxit.batch import batch_from_ids
from jaxit.encoders import EncoderConfig, init_params, make_encoder
from jaxit.heads import task_loss
from jaxit.methods.early_exit import (
    all_layer_outputs,
    elbert_weights,
    lte_targets,
    make_early_exit,
)
from jaxit.methods.registry import make_method

L = 4


def tiny_encoder(dropout=0.0):
    cfg = EncoderConfig("bert", 50, 16, L, 2, 32, max_position_embeddings=32,
                        hidden_dropout=dropout, attention_dropout=dropout)
    return make_encoder(cfg), init_params(cfg, jax.random.PRNGKey(0))


def tiny_batch(regression=False, b=6, t=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, (b, t))
    mask = (np.arange(t)[None] < rng.integers(3, t + 1, (b, 1))).astype(np.int32)
    labels = (rng.uniform(0, 5, b).astype(np.float32) if regression
              else rng.integers(0, 2, b).astype(np.int32))
    return batch_from_ids(ids * mask, mask, labels=labels)


def gate_on(gate, step):
    if gate == "train":
        return True
    if gate == "frozen":
        return False
    return bool(gate(jnp.asarray(step)))


_GRAD_FNS = {}


def group_grads(method, params, batch, step):
    """{group: does the loss have a non-zero gradient w.r.t. any of the group's params}."""
    if id(method) not in _GRAD_FNS:
        _GRAD_FNS[id(method)] = (method, jax.jit(jax.grad(
            lambda p, b, s: method.loss(p, b, jax.random.PRNGKey(3), s)[0])))
    grads = _GRAD_FNS[id(method)][1](params, batch, jnp.asarray(step, jnp.int32))
    labels = method.param_labels(params)
    out = {}
    for g, lab in zip(jax.tree.leaves(grads), jax.tree.leaves(labels)):
        out[lab] = out.get(lab, False) or bool(jnp.any(g != 0))
    return out


def layer_losses(enc, params, batch, regression=False):
    out = jax.jit(lambda p, b: all_layer_outputs(enc, p, b).outputs)(params, batch)
    return task_loss(out, jnp.asarray(batch.labels), regression).mean(axis=1)


def test_params_layout_and_pooler_init():
    enc, p = tiny_encoder()
    m = make_early_exit(enc, 3, False, 10, "joint", lte=True)
    params = m.init(jax.random.PRNGKey(1), p)
    heads = params["heads"]
    assert heads["exits"]["out"]["kernel"].shape == (L - 1, 16, 3)
    assert heads["final"]["out"]["kernel"].shape == (16, 3)
    assert heads["lte"]["kernel"].shape == (16, 1)
    # every pooler (DeeBERT) starts from the checkpoint's pooler
    kernels = np.concatenate([np.asarray(heads["exits"]["pooler"]["kernel"]),
                              np.asarray(heads["final"]["pooler"]["kernel"])[None]])
    np.testing.assert_array_equal(kernels, np.broadcast_to(p["pooler"]["kernel"], kernels.shape))
    labels = m.param_labels(params)
    assert set(jax.tree.leaves(labels)) == {"backbone", "exits", "final", "lte"}
    assert set(jax.tree.leaves(labels["encoder"])) == {"backbone"}
    out = jax.jit(lambda p, b: all_layer_outputs(enc, p, b))(params, tiny_batch())
    assert out.outputs.shape == (L, 6, 3) and out.lte.shape == (L, 6)
    assert bool(jnp.all((out.lte > 0) & (out.lte < 1)))
    # (predict = the last layer's head: tests/test_runner.py)


def test_strategy_losses():
    enc, p = tiny_encoder()
    regression = False
    c = 1 if regression else 2
    batch = tiny_batch(regression)
    key = jax.random.PRNGKey(1)
    methods = {s: make_early_exit(enc, c, regression, 10, s, stage1_fraction=0.3,
                                  elbert_heads="per_layer")
               for s in ("joint", "two_stage", "alternating", "pabee", "elbert", "fastbert")}
    params = methods["elbert"].init(key, p)  # a superset of the others' params
    li = np.asarray(layer_losses(enc, params, batch, regression), np.float64)

    steps = (0, 1, 2, 3, 6)

    @jax.jit
    def all_losses(p, b, k):  # one compile: XLA shares the forward between strategies
        return {s: jnp.stack([m.loss(p, b, k, jnp.int32(t))[0] for t in steps])
                for s, m in methods.items()}

    values = jax.device_get(all_losses(params, batch, key))

    def loss(s, step):
        return float(values[s][steps.index(step)])

    assert loss("joint", 0) == pytest.approx(float(li.sum()), rel=1e-5)
    assert loss("alternating", 0) == pytest.approx(float(li[-1]), rel=1e-5)
    assert loss("alternating", 1) == pytest.approx(float(li.sum()), rel=1e-5)
    assert loss("alternating", 6) == pytest.approx(float(li[-1]), rel=1e-5)
    assert loss("two_stage", 2) == pytest.approx(float(li[-1]), rel=1e-5)  # stage 1: 3 steps
    assert loss("two_stage", 3) == pytest.approx(float(li[:-1].sum()), rel=1e-5)
    w = np.arange(1, L + 1)
    assert loss("pabee", 0) == pytest.approx(float((w * li).sum() / w.sum()), rel=1e-5)
    sig4 = 1 / (1 + np.exp(-4.0))
    ew = np.array([sig4] * (L - 1) + [L - (L - 1) * sig4])
    assert loss("elbert", 0) == pytest.approx(float((ew * li).sum()), rel=1e-5)
    # FastBERT: stage 1 = L_L; stage 2 = sum_{i<L} KL(p_L || p_i)
    logits = np.asarray(jax.jit(lambda p, b: all_layer_outputs(enc, p, b).outputs)(
        params, batch), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kl = (np.exp(logp[-1])[None] * (logp[-1][None] - logp[:-1])).sum(-1).mean(1).sum()
    assert loss("fastbert", 2) == pytest.approx(float(li[-1]), rel=1e-5)
    assert loss("fastbert", 3) == pytest.approx(float(kl), rel=1e-4)
    assert methods["fastbert"].lr_scale == {"exits": 10.0}


def test_regression_joint_lte_loss():
    enc, p = tiny_encoder()
    batch = tiny_batch(regression=True)
    m = make_early_exit(enc, 1, True, 10, "joint", lte=True)
    params = m.init(jax.random.PRNGKey(2), p)
    loss, metrics = jax.jit(m.loss)(params, batch, jax.random.PRNGKey(0), jnp.int32(0))
    out = jax.jit(lambda p, b: all_layer_outputs(enc, p, b))(params, batch)
    g, u, y = np.asarray(out.outputs[..., 0]), np.asarray(out.lte), np.asarray(batch.labels)
    li = ((g - y) ** 2).mean(1)
    j = ((u - (1 - np.tanh(np.abs(g - y)))) ** 2).mean(1)
    assert float(metrics["loss_main"]) == pytest.approx(li.sum(), rel=1e-5)
    assert float(metrics["loss_lte"]) == pytest.approx(j.sum(), rel=1e-5)
    assert float(loss) == pytest.approx(li.sum() + j.sum(), rel=1e-5)
    assert jax.jit(m.predict)(params, batch).shape == (6,)


def test_elbert_weights_sum_to_L_and_own_lr():
    t = jnp.array([4.0, -1.0, 0.3, 2.0, 7.0])
    w = elbert_weights(t, 6)
    assert float(w.sum()) == pytest.approx(6.0, abs=1e-5)
    np.testing.assert_allclose(w[:-1], jax.nn.sigmoid(t), rtol=1e-6)
    enc, p = tiny_encoder()
    m = make_early_exit(enc, 2, False, 10, "elbert", weights_lr_scale=123.0)
    params = m.init(jax.random.PRNGKey(0), p)
    np.testing.assert_allclose(params["heads"]["loss_weights"], 4.0)
    assert float(elbert_weights(params["heads"]["loss_weights"], L).sum()) == pytest.approx(L)
    assert m.lr_scale == {"loss_weights": 123.0}
    assert m.gates["loss_weights"] == "train"
    assert group_grads(m, params, tiny_batch(), 0)["loss_weights"]


def test_alternating_selects_groups_by_step_parity():
    enc, p = tiny_encoder()
    batch = tiny_batch()
    m = make_early_exit(enc, 2, False, 10, "alternating")
    params = m.init(jax.random.PRNGKey(0), p)
    for step in (0, 2, 4):  # the paper's odd iterations: L_L on backbone + last head
        g = group_grads(m, params, batch, step)
        assert g == {"backbone": True, "final": True, "exits": False}
        assert {k: gate_on(v, step) for k, v in m.gates.items()} == {
            "backbone": True, "final": True, "exits": False}
    for step in (1, 3, 5):  # the paper's even iterations: sum_i L_i on everything
        g = group_grads(m, params, batch, step)
        assert g == {"backbone": True, "final": True, "exits": True}
        assert all(gate_on(v, step) for v in m.gates.values())


def test_alternating_with_lte_trains_lte_on_every_step():
    enc, p = tiny_encoder()
    m = make_early_exit(enc, 2, False, 10, "alternating", lte=True)
    params = m.init(jax.random.PRNGKey(0), p)
    loss_fn = jax.jit(m.loss)
    for step in (0, 1):
        loss, metrics = loss_fn(params, tiny_batch(), jax.random.PRNGKey(0),
                                jnp.asarray(step, jnp.int32))
        assert "loss_lte" in metrics
        assert float(loss) == pytest.approx(float(metrics["loss_main"] + metrics["loss_lte"]))
        assert gate_on(m.gates["lte"], step)
        assert group_grads(m, params, tiny_batch(), step)["lte"]
    # J reaches the other exits' poolers on last-loss steps too; the gate keeps them frozen
    assert group_grads(m, params, tiny_batch(), 0)["exits"]
    assert not gate_on(m.gates["exits"], 0)


def test_two_stage_gates():
    enc, p = tiny_encoder()
    m = make_early_exit(enc, 2, False, 10, "two_stage", stage1_fraction=0.4)
    fb = make_early_exit(enc, 2, False, 10, "fastbert", stage1_fraction=0.4)
    for step in range(10):  # FastBERT's distillation stage freezes like DeeBERT's stage 2
        assert {k: gate_on(v, step) for k, v in fb.gates.items()} == {
            k: gate_on(v, step) for k, v in m.gates.items()}
    params = m.init(jax.random.PRNGKey(0), p)
    for step in range(10):
        on = {k: gate_on(v, step) for k, v in m.gates.items()}
        if step < 4:
            assert on == {"backbone": True, "final": True, "exits": False}
            assert group_grads(m, params, tiny_batch(), step) == {
                "backbone": True, "final": True, "exits": False}
        else:
            assert on == {"backbone": False, "final": False, "exits": True}
            g = group_grads(m, params, tiny_batch(), step)
            assert g["exits"] and not g["final"]  # L_L is not in stage 2's loss


def test_lte_targets_classification_regression_and_stop_gradient():
    out = jnp.array([[[2.0, 1.0], [0.0, 3.0]], [[0.0, 1.0], [5.0, 1.0]]])  # [L=2, B=2, C=2]
    y = jnp.array([0, 1])
    np.testing.assert_array_equal(lte_targets(out, y, False), [[1.0, 1.0], [0.0, 0.0]])
    vals = jnp.array([[[1.0], [4.0]], [[2.5], [2.0]]])
    yr = jnp.array([1.5, 2.0])
    np.testing.assert_allclose(lte_targets(vals, yr, True),
                               1 - np.tanh(np.abs(np.array([[-0.5, 2.0], [1.0, 0.0]]))),
                               rtol=1e-6)
    g = jax.grad(lambda v: lte_targets(v, yr, True).sum())(vals)
    np.testing.assert_array_equal(g, 0.0)


def test_registry_builds_every_strategy():
    enc, _p = tiny_encoder()
    for name, strategy in [("early_exit", "joint"), ("deebert", "two_stage"),
                           ("berxit", "alternating"), ("pabee", "pabee"), ("elbert", "elbert"),
                           ("fastbert", "fastbert")]:
        m = make_method(ml_collections.ConfigDict({"name": name}), enc, 2, False, 10)
        assert m.name == f"early_exit/{strategy}"
    mcfg = ml_collections.ConfigDict({"name": "early_exit", "strategy": "alternating",
                                      "lte": True})
    m = make_method(mcfg, enc, 1, True, 10)
    assert m.name == "early_exit/alternating+lte" and m.is_regression and "lte" in m.gates
    with pytest.raises(ValueError, match="strategy"):
        make_method(ml_collections.ConfigDict({"name": "early_exit", "strategy": "x"}),
                    enc, 2, False, 10)


# ----------------------------------------------------------------------------- trainer


def train_steps(method, params, batch, num_steps):
    """Params after each update of the real trainer's step (jaxit.train)."""
    from jaxit.configs import base_config
    from jaxit.train.optim import make_optimizer
    from jaxit.train.state import init_state
    from jaxit.train.step import make_update_fn

    tcfg = base_config().train
    tcfg.learning_rate, tcfg.warmup_fraction = 1e-2, 0.0
    # optax's Adam bias correction (float ** int32 step) needs standard promotion
    with jax.numpy_dtype_promotion("standard"):
        tx, labels = make_optimizer(tcfg, method, params, num_steps)
        state = init_state(params, tx, 0)
        update = jax.jit(make_update_fn(method, tx, labels))
        history = [state.params]
        for _ in range(num_steps):
            state, _ = update(state, batch)
            history.append(state.params)
    return history, labels


def changed_groups(before, after, labels):
    out = {}
    for a, b, lab in zip(jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(labels)):
        out[lab] = out.get(lab, False) or bool(jnp.any(a != b))
    return out


def test_trainer_alternating_and_two_stage_change_the_right_params():
    enc, p = tiny_encoder()
    batch = tiny_batch()
    m = make_early_exit(enc, 2, False, 4, "alternating", lte=True)
    hist, labels = train_steps(m, m.init(jax.random.PRNGKey(0), p), batch, 4)
    for step in range(4):
        ch = changed_groups(hist[step], hist[step + 1], labels)
        assert ch == {"backbone": True, "final": True, "lte": True, "exits": step % 2 == 1}, step

    m = make_early_exit(enc, 2, False, 4, "two_stage", stage1_fraction=0.5)
    hist, labels = train_steps(m, m.init(jax.random.PRNGKey(0), p), batch, 4)
    for step in range(4):
        ch = changed_groups(hist[step], hist[step + 1], labels)
        first = step < 2
        assert ch == {"backbone": first, "final": first, "exits": not first}, step
    # stage 2 leaves the backbone bit-for-bit untouched
    for a, b in zip(jax.tree.leaves(hist[2]["encoder"]), jax.tree.leaves(hist[4]["encoder"])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("strategy", ["two_stage", "fastbert"])
def test_lte_in_two_stage_follows_each_stage(strategy):
    """Stage 1: L_L + J_L only (nothing from the untrained exits reaches the backbone:
    the exits' params get no gradient at all); stage 2: sum_{i<L} (L_i + J_i) (the last
    head gets none)."""
    enc, p = tiny_encoder()
    m = make_early_exit(enc, 2, False, 10, strategy, lte=True, stage1_fraction=0.4)
    params = m.init(jax.random.PRNGKey(0), p)
    batch = tiny_batch()
    g1 = group_grads(m, params, batch, 1)
    assert g1["backbone"] and g1["final"] and g1["lte"] and not g1["exits"]
    g2 = group_grads(m, params, batch, 6)
    assert g2["exits"] and g2["lte"] and not g2["final"]
    # the LTE term of stage 1 is J_L: the loss equals L_L + J_L computed by hand
    from jaxit.methods.early_exit import lte_targets

    out = all_layer_outputs(enc, params, batch)
    labels = jnp.asarray(batch.labels)
    j = jnp.square(out.lte - lte_targets(out.outputs, labels, False)).mean(axis=1)
    ll = task_loss(out.outputs, labels, False).mean(axis=1)
    value, metrics = m.loss(params, batch, jax.random.PRNGKey(3), jnp.asarray(1))
    np.testing.assert_allclose(metrics["loss_lte"], j[-1], rtol=1e-5)
    np.testing.assert_allclose(value, ll[-1] + j[-1], rtol=1e-5)
    _, metrics = m.loss(params, batch, jax.random.PRNGKey(3), jnp.asarray(6))
    np.testing.assert_allclose(metrics["loss_lte"], j[:-1].sum(), rtol=1e-5)


@pytest.mark.standard_promotion
@pytest.mark.parametrize("name", ["deebert", "fastbert", "dact"])
def test_each_stage_has_its_own_schedule(name):
    """Stage 2 warms up from 0 to the peak and decays to 0 like stage 1, instead of running
    on the tail of one schedule; checked on the learning rate the optimizer applies."""
    from jaxit.train.optim import make_optimizer, staged_lr_schedule

    enc, p = tiny_encoder()
    mcfg = ml_collections.ConfigDict({"name": name, "stage1_fraction": 0.5})
    m = make_method(mcfg, enc, 2, False, 20)
    assert m.stage_starts == (10,)
    sched = staged_lr_schedule(1e-3, 20, 0.2, m.stage_starts)
    lr = [float(sched(s)) for s in range(20)]
    assert lr[0] == 0.0 and lr[10] == 0.0  # both stages start their warm-up at 0
    assert lr[2] == pytest.approx(1e-3) and lr[12] == pytest.approx(1e-3)  # peak after 2 steps
    assert lr[11] == pytest.approx(5e-4) and lr[9] == pytest.approx(1e-3 / 8)
    assert lr[19] == pytest.approx(lr[9])
    # the optimizer applies it: after `step` zero-gradient steps, a gradient of ones gives
    # Adam's direction m_hat / sqrt(v_hat) times the schedule's lr at that step
    tcfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_fraction=0.2,
                                          weight_decay=0.0, adam_b1=0.9, adam_b2=0.999,
                                          adam_eps=1e-12, grad_clip_norm=0.0))
    params = m.init(jax.random.PRNGKey(0), p)
    tx, _ = make_optimizer(tcfg, m, params, 20)
    zeros = jax.tree.map(jnp.zeros_like, params)
    ones = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    scale = {"fastbert": 10.0}.get(name, 1.0)  # FastBERT's distilled exits run at 10x
    for step in range(14):
        if step in (2, 9, 10, 11, 12):
            updates, _ = update(ones, state, params)
            group = "final" if step < 10 else "exits"
            got = np.abs(np.asarray(jax.tree.leaves(updates["heads"][group])[0])).max()
            t = step + 1 if step < 10 else step - 9  # the group's Adam steps (gated in stage 1)
            direction = (1 - 0.9) / (1 - 0.9 ** t) / np.sqrt((1 - 0.999) / (1 - 0.999 ** t))
            want = lr[step] * direction * (scale if step >= 10 else 1.0)
            assert got == pytest.approx(want, rel=1e-3, abs=1e-12), (step, got, want)
        _, state = update(zeros, state, params)


@pytest.mark.standard_promotion
def test_elbert_shares_one_classifier_across_layers(tmp_path):
    """ELBERT (seed 004): backbone + ONE classifier; every layer's exit is that classifier
    on the layer's state, it learns from every layer's loss, and every inference tool (trace,
    batch-1 runner, batched engine, sweep) runs such a run."""
    from jaxit.heads import exit_head, pool_features

    enc, p = tiny_encoder()
    m = make_early_exit(enc, 2, False, 10, "elbert")
    params = m.init(jax.random.PRNGKey(0), p)
    heads = params["heads"]
    assert set(heads) == {"final", "loss_weights"}
    n_head = sum(np.size(x) for x in jax.tree.leaves(heads["final"]))
    n_all = sum(np.size(x) for x in jax.tree.leaves(params))
    assert n_all == sum(np.size(x) for x in jax.tree.leaves(p)) + n_head + (L - 1)
    per_layer = make_early_exit(enc, 2, False, 10, "elbert", elbert_heads="per_layer")
    assert "exits" in per_layer.init(jax.random.PRNGKey(0), p)["heads"]
    batch = tiny_batch()
    out = all_layer_outputs(enc, params, batch)
    hidden = enc.forward_all(params["encoder"], batch)["hidden"]
    for layer in range(L):
        want, _ = exit_head(heads["final"], pool_features(hidden[layer],
                                                          jnp.asarray(batch.attention_mask)))
        np.testing.assert_allclose(out.outputs[layer], want, atol=1e-5)
    assert "exits" not in m.gates
    # the shared head's gradient is the sum of every layer's: layer 1's loss alone moves it
    g = jax.grad(lambda hp: task_loss(all_layer_outputs(
        enc, {**params, "heads": hp}, batch).outputs[0], jnp.asarray(batch.labels),
        False).mean())(heads)
    assert float(jnp.abs(g["final"]["out"]["kernel"]).max()) > 0
    # end to end: a tiny ELBERT run trains, sweeps (trace, runner, engine) and predicts
    from jaxit.configs import tiny_config
    from jaxit.inference.predictor import load_predictor
    from jaxit.sweep import sweep_checkpoint
    from jaxit.train.loop import train

    c = tiny_config()
    c.method.name = "elbert"
    train(c, tmp_path / "run")
    report = sweep_checkpoint(c, tmp_path / "run", policies=["elbert"], wallclock_examples=4,
                              batch_size=0)
    op = report["operating_points"]["elbert"]
    assert op["wallclock"]["avg_exit_layer"] >= 1.0  # the batch-1 runner ran it too
    # the batched engine (through the predictor, at the sweep's point) = the simulated exits
    from jaxit.data import get_task
    from jaxit.train.pipeline import load_split

    dev = load_split(c, get_task("synthetic"), "dev", 0)
    res = load_predictor(tmp_path / "run").predict([e.text_a for e in dev],
                                                   labels=[e.label for e in dev])
    assert res.summary["accuracy"] == pytest.approx(op["accuracy"])
    assert res.summary["avg_exit_layer"] == pytest.approx(op["avg_exit_layer"], abs=1e-4)
