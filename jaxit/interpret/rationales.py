"""Rationale evaluation of AdapLeR's contribution predictors (seed 002 §5.3, figure 5).

For every example with a human rationale (`jaxit.data.rationales`: ERASER Movies,
HateXplain) the token-dropping runner (`jaxit.inference.token_drop`) records, per CP ℓ
(ℓ = 0 in front of layer 1, ..., L-1 in front of layer L), the scores S̃^ℓ and the tokens
kept for layer ℓ+1. Against the word-level human mask, per layer:

- AP (soft scores): average precision of the words ranked by their CP score. Word score =
  the SUM of its sub-word tokens' scores (seed 002 §5.3: "we sum the scores across tokens
  corresponding to each word"; `reduce="max"` is offered). A token dropped before CP ℓ has
  no representation at that layer, and CP ℓ's softmax runs over the surviving tokens only,
  so by default it scores 0 there (`dropped="zero"`: dropped words rank below every
  surviving word, tied among themselves); `dropped="last"` keeps the last score it had.
- FPR (binary): kept non-rationale words / all non-rationale words, where a word is kept at
  layer ℓ if any of its sub-words runs through layer ℓ+1 (AdapLeR's actual η/n cut,
  cumulative over layers). `fpr_uniform` binarises instead with the paper's uniform level
  S̃ >= 1/n over the tokens present at CP ℓ (§5.3: "the uniform-level threshold (i.e. 1/n)");
  `tpr` is the kept fraction of the rationale words (recall), for the other side.

[CLS]/[SEP] belong to no word and are left out. Words cut off by truncation (`max_length`)
are left out of both metrics. AP is undefined without rationale words and FPR without
other words: such (example, layer) entries are NaN and the per-layer means skip them.

AP follows scikit-learn's `average_precision_score` (no interpolation; tied scores form one
threshold): AP = Σ_k (R_k - R_{k-1}) P_k over the distinct scores in decreasing order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxit.data.rationales import Rationale
from jaxit.data.tokenize import encode_words

DROPPED = ("zero", "last")
REDUCE = ("sum", "max")


# ----------------------------------------------------------------------------- metrics


def average_precision(scores, labels) -> float:
    """AP of ranking `scores` [n] against binary `labels` [n]; NaN when no label is 1."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if not labels.any():
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def false_positive_rate(selected, labels) -> float:
    """Selected non-rationale items / all non-rationale items; NaN when all are rationale."""
    selected = np.asarray(selected).reshape(-1).astype(bool)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if selected.shape != labels.shape:
        raise ValueError(f"selected {selected.shape} and labels {labels.shape} differ in shape")
    neg = ~labels
    return float((selected & neg).sum() / neg.sum()) if neg.any() else float("nan")


def true_positive_rate(selected, labels) -> float:
    """Selected rationale items / all rationale items (recall); NaN without rationale."""
    return false_positive_rate(selected, ~np.asarray(labels).astype(bool))


# ----------------------------------------------------------------------------- tokens -> words


def fill_dropped(token_scores: np.ndarray, dropped: str = "zero") -> np.ndarray:
    """token_scores [L, n] with NaN where a token was dropped before CP ℓ -> no NaN:
    "zero" puts 0 there, "last" the token's last score (CP 0 scores every token)."""
    s = np.array(token_scores, np.float64)
    if s.ndim != 2:
        raise ValueError(f"token scores must be [layers, tokens], got shape {s.shape}")
    if dropped == "zero":
        return np.nan_to_num(s, nan=0.0)
    if dropped == "last":
        if np.isnan(s[0]).any():
            raise ValueError("dropped='last' needs CP 0 to score every token")
        for l in range(1, s.shape[0]):
            s[l] = np.where(np.isnan(s[l]), s[l - 1], s[l])
        return s
    raise ValueError(f"unknown dropped {dropped!r}; choose from {DROPPED}")


def word_scores(token_scores: np.ndarray, word_index: np.ndarray, num_words: int,
                reduce: str = "sum") -> np.ndarray:
    """[L, n] token scores (no NaN) -> [L, num_words] word scores (sum or max over each
    word's sub-words; 0 for words without tokens). word_index [n]: the word of each token,
    -1 for special tokens."""
    s = np.asarray(token_scores, np.float64)
    widx = np.asarray(word_index).reshape(-1)
    if s.shape[-1] != widx.shape[0]:
        raise ValueError(f"{s.shape[-1]} token scores for {widx.shape[0]} word indices")
    if widx.size and widx.max() >= num_words:
        raise ValueError(f"word index {widx.max()} out of range for {num_words} words")
    out = np.zeros((s.shape[0], num_words))
    real = widx >= 0
    if reduce == "sum":
        np.add.at(out.T, widx[real], s[:, real].T)
    elif reduce == "max":
        out[:] = -np.inf
        np.maximum.at(out.T, widx[real], s[:, real].T)
        out[np.isinf(out)] = 0.0
    else:
        raise ValueError(f"unknown reduce {reduce!r}; choose from {REDUCE}")
    return out


