"""The training job: data, model, method, optimizer, checkpoints, evaluation.

`train(config, workdir)` is what `jaxit train` runs. It resumes from the latest checkpoint
in `workdir` (same config: same batches, same dropout keys, same result as a run that was
never interrupted), evaluates on the dev split, and keeps the best checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.train import sharding
from jaxit.train.checkpoint import Checkpoints, resolved_paths, shapes_digest, workdir_path
from jaxit.train.optim import make_optimizer
from jaxit.train.pipeline import Setup, build_setup
from jaxit.train.state import TrainState, init_state
from jaxit.train.step import make_update_fn
from jaxit.train.writer import MetricWriter

log = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient norm; the run stopped there."""


def guarded_update(update):
    """`update(state, batch)` -> `(state, metrics)` made `(state, batch, first_bad)` ->
    `(state, metrics, first_bad)`: `first_bad` (int32 scalar on device, -1 = none) becomes
    the first step whose loss or gradient norm is not finite. It stays on the device, so the
    check costs no host sync per step; the loop reads it where it syncs anyway (log, eval
    and save steps) and stops before anything is evaluated, logged or saved."""

    def step(state, batch, first_bad):
        new, m = update(state, batch)
        ok = jnp.isfinite(m["loss"]) & jnp.isfinite(m["grad_norm"])
        first_bad = jnp.where((first_bad < 0) & ~ok, new.step, first_bad)
        return new, m, first_bad

    return step


def evaluate(setup: Setup, params, mesh=None) -> dict:
    """Task metrics of `method.predict` on the dev split (each example counted once)."""
    from jaxit.data import compute_metrics

    predict = setup.predict_fn
    preds, labels = [], []
    for batch, valid in setup.eval_batches(sort_by_length=True):
        b = batch if mesh is None else sharding.shard_batch(batch, mesh)
        out = np.asarray(jax.device_get(predict(params, b._replace(labels=None))))
        keep = np.asarray(valid, bool)
        preds.append(out[keep])
        labels.append(np.asarray(batch.labels)[keep])
    preds = np.concatenate(preds)
    labels = np.concatenate(labels)
    if not setup.method.is_regression:
        preds = preds.argmax(-1)
    return compute_metrics(setup.task, preds, labels)


def run_meta(config, setup: Setup, state: TrainState) -> dict:
    return {
        "model": str(config.model), "task": setup.task.name, "method": config.method.name,
        "params_digest": shapes_digest(state.params), "opt_digest": shapes_digest(state.opt_state),
        "config": json.loads(config.to_json_best_effort()),
    }


