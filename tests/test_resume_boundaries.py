"""Issue #17 item 14: resuming at the edges `tests/test_train.py::test_resume_equals_uninterrupted`
(step 3 of one epoch, same devices) does not reach: (a) across epoch boundaries, where the
per-epoch reshuffle must come from (seed, epoch) so the resumed run sees the same batches;
(b) on a different number of data-parallel devices (the sharded state restored onto
another mesh)."""

import jax
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.train.loop import train
from jaxit.train.pipeline import Setup
from jaxit.train.writer import read_metrics

pytestmark = pytest.mark.standard_promotion

TRAIN, BATCH = 64, 16  # 4 steps per epoch, no remainder: each epoch visits every example
STEPS = 10  # epochs 0 and 1, then half of epoch 2


def _config(num_devices):
    c = tiny_config()
    c.data.synthetic_train, c.data.synthetic_dev = TRAIN, 32
    c.data.max_length, c.data.buckets = 16, (16,)  # one shape: one compile per run
    c.train.batch_size, c.train.num_steps = BATCH, STEPS
    c.eval_every = c.save_every = 1000  # a checkpoint at each stop, one dev eval at the end
    c.log_every = 1
    c.num_devices = num_devices
    return c


@pytest.fixture
def seen(monkeypatch):
    """Every (step, input_ids) the training loop takes from `Setup.train_batches`."""
    rows = []
    real = Setup.train_batches

    def recording(self, start, stop):
        for step, batch in real(self, start, stop):
            rows.append((step, np.asarray(batch.input_ids).copy()))
            yield step, batch

    monkeypatch.setattr(Setup, "train_batches", recording)
    return rows


def _assert_trees_equal(a, b, atol=0.0):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def _rows(ids):
    """The rows of a [B, T] batch as a sorted list of tuples (a multiset of examples)."""
    return sorted(map(tuple, np.asarray(ids).tolist()))


def test_resume_across_epoch_boundaries(tmp_path, seen, capsys):
    c = _config(1)
    full, full_state = train(c, tmp_path / "full")
    full_seen = list(seen)
    assert [s for s, _ in full_seen] == list(range(STEPS))
    spe = TRAIN // BATCH
    epochs = [np.concatenate([ids for s, ids in full_seen if s // spe == e]) for e in range(3)]
    # each full epoch is the whole training set once, and each epoch is reshuffled
    assert _rows(epochs[0]) == _rows(epochs[1])
    for a, b in ((0, 1), (0, 2), (1, 2)):
        n = len(epochs[max(a, b)])
        assert not np.array_equal(epochs[a][:n], epochs[b]), \
            f"epoch {b} repeats epoch {a}'s batches: the reshuffle ignores the epoch"

    # stop exactly at the end of epoch 1 (step 4), then in the middle of epoch 2 (step 6),
    # then run to the end through the start of epoch 3 (step 8)
    seen.clear()
    wd = tmp_path / "resumed"
    for k, expect in ((4, 4), (2, 6), (None, STEPS)):
        result, state = train(c, wd, max_steps_this_run=k)
        assert result["step"] == int(state.step) == expect
    assert "resumed from step 4" in capsys.readouterr().out
    assert [s for s, _ in seen] == list(range(STEPS))  # no step twice, none skipped
    for (s, a), (_, b) in zip(seen, full_seen):
        np.testing.assert_array_equal(a, b, err_msg=f"step {s}: not the uninterrupted batch")
    _assert_trees_equal(full_state.params, state.params)
    _assert_trees_equal(full_state.opt_state, state.opt_state)
    assert result["dev"] == full["dev"]
    losses = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "full")
              if "train/loss" in r}
    assert {r["step"]: r["train/loss"] for r in read_metrics(wd) if "train/loss" in r} == losses


def test_resume_on_a_different_device_count(tmp_path):
    assert jax.device_count() >= 4, "conftest should provide 4 fake CPU devices"
    full, full_state = train(_config(2), tmp_path / "full")
    wd = tmp_path / "resumed"
    part, part_state = train(_config(2), wd, max_steps_this_run=6)  # mid-epoch 2
    assert part["step"] == 6
    part_params = jax.device_get(part_state.params)
    result, state = train(_config(4), wd)  # restored onto a 4-device mesh
    assert result["step"] == int(state.step) == STEPS
    for leaf in jax.tree.leaves(state):
        assert len(leaf.sharding.device_set) == 4, leaf.sharding
    # data-parallel sums over 2 or 4 shards differ in rounding only
    _assert_trees_equal(full_state.params, state.params, atol=1e-5)
    _assert_trees_equal(full_state.opt_state, state.opt_state, atol=1e-5)
    # ... and steps 7-10 moved the params far more than that tolerance (~1e-3)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(part_params)))
    assert moved > 2e-4
    rows = [r for r in read_metrics(wd) if "train/loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    full_rows = [r for r in read_metrics(tmp_path / "full") if "train/loss" in r]
    np.testing.assert_allclose([r["train/loss"] for r in rows],
                               [r["train/loss"] for r in full_rows], rtol=1e-5)
    assert result["dev"] == pytest.approx(full["dev"], abs=1e-6)