def word_any(token_flags: np.ndarray, word_index: np.ndarray, num_words: int) -> np.ndarray:
    """[L, n] bool per token -> [L, num_words] bool: any of the word's sub-words."""
    return word_scores(np.asarray(token_flags, np.float64), word_index, num_words, "max") > 0


def uniform_selected(token_scores: np.ndarray) -> np.ndarray:
    """[L, n] (NaN = not present at CP ℓ) -> [L, n] bool: S̃ >= 1/n_ℓ, n_ℓ = tokens present."""
    s = np.asarray(token_scores, np.float64)
    present = ~np.isnan(s)
    n = np.maximum(present.sum(-1, keepdims=True), 1)
    return present & (np.nan_to_num(s, nan=-1.0) >= 1.0 / n)


# ----------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class ExampleRationaleEval:
    """One example. Per-layer arrays are [L] (NaN where undefined); word arrays cover the
    words that survived truncation (`covered`)."""

    guid: str
    ap: np.ndarray
    fpr: np.ndarray
    fpr_uniform: np.ndarray
    tpr: np.ndarray
    word_scores: np.ndarray  # [L, W]
    word_kept: np.ndarray  # [L, W] bool
    covered: np.ndarray  # [W] bool
    prediction: int | float | None = None


def evaluate_example(token_scores: np.ndarray, token_kept: np.ndarray, word_index: np.ndarray,
                     word_mask: np.ndarray, guid: str = "", dropped: str = "zero",
                     reduce: str = "sum", prediction=None) -> ExampleRationaleEval:
    """Per-layer AP / FPR of one example: token_scores [L, n] (NaN once dropped),
    token_kept [L, n] bool (ran through layer ℓ+1), word_index [n] (-1 special),
    word_mask [W] 0/1 human rationale."""
    word_mask = np.asarray(word_mask).astype(bool)
    widx = np.asarray(word_index).reshape(-1)
    w = word_mask.shape[0]
    covered = np.zeros(w, bool)
    covered[widx[widx >= 0]] = True
    ws = word_scores(fill_dropped(token_scores, dropped), widx, w, reduce)
    wk = word_any(token_kept, widx, w)
    wu = word_any(uniform_selected(token_scores), widx, w)
    y = word_mask[covered]
    L = ws.shape[0]
    ap = np.array([average_precision(ws[l, covered], y) for l in range(L)])
    fpr = np.array([false_positive_rate(wk[l, covered], y) for l in range(L)])
    fpr_u = np.array([false_positive_rate(wu[l, covered], y) for l in range(L)])
    tpr = np.array([true_positive_rate(wk[l, covered], y) for l in range(L)])
    return ExampleRationaleEval(guid, ap, fpr, fpr_u, tpr, ws, wk, covered, prediction)


@dataclasses.dataclass
class RationaleReport:
    """Per-layer means over examples (NaN entries skipped) and the per-example evaluations.
    Layer ℓ = CP ℓ, the CP in front of layer ℓ + 1."""

    map: np.ndarray  # [L] mean AP
    fpr: np.ndarray  # [L]
    fpr_uniform: np.ndarray  # [L]
    tpr: np.ndarray  # [L]
    kept_word_fraction: np.ndarray  # [L] kept words / covered words, over all examples
    num_examples: int
    covered_word_fraction: float  # words inside max_length / all words
    accuracy: float | None  # predictions vs the rationales' gold labels (see evaluate_rationales)
    examples: list[ExampleRationaleEval]
    settings: dict

    def to_dict(self) -> dict:
        return {"mAP": self.map.tolist(), "FPR": self.fpr.tolist(),
                "FPR_uniform": self.fpr_uniform.tolist(), "TPR": self.tpr.tolist(),
                "kept_word_fraction": self.kept_word_fraction.tolist(),
                "num_examples": self.num_examples,
                "covered_word_fraction": self.covered_word_fraction,
                "accuracy": self.accuracy, **self.settings}

    def table(self) -> str:
        """A markdown table, one row per CP layer."""
        header = ("| CP ℓ (before layer) | mAP | FPR (kept) | FPR (S̃ ≥ 1/n) | TPR (kept) "
                  "| kept words |")
        rows = [header, "|---|---|---|---|---|---|"]
        for l in range(self.map.shape[0]):
            rows.append(f"| {l} ({l + 1}) | {self.map[l]:.3f} | {self.fpr[l]:.3f} | "
                        f"{self.fpr_uniform[l]:.3f} | {self.tpr[l]:.3f} | "
                        f"{self.kept_word_fraction[l]:.3f} |")
        return "\n".join(rows)


