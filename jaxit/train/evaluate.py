"""Evaluate a trained run's checkpoint on its dev split."""

from __future__ import annotations

import json

import jax

from jaxit.train.checkpoint import Checkpoints, workdir_path
from jaxit.train.loop import evaluate, run_meta
from jaxit.train.optim import make_optimizer
from jaxit.train.pipeline import build_setup
from jaxit.train.state import init_state


def restore_params(config, workdir, which: str = "best", setup=None):
    """(setup, params) of the best or latest checkpoint in `workdir`."""
    setup = setup or build_setup(config)
    params = setup.method.init(jax.random.PRNGKey(config.train.seed + 1), setup.encoder_params)
    tx, _ = make_optimizer(config.train, setup.method, params, setup.num_steps)
    state = init_state(params, tx, config.train.seed)
    best_metric = config.best_metric or setup.task.metrics[0]
    ckpts = Checkpoints(workdir, best_metric=best_metric)
    restored = ckpts.restore(state, run_meta(config, setup, state), which=which)
    ckpts.close()
    if restored is None:
        raise FileNotFoundError(f"no {which} checkpoint in {workdir}: train first")
    return setup, restored.params


def evaluate_checkpoint(config, workdir, which: str = "best") -> dict:
    setup, params = restore_params(config, workdir, which)
    metrics = evaluate(setup, params)
    out = workdir_path(workdir) / f"eval_{which}.json"
    out.write_text(json.dumps(metrics, indent=2, default=float))
    return metrics