def train(config, workdir: str | Path, max_steps_this_run: int | None = None,
          setup: Setup | None = None) -> dict[str, Any]:
    """Trains (or resumes); returns (result, final TrainState), result = {"step",
    "num_steps", "dev": metrics, "best_step", "workdir"} (also written to result.json).

    `max_steps_this_run` stops after that many updates in this call (a checkpoint is saved),
    so a later call resumes: the pre-emption path, and how the resume test interrupts.
    """
    workdir = workdir_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = resolved_paths(config)  # hparams/meta name local paths absolutely
    setup = setup or build_setup(config)
    method, task = setup.method, setup.task
    num_steps = setup.num_steps
    mesh = sharding.data_mesh(config.num_devices or None)
    sharding.check_batch_size(config.train.batch_size, mesh)

    params = method.init(jax.random.PRNGKey(config.train.seed + 1), setup.encoder_params)
    if config.get("init_from"):
        from jaxit.train.init_from import init_from_run

        params = init_from_run(params, config.init_from,
                               config.get("init_from_checkpoint") or "best")
    tx, labels = make_optimizer(config.train, method, params, num_steps)
    state = init_state(params, tx, config.train.seed)
    best_metric = config.best_metric or task.metrics[0]
    ckpts = Checkpoints(workdir, keep=config.keep_checkpoints, best_metric=best_metric,
                        best_mode="max", keep_best=int(config.get("keep_best", 1) or 1))
    meta = run_meta(config, setup, state)
    restored = ckpts.restore(state, meta)
    if restored is not None:
        state = restored
        log.info("resumed from %s at step %d", workdir, int(state.step))
        print(f"resumed from step {int(state.step)} in {workdir}")
    state = sharding.replicate(state, mesh)
    update = jax.jit(guarded_update(make_update_fn(method, tx, labels)), donate_argnums=0)

    writer = MetricWriter(workdir, resume_step=int(state.step))
    writer.write_hparams(meta["config"])
    eval_every = config.eval_every or setup.steps_per_epoch
    start = int(state.step)
    stop = num_steps if max_steps_this_run is None else min(num_steps, start + max_steps_this_run)
    dev: dict = {}
    bar = _progress(config.progress and stop > start, start, num_steps)
    t0, seen, acc = time.perf_counter(), 0, []
    first_bad = sharding.replicate(jnp.asarray(-1, jnp.int32), mesh)  # as the step returns it

    def check_finite(done):
        bad = int(first_bad)
        if bad >= 0:
            _diverged(bad, acc, done, ckpts, writer)

    for step, batch in setup.train_batches(start, stop):
        state, m, first_bad = update(state, sharding.shard_batch(batch, mesh), first_bad)
        acc.append(m)
        seen += batch.input_ids.shape[0]
        done = step + 1
        is_eval = done % eval_every == 0 or done == num_steps
        is_save = is_eval or done % config.save_every == 0 or done == stop
        is_log = done % config.log_every == 0 or done == stop
        if is_log or is_save:
            check_finite(done)
        if is_log:
            m = jax.device_get(jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *acc))
            if not all(math.isfinite(float(v)) for v in m.values()):
                _diverged(None, acc, done, ckpts, writer)
            rate = seen / (time.perf_counter() - t0)
            writer.write_scalars(done, {**{f"train/{k}": v for k, v in m.items()},
                                        "train/examples_per_s": rate})
            if bar is not None:
                bar.set_postfix(loss=f"{float(m['loss']):.4f}", ex_s=f"{rate:.0f}")
            acc = []
        if bar is not None:
            bar.update(1)
        if is_eval:
            dev = evaluate(setup, state.params, mesh)
            writer.write_scalars(done, {f"dev/{k}": v for k, v in dev.items()})
            log.info("step %d dev %s", done, dev)
            if bar is not None:
                bar.write(f"step {done}: dev " + ", ".join(f"{k}={v:.4f}" for k, v in dev.items()))
        if is_save:
            ckpts.save(done, jax.device_get(state), meta, dev if is_eval else None)
    if bar is not None:
        bar.close()
    ckpts.wait()
    writer.close()
    if not dev and int(state.step) >= num_steps:
        dev = evaluate(setup, state.params, mesh)
    result = {"step": int(state.step), "num_steps": num_steps, "dev": dev,
              "best_step": ckpts.best_step(), "workdir": str(workdir)}
    ckpts.close()
    if jax.process_index() == 0:
        (workdir / "result.json").write_text(json.dumps(result, indent=2, default=float))
    return result, state


def _diverged(bad_step, acc, done, ckpts, writer):
    """Stops a run whose loss or gradient norm went non-finite at `bad_step` (None: some
    other training metric, between the last log step and `done`): pending saves (all of
    finite states) finish, nothing more is written, and DivergenceError names the step."""
    ckpts.wait()
    writer.close()
    latest = ckpts.latest_step()
    if bad_step is not None:
        m = jax.device_get(acc[bad_step - done - 1]) if 0 < done - bad_step + 1 <= len(acc) else {}
        what = (f"loss={float(m['loss']):.4g}, grad_norm={float(m['grad_norm']):.4g}"
                if m else "loss or gradient norm")
        where = f"at step {bad_step} ({what})"
    else:
        where = f"in the training metrics of steps {done - len(acc) + 1}..{done}"
    ckpts.close()
    raise DivergenceError(
        f"training diverged: non-finite values {where}; stopped. The latest checkpoint "
        + (f"(step {latest}) is the last good one" if latest is not None else "is none: no "
           "step was saved") + "; lower train.learning_rate or check the data")


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
