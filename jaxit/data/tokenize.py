"""Tokenizing `Example`s into an `EncodedDataset` (ragged token ids + labels).

Truncation is the `tokenizers` "longest_first" strategy at `max_length` (special tokens
included), which is exactly what `transformers.AutoTokenizer(..., truncation=True,
max_length=...)` does with a fast tokenizer: for pairs, tokens come off the end of the
longer sequence first. The caller's tokenizer is not modified (a copy is configured).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from jaxit.data.example import Example
from jaxit.data.tasks import TaskSpec, get_task


@dataclasses.dataclass
class EncodedDataset:
    """Tokenized examples, unpadded.

    input_ids:      list of N int32 arrays [n_i] ([CLS] ... [SEP] ... [SEP]), n_i <= max_length.
    token_type_ids: list of N int32 arrays [n_i] (0 first segment, 1 second).
    labels:         [N] int32 class ids (-1 = unlabeled) or float32 (NaN = unlabeled).
    guids:          N example ids.
    max_length:     the truncation length used.
    is_regression:  whether labels are floats.
    difficulty:     [N] int32 (synthetic task; -1 where unknown) or None.
    truncated:      [N] bool, whether the example was cut to max_length (None: unknown).
    token_targets:  list of N float32 arrays [n_i] (per-token training targets, e.g.
                    AdapLeR's saliencies; `attach_token_targets`) or None.
    lengths:        [N] int32 token counts (computed).
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray
    guids: list[str]
    max_length: int
    is_regression: bool = False
    difficulty: np.ndarray | None = None
    truncated: np.ndarray | None = None
    token_targets: list[np.ndarray] | None = None
    lengths: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self):
        n = len(self.input_ids)
        if not (len(self.token_type_ids) == len(self.labels) == len(self.guids) == n):
            raise ValueError("input_ids, token_type_ids, labels and guids must have the same "
                             f"length, got {len(self.input_ids)}, {len(self.token_type_ids)}, "
                             f"{len(self.labels)}, {len(self.guids)}")
        self.lengths = np.fromiter((len(x) for x in self.input_ids), np.int32, count=n)
        if self.token_targets is not None:
            if len(self.token_targets) != n:
                raise ValueError(f"token_targets has {len(self.token_targets)} rows for {n} "
                                 "examples")
            bad = [i for i, t in enumerate(self.token_targets) if len(t) != self.lengths[i]]
            if bad:
                i = bad[0]
                raise ValueError(f"token_targets of {len(bad)} example(s) do not match their "
                                 f"token counts (first: {self.guids[i]!r} has "
                                 f"{len(self.token_targets[i])} targets for {self.lengths[i]} "
                                 "tokens)")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_truncated(self) -> int:
        return 0 if self.truncated is None else int(self.truncated.sum())

    def select(self, indices: Sequence[int] | np.ndarray) -> EncodedDataset:
        """The examples at `indices`, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return EncodedDataset(
            [self.input_ids[i] for i in idx], [self.token_type_ids[i] for i in idx],
            self.labels[idx], [self.guids[i] for i in idx], self.max_length, self.is_regression,
            None if self.difficulty is None else self.difficulty[idx],
            None if self.truncated is None else self.truncated[idx],
            None if self.token_targets is None else [self.token_targets[i] for i in idx])

    def with_token_targets(self, targets: Sequence[np.ndarray]) -> EncodedDataset:
        """A copy with per-token targets (one float32 array per example, its token count)."""
        return dataclasses.replace(self, token_targets=[np.asarray(t, np.float32)
                                                        for t in targets])


def _truncating_copy(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first", direction="right")
    return tok


def tokenize_examples(tokenizer: Tokenizer, task: str | TaskSpec | None,
                      examples: Sequence[Example], max_length: int = 128, *,
                      chunk_size: int = 2048) -> EncodedDataset:
    """Encodes `examples` (single texts or pairs, with the tokenizer's special tokens and
    token types), truncated longest-first to `max_length` tokens. `task` decides the label
    dtype (regression: float32, else int32); None infers it from the labels."""
    if task is not None:
        task = get_task(task)
        is_reg = task.is_regression
    else:
        is_reg = any(isinstance(e.label, float) for e in examples)
    pairs = [e.text_b is not None for e in examples]
    if any(pairs) and not all(pairs):
        raise ValueError("examples mix single texts and pairs")
    is_pair = bool(pairs and pairs[0])
    need = tokenizer.num_special_tokens_to_add(is_pair) + (2 if is_pair else 1)
    if max_length < need:
        raise ValueError(f"max_length {max_length} is too short: {'pairs' if is_pair else 'texts'}"
                         f" need the special tokens plus at least one token per text ({need})")
    tok = _truncating_copy(tokenizer, max_length)
    ids, types, truncated = [], [], []
    for start in range(0, len(examples), chunk_size):
        chunk = examples[start:start + chunk_size]
        inputs = [(e.text_a, e.text_b) if is_pair else e.text_a for e in chunk]
        for enc in tok.encode_batch(inputs, add_special_tokens=True):
            ids.append(np.asarray(enc.ids, np.int32))
            types.append(np.asarray(enc.type_ids, np.int32))
            truncated.append(bool(enc.overflowing))
    if is_reg:
        labels = np.array([np.nan if e.label is None else e.label for e in examples], np.float32)
    else:
        labels = np.array([-1 if e.label is None else e.label for e in examples], np.int32)
    diff = None
    if any(e.difficulty is not None for e in examples):
        diff = np.array([-1 if e.difficulty is None else e.difficulty for e in examples],
                        np.int32)
    return EncodedDataset(ids, types, labels.reshape(-1), [e.guid for e in examples],
                          max_length, is_reg, diff, np.array(truncated, bool))


def encode_words(tokenizer: Tokenizer, words: Sequence[str], max_length: int = 128,
                 word_mask: Sequence[int] | np.ndarray | None = None):
    """Encodes a pre-split text (e.g. `Rationale.words`) and carries a word-level mask to its
    tokens: returns (input_ids int32 [n], token_type_ids int32 [n], word_index int32 [n]
    (-1 on special tokens), token_mask uint8 [n] (the word's mask value; 0 on special
    tokens; all 0 if `word_mask` is None)). Truncated to `max_length`.

    With BERT WordPiece tokenizers the ids equal those of encoding " ".join(words)."""
    tok = _truncating_copy(tokenizer, max_length)
    enc = tok.encode(list(words), is_pretokenized=True, add_special_tokens=True)
    widx = np.array([-1 if w is None else w for w in enc.word_ids], np.int32)
    tmask = np.zeros(len(widx), np.uint8)
    if word_mask is not None:
        wm = np.asarray(word_mask, np.uint8)
        if len(wm) != len(words):
            raise ValueError(f"word_mask has {len(wm)} entries for {len(words)} words")
        tmask[widx >= 0] = wm[widx[widx >= 0]]
    return (np.asarray(enc.ids, np.int32), np.asarray(enc.type_ids, np.int32), widx, tmask)
