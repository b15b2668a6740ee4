"""Orbax checkpoints of a run: the latest N for resuming, and the best by a dev metric.

Layout under the workdir: `checkpoints/<step>/{state,meta}` and `best/<step>/{state,meta}`.
`meta` (JSON) records what the run was (model, task, method, param shapes); restoring into a
run whose meta differs raises `IncompatibleCheckpointError` naming the difference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


def workdir_path(workdir) -> epath.Path:
    """Local paths made absolute; `gs://...` (and other epath URLs) kept as they are, so
    checkpoints and metrics of a TPU pod go to one shared bucket."""
    p = epath.Path(workdir)
    return p if "://" in str(workdir) else p.resolve()


# Config fields that may name a local file or directory (made absolute by `resolved_paths`).
PATH_FIELDS = ("model", "tokenizer", "init_from", "method.saliency_dir", "data.data_dir",
               "data.hf_path", "data.train_file", "data.dev_file", "data.test_file")


def resolved_paths(config):
    """A copy of `config` whose PATH_FIELDS that name an existing local path are absolute,
    so the run's hparams.json and checkpoint meta work from any working directory."""
    config = config.copy_and_resolve_references()
    for field in PATH_FIELDS:
        group, _, name = field.rpartition(".")
        node = config[group] if group else config
        value = node.get(name) if (not group or group in config) else None
        if isinstance(value, str) and value and "://" not in value and Path(value).exists():
            node[name] = str(Path(value).resolve())
    return config


class IncompatibleCheckpointError(RuntimeError):
    """The workdir holds a checkpoint of a different run."""


def shapes_digest(tree: Any) -> str:
    """A short hash of a pytree's paths, shapes and dtypes."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    desc = [(jax.tree_util.keystr(p), tuple(np.shape(x)), str(np.asarray(x).dtype)
             if not hasattr(x, "dtype") else str(x.dtype)) for p, x in leaves]
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]


class Checkpoints:
    """Save/restore for one run. `best_metric` (e.g. "accuracy") with `best_mode` max/min."""

    def __init__(self, workdir: str | Path, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max", keep_best: int = 1):
        self.workdir = workdir_path(workdir)
        self.best_metric = best_metric
        item_names = ("state", "meta")
        self.latest = ocp.CheckpointManager(
            self.workdir / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 cleanup_tmp_directories=True),
            item_names=item_names)
        self.best = None
        if best_metric:
            self.best = ocp.CheckpointManager(
                self.workdir / "best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=keep_best, create=True, best_mode=best_mode,
                    cleanup_tmp_directories=True,
                    best_fn=lambda m: float(m[best_metric]),
                    keep_checkpoints_without_metrics=False),
                item_names=item_names)

    def _args(self, state, meta):
        return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))

    def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
        """Saves to `latest`; also to `best` when dev `metrics` are given, first and to the
        end, so a run killed at any moment resumes (from its latest) with every best
        candidate up to there recorded. A step already on disk (a resumed run redoing the
        steps after its latest checkpoint) is not saved again: it holds the same state."""
        if self.best is not None and metrics is not None and self.best_metric in metrics:
            if step not in self.best.all_steps():
                self.best.save(step, args=self._args(state, meta),
                               metrics={k: float(v) for k, v in metrics.items()}, force=True)
            self.best.wait_until_finished()
        if step not in self.latest.all_steps():
            self.latest.save(step, args=self._args(state, meta), force=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return None if self.best is None else self.best.best_step()

    def read_meta(self, step: int | None = None, which: str = "latest") -> dict | None:
        mngr = self.latest if which == "latest" else self.best
        step = mngr.latest_step() if step is None else step
        if step is None:
            return None
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, target_state, meta: dict, step: int | None = None, which: str = "latest"):
        """Restores into the structure/shardings of `target_state`; checks `meta` first.
        Returns None when there is nothing to restore."""
        mngr = self.latest if which == "latest" else self.best
        if mngr is None:
            raise ValueError("this run keeps no best checkpoint (no best_metric)")
        step = (mngr.latest_step() if which == "latest" else mngr.best_step()) if step is None else step
        if step is None:
            return None
        saved = self.read_meta(step, which)
        diffs = {k: (saved.get(k), v) for k, v in meta.items()
                 if k in _COMPAT_KEYS and not _same(k, saved.get(k), v)}
        if diffs:
            raise IncompatibleCheckpointError(
                f"{mngr.directory} holds a checkpoint (step {step}) of a different run: "
                + "; ".join(f"{k}: checkpoint has {a!r}, this run has {b!r}"
                            for k, (a, b) in diffs.items())
                + ". Use a new --workdir, or delete the old checkpoints.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
        restored = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        return restored["state"]

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()


_COMPAT_KEYS = ("model", "task", "method", "params_digest", "opt_digest")


def _same(key: str, saved, current) -> bool:
    """Meta values that name the same run; a model given as two paths to one local
    directory (`../shared/...` vs an absolute path, as JAXIT_SHARED gives) is the same."""
    if saved == current:
        return True
    if key != "model" or not (isinstance(saved, str) and isinstance(current, str)):
        return False
    a, b = Path(saved), Path(current)
    return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()
