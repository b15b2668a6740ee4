"""Random token rows for tests that need a batch of varied lengths and no real text."""

import numpy as np

from jaxit.batch import batch_from_ids


def random_batch(n, max_len, min_len=3, seed=0, vocab=100, num_classes=3, regression=False,
                 pairs=False, first_token=1, labels=True, saliency=False):
    """`n` rows of `min_len`..`max_len` random tokens in [5, vocab), zero-padded to `max_len`.

    Position 0 holds `first_token` (None: a random token too). `pairs` marks each row's
    second half as segment 1. Labels are classes in [0, num_classes), or uniform in [0, 5)
    for `regression`; `saliency` adds random per-token targets in (0, 1] (AdapLeR's)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, max_len), np.int32)
    tt = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), np.int32)
    for i, k in enumerate(rng.integers(min_len, max_len + 1, n)):
        ids[i, :k] = rng.integers(5, vocab, k)
        if first_token is not None:
            ids[i, 0] = first_token
        mask[i, :k] = 1
        if pairs:
            tt[i, k // 2:k] = 1
    if not labels:
        return batch_from_ids(ids, mask)
    y = (rng.uniform(0, 5, n).astype(np.float32) if regression
         else rng.integers(0, num_classes, n).astype(np.int32))
    b = batch_from_ids(ids, mask, tt, y)
    if saliency:
        b = b._replace(token_targets=(rng.uniform(0.01, 1.0, ids.shape) * mask).astype(np.float32))
    return b
