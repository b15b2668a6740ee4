"""The batch every encoder, head and method consumes."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Batch(NamedTuple):
    """A padded batch of token ids.

    input_ids:      int32 [B, T]
    token_type_ids: int32 [B, T] (zeros for single sentences and for RoBERTa/DistilBERT)
    attention_mask: int32 [B, T] (1 real token, 0 padding)
    labels:         int32 [B] for classification, float32 [B] for regression, or None
    token_targets:  float32 [B, T] per-token training targets (0 on padding), or None;
                    AdapLeR's saliencies ride here (see `EncodedDataset.token_targets`)
    """

    input_ids: jnp.ndarray | np.ndarray
    token_type_ids: jnp.ndarray | np.ndarray
    attention_mask: jnp.ndarray | np.ndarray
    labels: jnp.ndarray | np.ndarray | None = None
    token_targets: jnp.ndarray | np.ndarray | None = None


def batch_from_ids(input_ids, attention_mask=None, token_type_ids=None, labels=None) -> Batch:
    """Builds a `Batch` from arrays, filling an all-ones mask and zero token types."""
    input_ids = np.asarray(input_ids, dtype=np.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    if token_type_ids is None:
        token_type_ids = np.zeros_like(input_ids)
    attention_mask = np.asarray(attention_mask, dtype=np.int32)
    token_type_ids = np.asarray(token_type_ids, dtype=np.int32)
    for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if arr.shape != input_ids.shape:
            raise ValueError(
                f"{name} has shape {arr.shape} but input_ids has shape {input_ids.shape}"
            )
    return Batch(input_ids, token_type_ids, attention_mask, labels)
