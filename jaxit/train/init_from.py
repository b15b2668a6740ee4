"""Starting a run from another run's trained params (multi-phase methods: DACT's stage 2 and
AdapLeR's length-reduction phase start from a fine-tuned backbone)."""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxit.train.checkpoint import workdir_path


def load_run_params(workdir, which: str = "best") -> dict:
    """The params of a run's best (or latest) checkpoint, as saved (no target structure)."""
    root = workdir_path(workdir)
    folder = root / ("best" if which == "best" else "checkpoints")
    if not folder.exists():
        raise FileNotFoundError(f"init_from: {root} has no {which} checkpoint ({folder} is "
                                "missing); train that run first")
    mngr = ocp.CheckpointManager(folder, item_names=("state", "meta"))
    try:
        step = mngr.best_step() if which == "best" else mngr.latest_step()
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"init_from: no checkpoint under {folder}")
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
