"""What every runner shares about inputs: length buckets, padding one example to its bucket,
and examples as (input_ids [n], token_type_ids [n]) pairs of real tokens from a batch, a
tokenized data set or a task's local split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxit.batch import Batch

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def examples_from_batch(batch: Batch):
    """Yields (input_ids, token_type_ids) of each row's real tokens (attention mask 1)."""
    ids = np.asarray(batch.input_ids)
    tt = np.asarray(batch.token_type_ids)
    mask = np.asarray(batch.attention_mask).astype(bool)
    for i in range(ids.shape[0]):
        if mask[i].any():
            yield ids[i][mask[i]], tt[i][mask[i]]


def batch_from_examples(examples, pad_id: int, length: int) -> Batch:
    """(input_ids, token_type_ids) pairs of real tokens -> one padded `Batch` [N, length]
    (the inverse of `examples_from_batch`; no labels)."""
    n = len(examples)
    ids = np.full((n, length), pad_id, np.int32)
    tt = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    for i, (tok, types) in enumerate(examples):
        if tok.size > length:
            raise ValueError(f"example {i} has {tok.size} tokens, more than length {length}")
        ids[i, :tok.size], mask[i, :tok.size] = tok, 1
        if types is not None:
            tt[i, :tok.size] = types
    return Batch(ids, tt, mask, None)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest of the sorted `buckets` that holds `n` tokens."""
    for b in buckets:
        if n <= b:
            return b
    raise ValueError(f"{n} tokens exceed the largest length bucket {buckets[-1]}")


def pad_to_bucket(input_ids, token_type_ids, buckets: Sequence[int], pad_id: int):
    """One example's real tokens [n] -> (ids, token types, mask), int32 numpy arrays
    [1, bucket], padded with `pad_id` up to the smallest bucket that holds them."""
    input_ids = np.asarray(input_ids, np.int32).reshape(-1)
    n = input_ids.shape[0]
    if n == 0:
        raise ValueError("empty input: at least [CLS] is needed")
    t = bucket_for(n, buckets)
    ids = np.full((1, t), pad_id, np.int32)
    tt = np.zeros((1, t), np.int32)
    mask = np.zeros((1, t), np.int32)
    ids[0, :n] = input_ids
    if token_type_ids is not None:
        tt[0, :n] = np.asarray(token_type_ids, np.int32).reshape(-1)
    mask[0, :n] = 1
    return ids, tt, mask


def load_runner_examples(tokenizer, task: str = "sst2", split: str = "dev",
                         max_length: int = 128, limit: int = 0, data_dir=None):
    """A task split from the local data (`jaxit.data.load_examples`), tokenized, as the
    runners' (input_ids [n], token_type_ids [n]) pairs, and the labels [N]."""
    from jaxit.data import load_examples, tokenize_examples

    ds = tokenize_examples(tokenizer, task, load_examples(task, split, data_dir=data_dir),
                           max_length=max_length)
    return examples_from_dataset(ds, limit)


def examples_from_dataset(ds, limit: int = 0):
    """(examples, labels) of an `EncodedDataset` (`jaxit.data.tokenize_examples`) for the
    batch-1 runners: a list of (input_ids [n], token_type_ids [n]) and labels [N]; the first
    `limit` only when > 0."""
    n = len(ds.input_ids) if limit <= 0 else min(int(limit), len(ds.input_ids))
    return list(zip(ds.input_ids[:n], ds.token_type_ids[:n])), np.asarray(ds.labels[:n])
