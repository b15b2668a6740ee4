"""Reduced inputs for AdapLeR's Table 2 (seed 002 §5.1–5.2): every example keeps only its k
most important words, k = the number of words in its human rationale, chosen by

- "rationale": the human rationale itself (the paper's upper bound);
- "saliency": gradient × input saliency at the embedding layer of a fine-tuned model
  (AdapLeR's phase-2 score), for the class that model predicts (no gold label is read, so
  test inputs are reduced without their labels);
- "attention_all": attention rollout through all layers, the attention each token receives
  from all tokens (PoWER-BERT's accumulation; column mean of the rollout matrix);
- "attention_cls": attention rollout through all layers, [CLS]'s row.

Every strategy chooses among the words the model reads (the first `max_length` tokens'
words), and k counts the rationale's words among them: the human rationale is cut there
too, so each row reduces the same truncated input. Word score = the sum of its sub-words'
scores. The kept words stay in their order. A new model is then fine-tuned and evaluated on
each reduced text (`experiments/real_data/adapler_table2.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxit.data.batching import eval_batches
from jaxit.data.tokenize import EncodedDataset
from jaxit.encoders.transformer import Encoder
from jaxit.interpret.rationale_baselines import layer_baseline_scores
from jaxit.interpret.rationales import EncodedRationale, word_scores

STRATEGIES = ("rationale", "saliency", "attention_all", "attention_cls")
SCORED = STRATEGIES[1:]
SALIENCY_CLASSES = ("predicted", "gold")


def strategy_token_scores(encoder: Encoder, params: dict, batch, pooling: str = "cls",
                          saliency_class: str = "predicted") -> dict[str, jnp.ndarray]:
    """{strategy: [B, T]} token scores of the SCORED strategies (rows sum to 1 over each
    example's tokens); saliency is taken for the model's own predicted class, or with
    saliency_class="gold" for batch.labels (which then reads every input's answer)."""
    if saliency_class not in SALIENCY_CLASSES:
        raise ValueError(f"saliency_class={saliency_class!r}; choose from {SALIENCY_CLASSES}")
    if saliency_class == "gold" and batch.labels is None:
        raise ValueError("saliency_class='gold' needs batch.labels")
    scores = layer_baseline_scores(encoder, params, batch, pooling,
                                   ("saliency", "rollout", "rollout_received"), saliency_class)
    return {"saliency": scores["saliency"][0], "attention_all": scores["rollout_received"][-1],
            "attention_cls": scores["rollout"][-1]}


def topk_words(scores: np.ndarray, k: int, valid: np.ndarray) -> np.ndarray:
    """bool [W]: the k highest-scoring valid words (ties: the earlier word); fewer when fewer
    than k words are valid."""
    s = np.where(np.asarray(valid, bool), np.asarray(scores, np.float64), -np.inf)
    order = np.lexsort((np.arange(s.size), -s))  # by score descending, then position
    keep = np.zeros(s.size, bool)
    chosen = order[:max(int(k), 0)]
    keep[chosen[np.isfinite(s[chosen])]] = True
    return keep


@dataclasses.dataclass(frozen=True)
class ReducedExample:
    """One example's kept words under each strategy.

    guid, label:  the example's.
    num_words:    its word count.
    covered:      words within the model's max_length tokens.
    num_rationale: k, the rationale's words among the covered ones.
    kept:         {strategy: bool [num_words]}.
    """

    guid: str
    label: int
    num_words: int
    num_rationale: int
    covered: int
    kept: dict

    def text(self, words, strategy: str) -> str:
        return " ".join(w for w, keep in zip(words, self.kept[strategy]) if keep)


def reduce_examples(encoder: Encoder, params: dict, encoded: list[EncodedRationale],
                    pooling: str = "cls", batch_size: int = 8,
                    buckets=(128, 256, 384, 512), saliency_class: str = "predicted"
                    ) -> list[ReducedExample]:
    """Scores every encoded rationale (batched by padded length: one compile per bucket)
    and keeps each strategy's top-k words, k = the rationale's word count."""
    fn = jax.jit(lambda p, b: strategy_token_scores(encoder, p, b, pooling, saliency_class))
    ds = EncodedDataset([e.input_ids for e in encoded], [e.token_type_ids for e in encoded],
                        np.array([int(e.rationale.label) for e in encoded], np.int32),
                        [e.rationale.guid for e in encoded],
                        max(e.input_ids.size for e in encoded))
    longest = int(ds.lengths.max())
    bk = tuple(buckets) if longest <= max(buckets) else (*buckets, longest)
    token_scores: dict[int, dict] = {}
    for batch, valid, index in eval_batches(ds, batch_size, bk, sort_by_length=True,
                                            return_index=True):
        out = jax.device_get(fn(params, batch))
        for row in np.flatnonzero(valid):
            i = int(index[row])
            token_scores[i] = {k: np.asarray(v[row, :ds.lengths[i]]) for k, v in out.items()}
    result = []
    for i, e in enumerate(encoded):
        r = e.rationale
        w = len(r.words)
        valid = np.zeros(w, bool)
        valid[e.word_index[e.word_index >= 0]] = True
        rationale = np.asarray(r.mask, bool) & valid
        k = int(rationale.sum())
        kept = {"rationale": rationale}
        for name in SCORED:
            ws = word_scores(token_scores[i][name][None], e.word_index, w)[0]
            kept[name] = topk_words(ws, k, valid)
        result.append(ReducedExample(r.guid, int(r.label), w, k, int(valid.sum()), kept))
    return result
