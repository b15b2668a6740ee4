"""Saliency files: per-token training targets (AdapLeR's phase-2 saliencies) stored per
split, matched to a dataset by guid. Written by `jaxit.interpret.saliency`, read by the
AdapLeR method's `prepare_data` (layout: that module's docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def saliency_path(out_dir, split: str, step: int | None = None) -> Path:
    d = Path(out_dir)
    return (d / f"ckpt_{step}" if step is not None else d) / f"{split}.npz"


def save_saliency(path, guids: Sequence[str], values: Sequence[np.ndarray], meta: dict) -> None:
    """Writes one saliency file (see the module docstring); atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray([len(v) for v in values], np.int32)
    flat = np.concatenate([np.asarray(v, np.float32) for v in values]) if values else \
        np.zeros((0,), np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, guids=np.asarray(list(guids), dtype=np.str_), lengths=lengths, values=flat,
             meta=np.asarray(json.dumps(meta)))
    tmp.replace(path)


def load_saliency(path) -> tuple[list[str], list[np.ndarray], dict]:
    """(guids, per-example raw saliencies, meta) of one file; clear errors when it is missing
    or inconsistent."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"saliency file {path} not found: run phase 2 first (python -m "
            "jaxit.interpret.saliency --run=<fine-tuned run> --out=<dir> --splits=<split>)")
    with np.load(path, allow_pickle=False) as z:
        guids = [str(g) for g in z["guids"]]
        lengths = z["lengths"].astype(np.int64)
        flat = z["values"].astype(np.float32)
        meta = json.loads(str(z["meta"]))
    if len(lengths) != len(guids) or int(lengths.sum()) != flat.shape[0]:
        raise ValueError(f"{path} is corrupt: {len(guids)} guids, {len(lengths)} lengths, "
                         f"{flat.shape[0]} values for {int(lengths.sum())} tokens")
    if not np.all(np.isfinite(flat)) or np.any(flat < 0):
        raise ValueError(f"{path} holds negative or non-finite saliencies")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = [flat[offsets[i]:offsets[i + 1]] for i in range(len(guids))]
    return guids, values, meta


def attach_saliency(dataset, saliency_dir, split: str):
    """The `EncodedDataset` with its examples' saliencies as `token_targets`, matched by
    guid. Raises when an example has no saliency (the file was made for other data) or a
    different token count (another tokenizer or max_length)."""
    path = saliency_path(saliency_dir, split)
    guids, values, meta = load_saliency(path)
    by_guid = dict(zip(guids, values))
    if len(by_guid) != len(guids):
        raise ValueError(f"{path} has duplicate guids")
    missing = [g for g in dataset.guids if g not in by_guid]
    if missing:
        raise ValueError(
            f"{path} has saliencies for {len(guids)} examples but {len(missing)} of the "
            f"{len(dataset)} {split} examples have none (first: {missing[0]!r}); extract "
            "them for this task and split (same data.max_examples/seed or the full split)")
    targets = [by_guid[g] for g in dataset.guids]
    bad = [i for i, t in enumerate(targets) if len(t) != dataset.lengths[i]]
    if bad:
        i = bad[0]
        raise ValueError(
            f"{path}: {len(bad)} examples have a saliency length different from their token "
            f"count (first: {dataset.guids[i]!r}, {len(targets[i])} vs {dataset.lengths[i]}); "
            f"it was extracted with max_length={meta.get('max_length')} and this run uses "
            f"{dataset.max_length} (or another tokenizer)")
    return dataset.with_token_targets(targets)
