"""Starting a run from another run's trained params (multi-phase methods: DACT's stage 2 and
AdapLeR's length-reduction phase start from a fine-tuned backbone)."""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxit.train.checkpoint import workdir_path


def load_run_params(workdir, which: str | int = "best") -> dict:
    """The params of a run's best or latest checkpoint, or of the one saved at step `which`
    (an int or a string of digits, from checkpoints/ or best/), as saved (no target
    structure). A run that keeps no best checkpoint falls back to its latest one."""
    root = workdir_path(workdir)
    if isinstance(which, int) or str(which).isdigit():
        step = int(which)
        for name in ("checkpoints", "best"):
            if (root / name / str(step)).is_dir():
                return _restore_params(root / name, step)
        saved = sorted({int(d.name) for name in ("checkpoints", "best") if (root / name).is_dir()
                        for d in (root / name).iterdir() if d.name.isdigit()})
        raise FileNotFoundError(f"{root} has no checkpoint at step {step} (saved steps: "
                                f"{saved or 'none'})")
    if which not in ("best", "latest"):
        raise ValueError(f"checkpoint must be best, latest or a step number, got {which!r}")
    folder = root / ("best" if which == "best" else "checkpoints")
    if which == "best" and not folder.exists():
        folder = root / "checkpoints"
    if not folder.exists():
        raise FileNotFoundError(f"{root} has no {which} checkpoint ({folder} is missing): "
                                "train that run first")
    step = best_step(root) if which == "best" and folder.name == "best" else None
    if step is None:
        mngr = ocp.CheckpointManager(folder, item_names=("state", "meta"))
        try:
            step = mngr.latest_step()
        finally:
            mngr.close()
    if step is None:
        raise FileNotFoundError(f"{root}: no checkpoint under {folder}")
    return _restore_params(folder, step)


def best_step(workdir) -> int | None:
    """The step in `workdir/best/` with the highest dev score of the run's `best_metric`
    (the task's primary metric when unset), from the metrics orbax saved with each step;
    None when the run keeps no best checkpoint. (An orbax manager opened without the run's
    `best_fn` answers `best_step()` with its latest step: with `keep_best` > 1 that is not
    the best.)"""
    root = workdir_path(workdir)
    folder = root / "best"
    if not folder.is_dir():
        return None
    from jaxit.configs import config_from_run
    from jaxit.data.custom import task_for_config

    config = config_from_run(root)
    metric = config.get("best_metric") or task_for_config(config).metrics[0]
    mngr = ocp.CheckpointManager(folder, item_names=("state", "meta"))
    try:
        scores = {s: (mngr.metrics(s) or {}).get(metric) for s in mngr.all_steps()}
    finally:
        mngr.close()
    scores = {s: v for s, v in scores.items() if v is not None}
    if not scores:
        return None
    return max(scores, key=lambda s: (scores[s], s))  # of equal scores, the later one


def _restore_params(folder, step: int) -> dict:
    mngr = ocp.CheckpointManager(folder, item_names=("state", "meta"))
    try:
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
        mngr.close()
    return state["state"]["params"]


def _shapes(tree) -> dict:
    return {jax.tree_util.keystr(p): np.shape(x) for p, x in
            jax.tree_util.tree_leaves_with_path(tree)}


def transfer_params(params: dict, source: dict) -> tuple[dict, list[str]]:
    """`params` with the encoder replaced by `source["encoder"]` (every key and shape must
    match) and every head sub-tree of `source["heads"]` whose keys and shapes match copied
    over (e.g. a fine-tuned run's "final" head). Returns (params, names of copied heads)."""
    src_enc, dst_enc = _shapes(source.get("encoder", {})), _shapes(params["encoder"])
    if src_enc != dst_enc:
        missing = sorted(set(dst_enc) - set(src_enc))
        extra = sorted(set(src_enc) - set(dst_enc))
        bad = sorted(k for k in set(src_enc) & set(dst_enc) if src_enc[k] != dst_enc[k])
        raise ValueError(
            "init_from: the source run's encoder does not match this run's: "
            + "; ".join(s for s in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {extra[:5]}" if extra else "",
                "shape mismatch " + ", ".join(f"{k}: {src_enc[k]} vs {dst_enc[k]}"
                                              for k in bad[:5]) if bad else "") if s))
    out = {**params, "encoder": jax.tree.map(np.asarray, source["encoder"])}
    heads, copied = dict(params["heads"]), []
    for name, sub in source.get("heads", {}).items():
        if name in heads and _shapes(sub) == _shapes(heads[name]):
            heads[name] = jax.tree.map(np.asarray, sub)
            copied.append(name)
    out["heads"] = heads
    return out, copied


def init_from_run(params: dict, workdir, which: str = "best") -> dict:
    """`transfer_params` from the run in `workdir`; prints what it took."""
    new, copied = transfer_params(params, load_run_params(workdir, which))
    print(f"init_from {workdir} ({which}): encoder" + "".join(f", heads/{c}" for c in copied))
    return new
