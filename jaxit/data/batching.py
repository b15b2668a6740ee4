"""Padded numpy `Batch`es from an `EncodedDataset`, with length buckets so jit sees few shapes.

Every batch is padded to the smallest bucket that holds its longest example, so a run
compiles at most len(buckets) shapes per batch size. Buckets default to (16, 32, 64, 128)
capped at the dataset's max_length (and always include max_length).

- `iterate_batches`: training order, deterministic from (seed, epoch); optionally sorts by
  length within chunks of batches (less padding, still shuffled).
- `eval_batches`: every example exactly once, fixed batch size; the last batch is filled
  with copies of its last real row and a `valid` mask marks the real rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from jaxit.batch import Batch
from jaxit.data.tokenize import EncodedDataset

DEFAULT_BUCKETS = (16, 32, 64, 128)


def make_buckets(max_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """Sorted bucket lengths: each of `buckets` capped at `max_length`, plus `max_length`."""
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    bad = [b for b in buckets if int(b) <= 0]
    if bad:
        raise ValueError(f"bucket lengths must be positive, got {list(buckets)}")
    return tuple(sorted({min(int(b), max_length) for b in buckets} | {max_length}))


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= `length` (buckets sorted ascending)."""
    for b in buckets:
        if length <= b:
            return int(b)
    raise ValueError(f"an example of {length} tokens is longer than the largest bucket "
                     f"{max(buckets)}: tokenize with max_length <= {max(buckets)} or add a bucket")


def _buckets_for(ds: EncodedDataset, buckets: Sequence[int] | None) -> tuple[int, ...]:
    out = make_buckets(ds.max_length) if buckets is None else tuple(sorted(int(b) for b in buckets))
    if not out:
        raise ValueError("no buckets given")
    if len(ds) and int(ds.lengths.max()) > out[-1]:
        raise ValueError(f"the longest example has {int(ds.lengths.max())} tokens but the "
                         f"largest bucket is {out[-1]}")
    return out


def pad_batch(ds: EncodedDataset, indices: np.ndarray, buckets: Sequence[int],
              pad_id: int = 0) -> Batch:
    """The examples at `indices` as a `Batch` [B, T], T = the bucket of the longest one:
    input_ids padded with `pad_id`, token types 0 and attention mask 0 on padding; the
    dataset's `token_targets` (if any) padded with 0."""
    indices = np.asarray(indices, np.int64)
    length = bucket_length(int(ds.lengths[indices].max()) if len(indices) else 1, buckets)
    b = len(indices)
    ids = np.full((b, length), pad_id, np.int32)
    types = np.zeros((b, length), np.int32)
    mask = np.zeros((b, length), np.int32)
    targets = None if ds.token_targets is None else np.zeros((b, length), np.float32)
    for r, i in enumerate(indices):
        n = ds.lengths[i]
        ids[r, :n] = ds.input_ids[i]
        types[r, :n] = ds.token_type_ids[i]
        mask[r, :n] = 1
        if targets is not None:
            targets[r, :n] = ds.token_targets[i]
    return Batch(ids, types, mask, ds.labels[indices], targets)


def num_batches(n: int, batch_size: int, drop_remainder: bool) -> int:
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batch_indices(n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                  epoch: int = 0, drop_remainder: bool = True,
                  lengths: np.ndarray | None = None, sort_chunk: int = 0) -> list[np.ndarray]:
    """The example indices of each batch of one epoch.

    shuffle:        permute with a generator seeded by (seed, epoch): the same (seed, epoch)
                    always gives the same batches, whatever happened before.
    drop_remainder: leave out the last n % batch_size examples of the order (all batches full).
    sort_chunk:     > 0 with `lengths`: within each run of sort_chunk batches, sort by length
                    before cutting batches, then shuffle those batches' order (if shuffle);
                    a partial last batch stays last.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(n) if shuffle else np.arange(n)
    if drop_remainder:
        order = order[: n - n % batch_size]
    if not sort_chunk or lengths is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * int(sort_chunk)
    out: list[np.ndarray] = []
    for c in range(0, len(order), chunk):
        part = order[c:c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        full = [part[i:i + batch_size] for i in range(0, len(part) - len(part) % batch_size,
                                                      batch_size)]
        if shuffle:
            full = [full[k] for k in rng.permutation(len(full))]
        out.extend(full)
        if len(part) % batch_size:
            out.append(part[len(part) - len(part) % batch_size:])
    return out


def iterate_batches(ds: EncodedDataset, batch_size: int, buckets: Sequence[int] | None = None,
                    shuffle: bool = True, seed: int = 0, epoch: int = 0,
                    drop_remainder: bool = True, pad_id: int = 0,
                    sort_chunk: int = 0) -> Iterator[Batch]:
    """One epoch of `Batch`es ([batch_size, T], T a bucket), deterministic from (seed, epoch).
    With drop_remainder=False the last batch may be smaller (a new shape for jit: use
    `eval_batches` for fixed-shape evaluation). See `batch_indices` for `sort_chunk`."""
    bk = _buckets_for(ds, buckets)
    for idx in batch_indices(len(ds), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                             drop_remainder=drop_remainder, lengths=ds.lengths,
                             sort_chunk=sort_chunk):
        yield pad_batch(ds, idx, bk, pad_id)


def eval_batches(ds: EncodedDataset, batch_size: int, buckets: Sequence[int] | None = None,
                 pad_id: int = 0, sort_by_length: bool = False, return_index: bool = False):
    """Yields (batch, valid) — or (batch, valid, index) with return_index — covering every
    example exactly once, each batch exactly `batch_size` rows.

    valid: bool [B], False on filler rows of the last batch (copies of its last real row, so
           the model sees ordinary inputs; drop them before computing metrics).
    index: int64 [B], the dataset index of each row (-1 on filler rows).
    sort_by_length: visit examples shortest first (less padding); default dataset order.
    """
    bk = _buckets_for(ds, buckets)
    n = len(ds)
    order = np.argsort(ds.lengths, kind="stable") if sort_by_length else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        k = len(idx)
        valid = np.zeros(batch_size, bool)
        valid[:k] = True
        full = np.concatenate([idx, np.full(batch_size - k, idx[-1], idx.dtype)])
        batch = pad_batch(ds, full, bk, pad_id)
        if return_index:
            yield batch, valid, np.where(valid, full, -1).astype(np.int64)
        else:
            yield batch, valid
