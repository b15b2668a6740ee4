"""Which checkpoint is "best": `best/` holds the step(s) with the highest dev score of
`best_metric`, `keep_best` of them, with that step's params; "latest" is the last step.

The dev scores are scripted (the tiny model's real accuracy is flat over a few steps), so
the choice among unequal scores is what the test exercises; every task metric in
`jaxit.metrics.METRICS` is higher-is-better, so the mode is max."""

import os

import jax
import numpy as np
import pytest

from jaxit.configs import tiny_config
from jaxit.inference.trained_run import load_trained_run
from jaxit.train import loop
from jaxit.train.evaluate import restore_params

pytestmark = pytest.mark.standard_promotion

# dev scores at steps 2, 4, 6, 8: best is step 4, second best step 6
SCRIPT = {"accuracy": [0.50, 0.90, 0.70, 0.60], "f1": [0.80, 0.10, 0.20, 0.30]}


def _scripted(monkeypatch):
    calls = []

    def fake_evaluate(setup, params, mesh=None):
        i = len(calls)
        calls.append(i)
        return {k: v[i] for k, v in SCRIPT.items()}

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    return calls


def _config(keep_best=1, best_metric=""):
    c = tiny_config()
    c.train.num_steps = 8
    c.eval_every = 2
    c.save_every = 2
    c.keep_checkpoints = 4
    c.keep_best = keep_best
    c.best_metric = best_metric
    return c


def _params_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _params_differ(a, b):
    assert any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("keep_best,best_metric,want", [
    (1, "", [4]),  # the task's primary metric (accuracy)
    (2, "", [4, 6]),
    (1, "f1", [2]),  # best_metric is honoured
])
def test_best_holds_the_highest_scoring_steps(tmp_path, monkeypatch, keep_best, best_metric,
                                              want):
    calls = _scripted(monkeypatch)
    config = _config(keep_best, best_metric)
    result, state = loop.train(config, tmp_path)
    assert len(calls) == 4
    assert sorted(int(s) for s in os.listdir(tmp_path / "best")) == want
    assert result["best_step"] == want[0]
    best = load_trained_run(tmp_path, "best")
    _params_equal(best.params, load_trained_run(tmp_path, want[0]).params)
    _params_differ(best.params, state.params)  # so the check above is not vacuous
    latest = load_trained_run(tmp_path, "latest")
    _params_equal(latest.params, state.params)
    assert latest.step == 8
    # `jaxit eval --checkpoint=best|latest` restores the same params
    _params_equal(restore_params(config, tmp_path, "best")[1], best.params)
    _params_equal(restore_params(config, tmp_path, "latest")[1], state.params)

