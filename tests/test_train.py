"""Training pipeline: smoke run, resume equality, sharded vs single device, bad inputs,
and a real fine-tuning run of MiniLM-L6 on a slice of SST-2."""

import jax
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.train.checkpoint import IncompatibleCheckpointError
from jaxit.train.loop import train
from jaxit.train.writer import read_metrics

pytestmark = pytest.mark.standard_promotion


def _leaves_close(a, b, atol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_two_step_smoke(tmp_path):
    c = tiny_config()
    c.train.num_steps = 2
    c.eval_every = 2
    c.log_every = 1
    result, state = train(c, tmp_path / "run")
    assert result["step"] == 2 and int(state.step) == 2
    assert 0.0 <= result["dev"]["accuracy"] <= 1.0
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
    assert (tmp_path / "run" / "result.json").is_file()


def test_resume_equals_uninterrupted(tmp_path):
    c = tiny_config()
    full, full_state = train(c, tmp_path / "full")
    part, _ = train(c, tmp_path / "resumed", max_steps_this_run=3)
    assert part["step"] == 3
    resumed, resumed_state = train(c, tmp_path / "resumed")
    assert resumed["step"] == full["step"] == c.train.num_steps
    _leaves_close(full_state.params, resumed_state.params)
    _leaves_close(full_state.opt_state, resumed_state.opt_state)
    assert resumed["dev"] == full["dev"]
    assert resumed["best_step"] == full["best_step"]


def test_sharded_matches_single_device(tmp_path):
    assert jax.device_count() >= 4, "conftest should provide 4 fake CPU devices"
    c1 = tiny_config()
    c1.num_devices = 1
    c4 = tiny_config()
    c4.num_devices = 4
    _r1, s1 = train(c1, tmp_path / "one")
    _r4, s4 = train(c4, tmp_path / "four")
    _leaves_close(s1.params, s4.params, atol=1e-5)
    l1 = [r["train/loss"] for r in read_metrics(tmp_path / "one") if "train/loss" in r]
    l4 = [r["train/loss"] for r in read_metrics(tmp_path / "four") if "train/loss" in r]
    np.testing.assert_allclose(l1, l4, rtol=1e-5)


def test_batch_not_divisible_by_devices(tmp_path):
    c = tiny_config()
    c.num_devices = 4
    c.train.batch_size = 6
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        train(c, tmp_path / "run")


def test_workdir_with_incompatible_checkpoint(tmp_path):
    c = tiny_config()
    c.train.num_steps = 2
    train(c, tmp_path / "run")
    other = tiny_config()
    other.train.num_steps = 2
    other.random_encoder.hidden_size = 48
    with pytest.raises(IncompatibleCheckpointError, match="different run.*params_digest"):
        train(other, tmp_path / "run")


def test_same_model_dir_by_another_path_resumes(tmp_path, monkeypatch):
    """A checkpoint whose meta names the model by a relative path restores under an
    absolute path to the same directory; another directory is still a different run."""
    from jaxit.train.checkpoint import Checkpoints

    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "other").mkdir()
    monkeypatch.chdir(tmp_path / "models")
    state = {"w": np.arange(3, dtype=np.float32)}
    ckpts = Checkpoints(tmp_path / "run")
    ckpts.save(1, state, {"model": "../models/m", "task": "t"})
    ckpts.wait()
    got = ckpts.restore(state, {"model": str(tmp_path / "models" / "m"), "task": "t"})
    np.testing.assert_array_equal(got["w"], state["w"])
    with pytest.raises(IncompatibleCheckpointError, match="model: checkpoint has '../models/m'"):
        ckpts.restore(state, {"model": str(tmp_path / "models" / "other"), "task": "t"})
    with pytest.raises(IncompatibleCheckpointError, match="task"):
        ckpts.restore(state, {"model": "../models/m", "task": "u"})


def test_unknown_task_and_method(tmp_path):
    c = tiny_config()
    c.task = "no_such_task"
    with pytest.raises(ValueError, match="no_such_task"):
        train(c, tmp_path / "a")
    c = tiny_config()
    c.method.name = "no_such_method"
    with pytest.raises(ValueError, match="unknown method 'no_such_method'"):
        train(c, tmp_path / "b")


def test_updates_lower_the_loss_on_a_fixed_batch():
    """A few jitted updates on one batch lower that batch's loss (same dropout key before and
    after): the step descends, for the plain and the multi-exit method."""
    from jaxit.train.optim import make_optimizer
    from jaxit.train.pipeline import build_setup
    from jaxit.train.state import init_state
    from jaxit.train.step import make_update_fn

    for name in ("finetune", "berxit"):
        c = tiny_config()
        c.method.name = name
        c.train.num_steps = 40
        c.train.warmup_fraction = 0.0
        c.train.learning_rate = 5e-3
        setup = build_setup(c)
        params = setup.method.init(jax.random.PRNGKey(1), setup.encoder_params)
        tx, labels = make_optimizer(c.train, setup.method, params, setup.num_steps)
        state = init_state(params, tx, 0)
        _, batch = next(iter(setup.train_batches(0, 1)))
        key = jax.random.PRNGKey(7)
        before = float(setup.method.loss(params, batch, key, 0)[0])
        update = jax.jit(make_update_fn(setup.method, tx, labels))
        for _ in range(4):
            state, m = update(state, batch)
            assert np.isfinite(float(m["loss"]))
        after = float(setup.method.loss(state.params, batch, key, 0)[0])
        assert after < before - 0.005, (name, before, after)  # a no-op or ascent fails
