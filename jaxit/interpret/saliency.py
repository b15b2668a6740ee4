"""Gradient x input saliency at the embedding layer: AdapLeR's phase 2 (seed 002 eq. 2, §3.3).

    S_i = || ∂y_c / ∂h_i^0  ⊙  h_i^0 ||_2

h^0 = the embedding layer's output ([B, T, D], after its LayerNorm: the authors' code takes
`hidden_states[0]`), y_c = the logit of the gold class c of the model's final head. Examples
do not interact in an encoder, so one gradient of Σ_b y_{c_b} gives every example's own.

Phase 2 averages S over the k best checkpoints (by the run's dev metric) of a fine-tuning
run (the paper: three). Saliencies are stored UNNORMALISED, per split, one file per split:

    <out>/<split>.npz               the average over the selected checkpoints
    <out>/ckpt_<step>/<split>.npz   one checkpoint's (kept, so a rerun skips finished work)

Each file holds `guids` [N] str, `lengths` [N] int32, `values` float32 (the N examples'
saliencies concatenated, [CLS] ... [SEP]), `meta` (JSON: task, split, max_length, the source
run, its checkpoint steps and dev metrics). AdapLeR normalises over each example's real
tokens at loss time and matches examples by guid (`attach_saliency`), so a file made for the
full split serves any seeded subset of it.

    python -m jaxit.interpret.saliency --run=runs/sst2_ft --out=runs/sst2_ft/saliency \\
        [--splits=train] [--top_k=3] [--max_examples=N] [--max_length=64]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxit.batch import Batch
from jaxit.encoders.transformer import Encoder, mask_bias_from
from jaxit.heads import head_outputs

# ----------------------------------------------------------------------------- the math


def forward_from_embeddings(encoder: Encoder, params: dict, hidden0: jnp.ndarray,
                            attention_mask: jnp.ndarray, head: str = "final",
                            pooling: str = "cls") -> jnp.ndarray:
    """All layers from the embedding output h^0 [B, T, D], then heads[head] on the pooled
    last layer ([CLS], or the mean of the real tokens: the run's `method.pooling`):
    logits [B, C] (no dropout)."""
    cfg = encoder.config
    enc = params["encoder"]
    bias = mask_bias_from(jnp.asarray(attention_mask), jnp.float32)

    def step(h, lp):
        lp = enc["layers"] if lp is None else lp
        return encoder.block(lp, h, bias), None

    stacked = None if cfg.shared_layers else enc["layers"]
    h, _ = jax.lax.scan(step, hidden0, stacked, length=cfg.num_layers)
    logits, _ = head_outputs(params["heads"][head], h, jnp.asarray(attention_mask), pooling)
    return logits


def embedding_saliency(encoder: Encoder, params: dict, batch: Batch,
                       head: str = "final", pooling: str = "cls") -> jnp.ndarray:
    """Eq. 2: ||∂y_c/∂h^0_i ⊙ h^0_i||_2 per token for the gold class c = batch.labels.
    Returns [B, T] float32, 0 on padding."""
    if batch.labels is None:
        raise ValueError("saliency needs the gold labels (batch.labels is None)")
    labels = jnp.asarray(batch.labels).astype(jnp.int32)
    chex.assert_shape(labels, (batch.input_ids.shape[0],))
    h0 = encoder.embed(params["encoder"], batch)

    def gold_logits(h):
        logits = forward_from_embeddings(encoder, params, h, batch.attention_mask, head,
                                         pooling)
        return jnp.take_along_axis(logits.astype(jnp.float32), labels[:, None], axis=-1).sum()

    grad = jax.grad(gold_logits)(h0)
    s = jnp.sqrt(jnp.sum(jnp.square((grad * h0).astype(jnp.float32)), axis=-1))
    return s * jnp.asarray(batch.attention_mask, jnp.float32)


# ----------------------------------------------------------------------------- files
# (in the data layer, where the AdapLeR method reads them; re-exported here)
from jaxit.data.saliency_files import (
    attach_saliency,
    load_saliency,
    saliency_path,
    save_saliency,
)

__all__ = ["attach_saliency", "load_saliency", "saliency_path", "save_saliency"]


def average_saliencies(per_checkpoint: Sequence[tuple[list[str], list[np.ndarray]]]):
    """Element-wise mean of raw saliencies of the same examples (same guids and lengths)."""
    if not per_checkpoint:
        raise ValueError("no checkpoints to average")
    guids0, vals0 = per_checkpoint[0]
    for guids, vals in per_checkpoint[1:]:
        if guids != guids0 or any(len(a) != len(b) for a, b in zip(vals, vals0)):
            raise ValueError("checkpoint saliencies cover different examples; delete the "
                             "ckpt_* folders and extract again")
    k = len(per_checkpoint)
    return guids0, [sum(v[i] for _, v in per_checkpoint) / np.float32(k)
                    for i in range(len(guids0))]


# ----------------------------------------------------------------------------- a run


def checkpoint_scores(run_dir, metric: str | None = None) -> dict[int, float]:
    """{step: dev metric} for every checkpoint kept in a run (best/ and checkpoints/), the
    metric read from the run's metrics.jsonl (NaN where that step was not evaluated)."""
    run = Path(run_dir)
    steps = set()
    for folder in ("best", "checkpoints"):
        d = run / folder
        if d.is_dir():
            steps |= {int(p.name) for p in d.iterdir() if p.name.isdigit()}
    if not steps:
        raise FileNotFoundError(f"{run} has no checkpoints (best/ or checkpoints/): run phase "
                                "1 (fine-tuning) first")
    dev: dict[int, dict] = {}
    log = run / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            if any(k.startswith("dev/") for k in row):
                dev.setdefault(int(row["step"]), {}).update(row)
    out = {}
    for s in sorted(steps):
        row = dev.get(s, {})
        if metric is None:
            keys = [k for k in row if k.startswith("dev/")]
            metric_key = keys[0] if keys else None
        else:
            metric_key = f"dev/{metric}"
        out[s] = float(row.get(metric_key, math.nan)) if metric_key else math.nan
    return out


def select_checkpoints(scores: dict[int, float], top_k: int) -> list[int]:
    """The top_k steps by dev metric (unevaluated steps last; ties: later step first)."""
    order = sorted(scores, key=lambda s: (not math.isnan(scores[s]),
                                          scores[s] if not math.isnan(scores[s]) else 0.0, s),
                   reverse=True)
    return sorted(order[:top_k])


def restore_step_params(run_dir, step: int) -> dict:
    """The params saved at `step` (from checkpoints/ or best/), as saved."""
    from jaxit.train.init_from import load_run_params

    return load_run_params(run_dir, int(step))


def _dataset(config, split: str, max_examples: int):
    from jaxit.data import tokenize_examples
    from jaxit.data.custom import task_for_config
    from jaxit.train.pipeline import load_encoder, load_run_tokenizer, load_split

    task = task_for_config(config)
    if task.is_regression:
        raise ValueError(f"saliency needs a gold class; {task.name} is a regression task")
    tok = load_run_tokenizer(config)
    enc_cfg, _ = load_encoder(config, tok.get_vocab_size())
    examples = load_split(config, task, split, max_examples)
    return task, enc_cfg, tokenize_examples(tok, task, examples, config.data.max_length)


def extract_saliencies(run_dir, out_dir, splits: Sequence[str] = ("train",), top_k: int = 3,
                       max_examples: int = 0, max_length: int = 0, batch_size: int = 64,
                       seed: int | None = None, progress: bool = True) -> dict:
    """Phase 2 for a fine-tuned run: per split, saliencies of the top_k checkpoints (by the
    run's dev metric), averaged, written under out_dir. Resumable: finished per-checkpoint
    files are reused. max_examples/seed pick the same seeded subset as the training
    config's data.max_train_examples/train.seed (0 = the whole split); max_length
    overrides the run's data.max_length. A per-checkpoint file that already covers the
    requested examples (e.g. made for a larger subset) is reused. Returns a summary dict."""
    from jaxit.configs import config_from_run
    from jaxit.data import eval_batches
    from jaxit.encoders.transformer import make_encoder
    from jaxit.train.pipeline import _buckets

    config = config_from_run(run_dir)
    if max_length:
        config.data.max_length = int(max_length)
    if seed is not None:
        config.train.seed = int(seed)
    scores = checkpoint_scores(run_dir, config.get("best_metric") or None)
    steps = select_checkpoints(scores, top_k)
    summary = {"run": str(Path(run_dir).resolve()), "steps": steps,
               "dev": {s: scores[s] for s in steps}, "splits": {}}
    if len(steps) < top_k:
        print(f"saliency: {run_dir} keeps only {len(steps)} checkpoint(s) ({steps}); averaging "
              f"those instead of {top_k}")
    for split in splits:
        task, enc_cfg, ds = _dataset(config, split, max_examples)
        encoder = make_encoder(enc_cfg)
        fn = jax.jit(functools.partial(embedding_saliency, encoder,
                                       pooling=config.method.get("pooling") or "cls"))
        meta = {"task": task.name, "split": split, "max_length": int(config.data.max_length),
                "num_examples": len(ds), "run": summary["run"], "normalised": False}
        per_ckpt = []
        for step in steps:
            path = saliency_path(out_dir, split, step)
            if path.exists():  # reuse a finished file that covers these examples
                by_guid = dict(zip(*load_saliency(path)[:2]))
                have = [by_guid.get(g) for g in ds.guids]
                if all(v is not None and len(v) == n for v, n in zip(have, ds.lengths)):
                    per_ckpt.append((list(ds.guids), have))
                    continue
            params = jax.device_put(restore_step_params(run_dir, step))
            values: list[np.ndarray] = [None] * len(ds)  # type: ignore[list-item]
            batches = eval_batches(ds, batch_size, buckets=_buckets(config),
                                   pad_id=enc_cfg.pad_token_id, sort_by_length=True,
                                   return_index=True)
            bar = _bar(progress, math.ceil(len(ds) / batch_size), f"saliency {split} @{step}")
            for batch, valid, index in batches:
                s = np.asarray(jax.device_get(fn(params, batch)))
                for r in np.flatnonzero(valid):
                    i = int(index[r])
                    values[i] = s[r, :ds.lengths[i]].copy()
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            save_saliency(path, ds.guids, values, {**meta, "steps": [step],
                                                   "dev": {str(step): scores[step]}})
            per_ckpt.append((list(ds.guids), values))
        guids, avg = average_saliencies(per_ckpt)
        save_saliency(saliency_path(out_dir, split), guids, avg,
                      {**meta, "steps": steps, "dev": {str(s): scores[s] for s in steps}})
        summary["splits"][split] = {"num_examples": len(ds),
                                    "path": str(saliency_path(out_dir, split))}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True)


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="AdapLeR phase 2: embedding saliencies of a "
                                "fine-tuned run, averaged over its best checkpoints")
    p.add_argument("--run", required=True, help="the fine-tuned run's workdir")
    p.add_argument("--out", required=True, help="output folder (method.saliency_dir)")
    p.add_argument("--splits", default="train", help="comma-separated splits")
    p.add_argument("--top_k", type=int, default=3, help="checkpoints to average (paper: 3)")
    p.add_argument("--max_examples", type=int, default=0,
                   help="the seeded subset of data.max_train_examples (0 = whole split)")
    p.add_argument("--seed", type=int, default=None, help="subset seed (default: the run's)")
    p.add_argument("--max_length", type=int, default=0, help="override data.max_length")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    summary = extract_saliencies(a.run, a.out, [s for s in a.splits.split(",") if s], a.top_k,
                                 a.max_examples, a.max_length, a.batch_size, a.seed,
                                 not a.no_progress)
    print(json.dumps(summary, indent=2, default=float))
    return summary


if __name__ == "__main__":
    main()