def summarize(examples: Sequence[ExampleRationaleEval], labels=None,
              settings: dict | None = None) -> RationaleReport:
    """Per-layer means of per-example evaluations."""
    if not examples:
        raise ValueError("no examples to summarize")

    def mean(name):
        a = np.stack([getattr(e, name) for e in examples])
        with np.errstate(invalid="ignore"):
            ok = ~np.isnan(a)
            return np.where(ok.any(0), np.nansum(a, 0) / np.maximum(ok.sum(0), 1), np.nan)

    kept = sum(e.word_kept[:, e.covered].sum(-1) for e in examples)
    covered = sum(int(e.covered.sum()) for e in examples)
    total = sum(e.covered.shape[0] for e in examples)
    acc = None
    if labels is not None:
        preds = [e.prediction for e in examples]
        pairs = [(p, y) for p, y in zip(preds, labels) if p is not None and y is not None]
        acc = float(np.mean([p == y for p, y in pairs])) if pairs else None
    return RationaleReport(mean("ap"), mean("fpr"), mean("fpr_uniform"), mean("tpr"),
                           np.asarray(kept, np.float64) / max(covered, 1), len(examples),
                           covered / max(total, 1), acc, list(examples), dict(settings or {}))


@dataclasses.dataclass
class EncodedRationale:
    """A rationale encoded for the model: token ids, token types, each token's word (-1 for
    specials) and the rationale carried to the tokens."""

    rationale: Rationale
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    word_index: np.ndarray
    token_mask: np.ndarray


def encode_rationales(tokenizer, rationales: Sequence[Rationale], max_length: int
                      ) -> list[EncodedRationale]:
    """`encode_words` on each rationale's words (truncated to `max_length` tokens)."""
    out = []
    for r in rationales:
        ids, tt, widx, tmask = encode_words(tokenizer, r.words, max_length, r.mask)
        out.append(EncodedRationale(r, ids, tt, widx, tmask))
    return out


def evaluate_rationales(runner, encoded: Sequence[EncodedRationale], dropped: str = "zero",
                        reduce: str = "sum", keep_results: bool = False):
    """Runs every encoded rationale through a `TokenDropRunner` (return_scores=True) and
    evaluates it. Returns (RationaleReport, runner results or None).

    `report.accuracy` compares predictions with the rationales' gold label ids: meaningful
    only when the model's label ids mean the same (an SST-2 model on ERASER Movies: 0
    negative, 1 positive; not on HateXplain)."""
    evals, results = [], []
    for e in encoded:
        res = runner.run_one(e.input_ids, e.token_type_ids, return_scores=True)
        evals.append(evaluate_example(res.scores, res.kept, e.word_index, e.rationale.mask,
                                      e.rationale.guid, dropped, reduce, res.prediction))
        if keep_results:
            results.append(res)
    settings = {"dropped": dropped, "reduce": reduce, "eta": runner.eta.tolist()}
    report = summarize(evals, [e.rationale.label for e in encoded], settings)
    return report, (results if keep_results else None)


def plot_rationale_curves(reports: dict, path, title: str = "") -> None:
    """PNG like seed 002 figure 5: mAP and FPR per layer, one line per report (name ->
    `RationaleReport`); FPR solid for the kept set, dashed for the 1/n level (the only one
    for baselines that keep every token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rep in reports.items():
        x = np.arange(rep.map.shape[0])
        ax1.plot(x, rep.map, "o-", ms=3, label=name)
        if rep.settings.get("drops_tokens", True):
            line = ax2.plot(x, rep.fpr, "o-", ms=3, label=f"{name} (kept)")[0]
            ax2.plot(x, rep.fpr_uniform, "s--", ms=3, color=line.get_color(),
                     label=f"{name} (S̃ ≥ 1/n)")
        else:  # a baseline that keeps every token: only its uniform level means anything
            ax2.plot(x, rep.fpr_uniform, "s--", ms=3, label=f"{name} (≥ 1/n)")
    for ax, name in ((ax1, "mAP"), (ax2, "FPR")):
        ax.set_xlabel("CP ℓ (in front of layer ℓ+1)")
        ax.set_ylabel(name)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
